//! The single writer: one thread owns the one connection that writes, and
//! commits every write request waiting at that moment in one transaction
//! (group commit).
//!
//! Why: with WAL and `synchronous=FULL` every commit is an fsync, and one
//! fsync per HTTP request caps the server at a few hundred writes per second.
//! One transaction holding many requests costs one fsync. Each request runs
//! inside its own SAVEPOINT (or, for a repeatable one, without, and again in
//! its own if one of them fails: see [`run_batch`]), so a request that fails
//! rolls back alone, and each caller is answered only after the commit that
//! holds its rows is durable (or has failed, in which case every caller of
//! the batch gets the error and nothing of the batch is kept).
//!
//! Checkpoints (copying the WAL back into the database file) run on a
//! separate thread with its own connection, woken after commits, so the
//! writer does not stall on them; the writer's own automatic checkpoint is
//! kept, at a higher threshold, as the backstop that lets the WAL restart
//! from its beginning under continuous load.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::{Conn, Location, StoreError};

/// A caller's write waiting for its batch: runs the caller's SQL on the
/// writer's connection (or gets why it cannot run), keeps the outcome, and
/// answers the caller once the batch's commit is decided.
trait Job: Send {
    /// Whether the job's only effects are its SQL, so it may run again
    /// after its first run was rolled back (see [`run_batch`]).
    fn repeatable(&self) -> bool;
    /// Run (again, if repeatable): says whether it succeeded (else its
    /// savepoint is rolled back).
    fn run(&mut self, conn: Result<&Conn, StoreError>) -> Ran;
    /// Answer the caller: the job's outcome if the batch committed, else
    /// the commit's error.
    fn answer(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Pending<T, F> {
    f: F,
    repeatable: bool,
    outcome: Option<Result<T, StoreError>>,
    caller: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnMut(&Conn) -> Result<T, StoreError> + Send,
{
    fn repeatable(&self) -> bool {
        self.repeatable
    }

    fn run(&mut self, conn: Result<&Conn, StoreError>) -> Ran {
        let outcome = match conn {
            Ok(conn) => catch_unwind(AssertUnwindSafe(|| (self.f)(conn)))
                .unwrap_or_else(|_| Err(StoreError::Internal("write job panicked".into()))),
            Err(e) => Err(e),
        };
        let ran = match &outcome {
            Ok(_) => Ran::Ok,
            Err(e) if e.is_unavailable() => Ran::Unavailable,
            Err(_) => Ran::Failed,
        };
        self.outcome = Some(outcome);
        ran
    }

    fn answer(self: Box<Self>, commit: Result<(), StoreError>) {
        let result = match commit {
            Ok(()) => self
                .outcome
                .unwrap_or_else(|| Err(StoreError::Internal("write job never ran".into()))),
            Err(e) => Err(e),
        };
        let _ = self.caller.send(result);
    }
}

/// How a job's own SQL went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ran {
    Ok,
    Failed,
    /// Failed because the database cannot take writes (a read-only
    /// PostgreSQL session, a full disk): the batch commits, but `/readyz`
    /// must hear of it, as it hears of a batch SQLite refused.
    Unavailable,
}

/// Most jobs in one transaction; bounds latency of the first job in a batch.
const MAX_BATCH: usize = 2048;
/// PostgreSQL's bound: past 64 subtransactions (one per job's savepoint)
/// in one transaction, every concurrent snapshot gets slower.
const MAX_BATCH_POSTGRES: usize = 64;
/// The advisory lock a PostgreSQL batch takes first: writers of every node
/// and CLI take turns, as SQLite's `BEGIN IMMEDIATE` makes them, so a job's
/// read-then-write (an idempotency key, an account's status before an event)
/// sees no other writer's change between its read and its write.
const WRITE_LOCK: i64 = 0x0077_6861_7461_6e77;
/// The writer checkpoints itself only past this many WAL pages (about 40
/// MB); below it the checkpoint thread does the copying.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 10_000;
/// The checkpoint thread runs at most this often.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    health: Arc<WriterHealth>,
}

/// When the writer last committed and last failed a batch (wall-clock
/// milliseconds, 0 for never), for `/readyz`.
#[derive(Debug, Default)]
struct WriterHealth {
    last_commit_ms: AtomicI64,
    last_failure_ms: AtomicI64,
}

impl WriterHealth {
    fn record(&self, outcome: &Result<(), StoreError>) {
        let slot = match outcome {
            Ok(()) => &self.last_commit_ms,
            Err(_) => &self.last_failure_ms,
        };
        slot.store(crate::clock::now_ms(), Ordering::Relaxed);
    }
}

impl Writer {
    /// Start the writer thread over `conn` (already migrated); a lost
    /// PostgreSQL connection is opened again at `location`.
    pub fn start(conn: Conn, location: Arc<Location>) -> Writer {
        let (jobs, receiver) = mpsc::channel::<Box<dyn Job>>();
        let health = Arc::new(WriterHealth::default());
        let recorder = health.clone();
        std::thread::Builder::new()
            .name("whatan-writer".into())
            .spawn(move || run(conn, &location, receiver, &recorder))
            .expect("spawn writer thread");
        Writer { jobs, health }
    }

    /// When the last batch committed, if one has (wall-clock milliseconds).
    pub fn last_commit_ms(&self) -> Option<i64> {
        Some(self.health.last_commit_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// When the last batch failed, if one has (wall-clock milliseconds).
    pub fn last_failure_ms(&self) -> Option<i64> {
        Some(self.health.last_failure_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    fn submit<T, F>(
        &self,
        f: F,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<T, StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let mut f = Some(f);
        self.queue(false, move |conn: &Conn| match f.take() {
            Some(f) => f(conn),
            None => Err(StoreError::Internal("a write job ran twice".into())),
        })
    }

    fn queue<T, F>(
        &self,
        repeatable: bool,
        f: F,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<T, StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let (caller, rx) = tokio::sync::oneshot::channel();
        let job: Box<dyn Job> = Box::new(Pending {
            f,
            repeatable,
            outcome: None,
            caller,
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Run `f` in the next group commit; resolves after the commit is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f)?.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Writer::write`] for a job whose only effects are its SQL, so that
    /// it may run a second time after its first run was rolled back: it runs
    /// at the head of its batch without a savepoint of its own (a savepoint
    /// copies every page the job touches into its journal first).
    pub async fn write_repeatable<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue(true, f)?.await.map_err(|_| StoreError::Closed)?
    }

    /// Blocking form of [`Writer::write`], for the CLI and other non-async callers.
    pub fn write_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f)?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }
}

/// A transaction-control statement: on SQLite prepared once per
/// connection rather than parsed again for every job; PostgreSQL takes it
/// as a simple query (one round trip either way).
fn control(conn: &Conn, sql: &str) -> super::db::Result<()> {
    match conn {
        Conn::Sqlite(_) => conn.prepare_cached(sql)?.execute(()).map(|_| ()),
        Conn::Pg(_) => conn.execute_batch(sql),
    }
}

/// Opens a batch's transaction holding the database's write turn: SQLite's
/// `BEGIN IMMEDIATE` takes the write lock at once; on PostgreSQL the batch
/// takes [`WRITE_LOCK`] in the same round trip.
fn begin(conn: &Conn) -> super::db::Result<()> {
    match conn {
        Conn::Sqlite(_) => control(conn, "BEGIN IMMEDIATE"),
        Conn::Pg(_) => control(
            conn,
            &format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"),
        ),
    }
}

/// Start the checkpoint thread for the database `conn` writes to; `None`
/// for an in-memory database.
fn start_checkpointer(conn: &Conn) -> Option<mpsc::SyncSender<()>> {
    let path = PathBuf::from(conn.sqlite()?.path().filter(|p| !p.is_empty())?);
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("whatan-checkpoint".into())
        .spawn(move || {
            let mut conn: Option<Conn> = None;
            // Ends when the writer thread ends (the sender is dropped).
            while woken.recv().is_ok() {
                if conn.is_none() {
                    conn = super::open_connection(&path)
                        .map_err(|e| tracing::warn!(error = %e, "checkpoint connection failed"))
                        .ok();
                }
                if let Some(c) = conn.as_ref().and_then(Conn::sqlite) {
                    // PASSIVE: copies what it can, never waits for the
                    // writer or readers, never blocks them.
                    if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |_| Ok(())) {
                        tracing::warn!(error = %e, "background checkpoint failed");
                    }
                }
                std::thread::sleep(CHECKPOINT_INTERVAL);
            }
        })
        .ok()?;
    Some(wake)
}

fn run(
    mut conn: Conn,
    location: &Location,
    receiver: mpsc::Receiver<Box<dyn Job>>,
    health: &WriterHealth,
) {
    let checkpointer = start_checkpointer(&conn);
    if let Some(sqlite) = conn.sqlite() {
        if checkpointer.is_some() {
            if let Err(e) =
                sqlite.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            {
                tracing::warn!(error = %e, "writer: could not raise wal_autocheckpoint");
            }
        }
        // Savepoint journals of a batch stay in memory instead of a temp file.
        if let Err(e) = sqlite.execute_batch("PRAGMA temp_store = MEMORY") {
            tracing::warn!(error = %e, "writer: could not set temp_store");
        }
    }
    let max_batch = match conn.engine() {
        super::Engine::Sqlite => MAX_BATCH,
        super::Engine::Postgres => MAX_BATCH_POSTGRES,
    };
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(64);
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (started, writes) = (std::time::Instant::now(), batch.len());
        if conn.is_broken() {
            // PostgreSQL went away (restart, failover): a new connection,
            // or the batch is answered with why there is none.
            match location.connect() {
                Ok(c) => conn = c,
                Err(e) => {
                    let error = StoreError::from(e);
                    tracing::error!(error = %error, "writer: cannot reconnect to the database");
                    health.record(&Err(error.clone()));
                    answer_all(batch.drain(..), &Err(error));
                    continue;
                }
            }
        }
        run_batch(&conn, &mut batch, health);
        crate::metrics::store_commit(started.elapsed(), writes);
        if let Some(wake) = &checkpointer {
            // Full means a wake-up is already pending: nothing to add.
            let _ = wake.try_send(());
        }
    }
}

/// One group commit: every job inside one transaction, then one COMMIT,
/// then every caller answered with what is durable.
///
/// Repeatable jobs run first, one after the other, with no savepoint of
/// their own. If one of them fails (or the database ends the transaction),
/// the transaction is rolled back, begun again, and they all run again,
/// each in its own savepoint as the other jobs always do: a request that
/// fails rolls back alone. The cheap way is the usual one, since a send's
/// write fails only on a rule another writer broke first or an I/O error.
///
/// SQLite may end the transaction by itself (SQLITE_FULL, IOERR, BUSY,
/// NOMEM roll it back). Jobs after that point would run in autocommit mode,
/// each SAVEPOINT/RELEASE committing on its own while the final COMMIT fails,
/// so callers would be told "failed" about rows that are durable. Hence the
/// check after every job: once the transaction is gone, the batch is broken
/// and every caller is answered with the error (the work of the jobs that
/// ran went with the rollback; the rest do not run). A failed SAVEPOINT or
/// ROLLBACK TO breaks the batch the same way: the state of the transaction
/// is then unknown.
///
/// The outcome is recorded in `health` before any caller is answered, so a
/// caller that saw the answer and asks `/readyz` next sees it too.
fn run_batch(conn: &Conn, batch: &mut Vec<Box<dyn Job>>, health: &WriterHealth) {
    let broke = |error: StoreError, batch: &mut Vec<Box<dyn Job>>| {
        tracing::error!(error = %error, "writer: BEGIN failed; answering the batch with an error");
        // What it may have left open (on PostgreSQL, the advisory lock's
        // statement failing inside the transaction): the next batch begins
        // afresh.
        roll_back_if_open(conn);
        let outcome = Err(error);
        health.record(&outcome);
        answer_all(batch.drain(..), &outcome);
    };
    if let Err(e) = begin(conn) {
        return broke(e.into(), batch);
    }
    // Stable: the order of arrival holds within each kind.
    batch.sort_by_key(|job| !job.repeatable());
    let repeatable = batch.iter().take_while(|job| job.repeatable()).count();
    let unguarded_ok = batch[..repeatable]
        .iter_mut()
        .all(|job| job.run(Ok(conn)) == Ran::Ok && !conn.is_autocommit());
    // The jobs from here on run in savepoints: all of them after a failure.
    let guarded = if unguarded_ok {
        repeatable
    } else {
        roll_back_if_open(conn);
        if let Err(e) = begin(conn) {
            return broke(e.into(), batch);
        }
        0
    };
    let (broken, refused) = run_guarded(conn, &mut batch[guarded..]);
    let outcome = match broken {
        Some(error) => {
            tracing::error!(error = %error, "writer: the batch broke; nothing of it is kept");
            Err(error)
        }
        None => control(conn, "COMMIT").map_err(StoreError::from),
    };
    if outcome.is_err() {
        roll_back_if_open(conn);
    }
    health.record(&outcome);
    if refused && outcome.is_ok() {
        health.record(&Err(StoreError::Unavailable("a write was refused".into())));
    }
    answer_all(batch.drain(..), &outcome);
}

/// Runs each job in its own savepoint, in order. Returns why the batch
/// broke, if it did (the jobs after that point do not run), and whether a
/// job was refused because the database cannot take writes.
fn run_guarded(conn: &Conn, jobs: &mut [Box<dyn Job>]) -> (Option<StoreError>, bool) {
    let mut refused = false;
    for job in jobs {
        if let Err(e) = control(conn, "SAVEPOINT job") {
            return (Some(e.into()), refused);
        }
        let ran = job.run(Ok(conn));
        refused |= ran == Ran::Unavailable;
        if conn.is_autocommit() {
            let error = StoreError::Unavailable(
                "the database ended the write transaction by itself (disk full, I/O error or out of memory)".into(),
            );
            return (Some(error), refused);
        }
        if ran != Ran::Ok {
            if let Err(e) = control(conn, "ROLLBACK TO job") {
                return (Some(e.into()), refused);
            }
        }
        if let Err(e) = control(conn, "RELEASE job") {
            return (Some(e.into()), refused);
        }
    }
    (None, refused)
}

/// Ends the transaction if the database has not ended it already.
fn roll_back_if_open(conn: &Conn) {
    if !conn.is_autocommit() {
        let _ = control(conn, "ROLLBACK");
    }
}

/// Answers every caller of `jobs` with the batch's `outcome`.
fn answer_all(jobs: impl Iterator<Item = Box<dyn Job>>, outcome: &Result<(), StoreError>) {
    for job in jobs {
        job.answer(outcome.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_exists(path: &std::path::Path, name: &str) -> bool {
        let conn = super::super::open_connection(path).unwrap();
        conn.query_row("SELECT count(*) FROM t WHERE name = ?1", [name], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
            > 0
    }

    /// Holds a writer inside a batch of its own: the jobs queued before
    /// [`Gate::open`] share the next batch.
    struct Gate {
        release: mpsc::Sender<()>,
        held: tokio::sync::oneshot::Receiver<Result<(), StoreError>>,
    }

    impl Gate {
        fn open(self) {
            self.release.send(()).unwrap();
            self.held.blocking_recv().unwrap().unwrap();
        }
    }

    /// A writer over a new file made by `schema`, held by the gate.
    fn held_writer(schema: &str) -> (tempfile::TempDir, PathBuf, Writer, Gate) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = super::super::open_connection(&path).unwrap();
        conn.execute_batch(schema).unwrap();
        let writer = Writer::start(conn, Arc::new(Location::File(path.clone())));
        let (release, wait) = mpsc::channel::<()>();
        let (started, has_started) = mpsc::channel::<()>();
        let held = writer
            .submit(move |_| {
                started.send(()).unwrap();
                wait.recv().unwrap();
                Ok(())
            })
            .unwrap();
        has_started.recv().unwrap();
        (dir, path, writer, Gate { release, held })
    }

    #[test]
    fn every_answer_matches_what_is_durable_when_sqlite_ends_the_transaction() {
        let (_dir, path, writer, gate) = held_writer("CREATE TABLE t (name TEXT)");
        let insert = |name: &'static str| {
            writer
                .submit(move |c| {
                    c.execute("INSERT INTO t (name) VALUES (?1)", [name])?;
                    Ok(())
                })
                .unwrap()
        };
        let before = insert("before");
        // What SQLite does by itself on SQLITE_FULL or an I/O error.
        let abort = writer
            .submit(|c| {
                c.execute_batch("ROLLBACK")?;
                Ok(())
            })
            .unwrap();
        let after = insert("after");
        gate.open();

        assert!(abort.blocking_recv().unwrap().is_err());
        for (name, answer) in [
            ("before", before.blocking_recv().unwrap()),
            ("after", after.blocking_recv().unwrap()),
        ] {
            assert_eq!(
                answer.is_ok(),
                row_exists(&path, name),
                "the answer to {name:?} ({answer:?}) must match whether its row is durable"
            );
        }
        // The writer goes on with the next batch.
        writer
            .write_blocking(|c| {
                c.execute("INSERT INTO t (name) VALUES ('later')", ())?;
                Ok(())
            })
            .unwrap();
        assert!(row_exists(&path, "later"));
    }

    #[test]
    fn a_failing_repeatable_job_rolls_back_alone_and_the_others_run_again() {
        use std::sync::atomic::AtomicUsize;
        let (_dir, path, writer, gate) = held_writer(
            "CREATE TABLE t (name TEXT UNIQUE); INSERT INTO t (name) VALUES ('taken');",
        );
        let runs = Arc::new(AtomicUsize::new(0));
        let insert = |names: &'static [&'static str]| {
            let runs = runs.clone();
            writer
                .queue(true, move |c: &Conn| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    for name in names {
                        c.execute("INSERT INTO t (name) VALUES (?1)", [name])?;
                    }
                    Ok(())
                })
                .unwrap()
        };
        let first = insert(&["a1", "a2"]);
        // Writes one row, then breaks a rule: nothing of it may stay.
        let failing = insert(&["half", "taken"]);
        let last = insert(&["c"]);
        let once = writer
            .submit(|c| {
                c.execute("INSERT INTO t (name) VALUES ('once')", ())?;
                Ok(())
            })
            .unwrap();
        gate.open();

        assert!(first.blocking_recv().unwrap().is_ok());
        assert!(failing.blocking_recv().unwrap().is_err());
        assert!(last.blocking_recv().unwrap().is_ok());
        assert!(once.blocking_recv().unwrap().is_ok());
        for (name, kept) in [
            ("a1", true),
            ("a2", true),
            ("half", false),
            ("c", true),
            ("once", true),
        ] {
            assert_eq!(row_exists(&path, name), kept, "row {name:?}");
        }
        // The first try stopped at the failing job (two runs), then all
        // three ran again, each in a savepoint.
        assert_eq!(runs.load(Ordering::SeqCst), 5);

        // Without a failure, each repeatable job runs once.
        let before = runs.load(Ordering::SeqCst);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let runs_in = runs.clone();
        rt.block_on(writer.write_repeatable(move |c: &Conn| {
            runs_in.fetch_add(1, Ordering::SeqCst);
            c.execute("INSERT INTO t (name) VALUES ('alone')", ())?;
            Ok(())
        }))
        .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), before + 1);
        assert!(row_exists(&path, "alone"));
    }
}
