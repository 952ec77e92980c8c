//! The store: workspaces, users, accounts, tokens, send attempts,
//! idempotency records and counters, in the embedded SQLite file (the
//! default) or in PostgreSQL (`[database] url`, several nodes).
//!
//! Repository functions are plain functions over a [`Conn`] (`db.rs`, the
//! seam between the two engines) with inline SQL, written once for both;
//! "not found" is `Ok(None)`. Reads, async or blocking (CLI), run on a few
//! dedicated reader threads (see [`Readers`]); every write goes through the
//! single group-committing [`Writer`]. Nothing here knows about HTTP.

pub mod admin;
pub mod attempts;
pub mod backup;
pub mod copy;
pub mod dashboard;
pub mod db;
pub mod files;
pub mod gauges;
pub mod leases;
pub mod listing;
pub mod lock;
pub mod outbox;
pub mod pg_url;
pub mod postgres;
pub mod retention;
mod types;
pub mod web_sessions;
pub mod webhooks;
mod writer;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;

pub use db::{Conn, Engine};
pub use writer::Writer;

/// The schema, as ordered migrations (see the header of `schema.sql`).
const SCHEMA: &str = include_str!("../../schema.sql");

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Threads (each with its own connection) that run [`Store::read`].
const READER_THREADS: usize = 4;

#[derive(Debug, Clone)]
pub enum StoreError {
    Db(Arc<db::Error>),
    Pool(String),
    /// A named thing does not exist ("unknown user usr_...").
    NotFound(String),
    /// A uniqueness or state rule refused the write ("phone already used").
    Conflict(String),
    /// Input the store refuses ("user belongs to another workspace").
    Invalid(String),
    Internal(String),
    /// The database cannot take writes right now (disk full, not writable,
    /// locked by another program, I/O error, PostgreSQL unreachable):
    /// nothing was stored; a retry later may succeed. The API answers 503
    /// `service_unavailable`.
    Unavailable(String),
    /// The account's lease moved to another node (a larger fence): this
    /// node may no longer write its hand-offs.
    Fenced(String),
    Closed,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Db(e) => write!(f, "database error: {e}"),
            StoreError::Pool(e) => write!(f, "database pool error: {e}"),
            StoreError::NotFound(m) | StoreError::Conflict(m) | StoreError::Invalid(m) => {
                f.write_str(m)
            }
            StoreError::Internal(m) => write!(f, "internal store error: {m}"),
            StoreError::Unavailable(m) => write!(f, "database unavailable: {m}"),
            StoreError::Fenced(m) => f.write_str(m),
            StoreError::Closed => f.write_str("the database writer has stopped"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<db::Error> for StoreError {
    fn from(e: db::Error) -> Self {
        if e.is_unavailable() {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Db(Arc::new(e))
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        db::Error::from(e).into()
    }
}

impl StoreError {
    /// Whether the error says "cannot write now" rather than "this request
    /// is wrong": a caller answers 503 and retries later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Pool(e.to_string())
    }
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded SQLite file.
    File(PathBuf),
    /// A PostgreSQL database, by its `postgres://` URL.
    Postgres(String),
}

/// Handle to the database: cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// SQLite connections for tests and diagnostics ([`Store::pooled`]).
    pool: Option<r2d2::Pool<SqliteConnectionManager>>,
    readers: Readers,
    writer: Writer,
    location: Arc<Location>,
}

/// Applied to every SQLite connection, pooled or the writer's.
pub fn apply_pragmas(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// How much of the database file a reader thread's connection maps into
/// memory: its reads then copy no page out of the OS's cache into SQLite's
/// own (status reads across a large database otherwise read most pages
/// anew; measured: 18% more status reads on 2 cores). The mapped pages are
/// the OS's page cache, shared and reclaimable, but RSS counts those a
/// reader touched (`RssFile`), up to this bound per reader (a page read by
/// all four counts four times); idle, it maps nothing.
const READ_MMAP_BYTES: i64 = 256 << 20;

/// A connection to `path` with [`apply_pragmas`] applied: how every SQLite
/// connection of the process (writer, readers, checkpointer) is opened.
pub(crate) fn open_connection(path: &Path) -> db::Result<Conn> {
    let conn = rusqlite::Connection::open(path)?;
    apply_pragmas(&conn)?;
    Ok(Conn::Sqlite(conn))
}

impl Location {
    /// A new connection of the process's store threads.
    fn connect(&self) -> db::Result<Conn> {
        match self {
            Location::File(path) => open_connection(path),
            Location::Postgres(url) => Ok(Conn::Pg(Box::new(db::PgConn::connect(url)?))),
        }
    }

    /// [`Location::connect`] for a reader thread (it only reads): the file
    /// is mapped ([`READ_MMAP_BYTES`]).
    fn connect_reader(&self) -> db::Result<Conn> {
        let conn = self.connect()?;
        if let Some(c) = conn.sqlite() {
            c.pragma_update(None, "mmap_size", READ_MMAP_BYTES)?;
        }
        Ok(conn)
    }
}

impl Store {
    /// Open the store the configuration names: the SQLite file, or the
    /// PostgreSQL database at `[database] url`.
    pub fn open_config(db: &crate::config::DatabaseConfig) -> Result<Store, StoreError> {
        match &db.url {
            Some(url) => Store::open_postgres(url),
            None => Store::open(&db.path),
        }
    }

    /// Open (creating if needed) the database at `path`, apply pending
    /// migrations, start the writer.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        // Created private before SQLite opens it (see `files`): SQLite would
        // create it with the umask's mode, usually world-readable.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            files::create_private_dir_all(dir).map_err(|e| {
                StoreError::Invalid(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        files::create_private_file(path)
            .map_err(|e| StoreError::Invalid(format!("cannot create {}: {e}", path.display())))?;
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let manager = SqliteConnectionManager::file(path).with_init(|c| apply_pragmas(c));
        let pool = r2d2::Pool::builder()
            .max_size(8)
            .min_idle(Some(1))
            .build(manager)?;
        let location = Arc::new(Location::File(path.to_path_buf()));
        Ok(Store {
            pool: Some(pool),
            readers: Readers::start(location.clone()),
            writer: Writer::start(conn, location.clone()),
            location,
        })
    }

    /// Connect to the PostgreSQL database at `url`, apply pending
    /// migrations (under an advisory lock), start the writer.
    pub fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let location = Arc::new(Location::Postgres(url.to_string()));
        // On a thread of its own: the blocking client must not run on an
        // async runtime's thread, and a caller may be one.
        let conn = std::thread::scope(|s| {
            s.spawn(|| {
                let mut conn = location.connect()?;
                migrate(&mut conn)?;
                Ok::<_, StoreError>(conn)
            })
            .join()
            .map_err(|_| StoreError::Internal("migrating panicked".into()))?
        })?;
        Ok(Store {
            pool: None,
            readers: Readers::start(location.clone()),
            writer: Writer::start(conn, location.clone()),
            location,
        })
    }

    /// The SQLite file, if that is where the data lives.
    pub fn path(&self) -> Option<&Path> {
        match &*self.location {
            Location::File(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Run a read on a reader thread, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        self.read_on_reader(false, f).await
    }

    /// [`Store::read`] whose statements all read one snapshot (or that
    /// fails if its transaction cannot begin). On SQLite they run in a read
    /// transaction that the reads queued with it share:
    /// the WAL's read lock is taken once for all of them, not once per
    /// statement (each costs a lock call into the shared-memory index). The
    /// snapshot begins after the read was queued, so it includes every
    /// write answered before. On PostgreSQL the statements run as they are:
    /// a transaction there costs two round trips.
    pub async fn read_in_snapshot<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        self.read_on_reader(true, f).await
    }

    async fn read_on_reader<T, F>(&self, snapshot: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.readers.submit(snapshot, f, move |result| {
            let _ = tx.send(result);
        })?;
        rx.await
            .map_err(|_| StoreError::Internal("read task failed".into()))?
    }

    /// Blocking read, for the CLI and threads that are not async.
    pub fn read_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.readers.submit(false, f, move |result| {
            let _ = tx.send(result);
        })?;
        rx.recv()
            .map_err(|_| StoreError::Internal("read task failed".into()))?
    }

    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(f).await
    }

    /// [`Store::write`] for a job whose only effects are its SQL (see
    /// [`Writer::write_repeatable`]): cheaper in the batch.
    pub async fn write_repeatable<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write_repeatable(f).await
    }

    pub fn write_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write_blocking(f)
    }

    /// A pooled SQLite connection, for tests and diagnostics.
    pub fn pooled(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, StoreError> {
        match &self.pool {
            Some(pool) => Ok(pool.get()?),
            None => Err(StoreError::Invalid(
                "a pooled SQLite connection: the store is PostgreSQL".into(),
            )),
        }
    }
}

/// A read job. `snapshot` jobs run inside a read transaction
/// ([`Store::read_in_snapshot`]).
struct ReadJob {
    snapshot: bool,
    run: RunRead,
}

/// A read job's work: gets the reader's connection, or why it could not be
/// opened.
type RunRead = Box<dyn FnOnce(Result<&Conn, StoreError>) + Send>;

/// How many queued jobs a reader of the SQLite file takes at once (on
/// PostgreSQL, one). Its `snapshot` jobs share one read transaction: the
/// WAL's read lock is taken once for all of them.
const READ_BATCH: usize = 16;

/// The async read path: [`READER_THREADS`] threads, each owning one
/// connection (opened on its first job), take jobs from one queue.
///
/// Why not `spawn_blocking` over the r2d2 pool: under load that hands every
/// read to a different blocking thread (a sleep and a wake-up per read, and
/// hundreds of threads contending for the pool's connections), and measured
/// on 2 cores the context switches cost more CPU than SQLite did. A reader
/// that finds the queue non-empty runs the next jobs without sleeping.
///
/// The queue is a multi-consumer channel: a job wakes one idle reader.
/// (Readers taking turns at one receiver behind a mutex woke two threads
/// per job: the one that got it, and the next in line for the receiver.)
#[derive(Clone)]
struct Readers {
    jobs: crossbeam_channel::Sender<ReadJob>,
}

impl Readers {
    /// The threads end when the last [`Store`] clone is dropped.
    fn start(location: Arc<Location>) -> Readers {
        let (jobs, receiver) = crossbeam_channel::unbounded::<ReadJob>();
        for i in 0..READER_THREADS {
            let (receiver, location) = (receiver.clone(), location.clone());
            std::thread::Builder::new()
                .name(format!("whatan-reader-{i}"))
                .spawn(move || read_loop(&location, &receiver))
                .expect("spawn reader thread");
        }
        Readers { jobs }
    }

    /// Queue `f`; `answer` gets its result on the reader thread.
    fn submit<T, F>(
        &self,
        snapshot: bool,
        f: F,
        answer: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let run = Box::new(move |conn: Result<&Conn, StoreError>| {
            let result = match conn {
                Ok(conn) => catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
                    Err(StoreError::Internal("read task failed: it panicked".into()))
                }),
                Err(e) => Err(e),
            };
            answer(result);
        });
        self.jobs
            .send(ReadJob { snapshot, run })
            .map_err(|_| StoreError::Closed)
    }
}

fn read_loop(location: &Location, jobs: &crossbeam_channel::Receiver<ReadJob>) {
    // On PostgreSQL nothing is shared, and jobs taken together would run
    // one after another instead of on the readers side by side.
    let take = match location {
        Location::File(_) => READ_BATCH,
        Location::Postgres(_) => 1,
    };
    let mut conn: Option<Conn> = None;
    let mut batch = Vec::with_capacity(take);
    // Ends when the last sender is dropped.
    while let Ok(job) = jobs.recv() {
        // Every job of the batch is taken before its transaction begins, so
        // its snapshot includes every write answered before the job was
        // queued (a status read right after its send's 202 finds it).
        batch.push(job);
        batch.extend(jobs.try_iter().take(take - 1));
        // The snapshot jobs first (stable: each kind keeps its order), so
        // that a slow plain read does not hold up the requests' reads. An
        // open transaction is then theirs until the first plain job.
        batch.sort_by_key(|job| !job.snapshot);
        for job in batch.drain(..) {
            if !job.snapshot {
                end_read(&mut conn);
            }
            if conn.as_ref().is_none_or(Conn::is_broken) {
                match location.connect_reader() {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        conn = None;
                        (job.run)(Err(e.into()));
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_ref() else { continue };
            // The first snapshot job begins the shared transaction, or the
            // next one after the database ended it (an error).
            if job.snapshot && c.engine() == Engine::Sqlite && c.is_autocommit() {
                if let Err(e) = c.execute_batch("BEGIN") {
                    (job.run)(Err(e.into()));
                    continue;
                }
            }
            (job.run)(Ok(c));
            if !job.snapshot {
                roll_back_left_open(&mut conn);
            }
        }
        // The next batch's jobs may have been queued after writes that this
        // snapshot does not include.
        end_read(&mut conn);
    }
}

/// Whether `c` is inside a transaction; on PostgreSQL never, since the
/// readers open none there.
fn in_transaction(c: &Conn) -> bool {
    c.engine() == Engine::Sqlite && !c.is_autocommit()
}

/// Ends a read transaction, if one is open (read-only: ending it cannot
/// lose anything).
fn end_read(conn: &mut Option<Conn>) {
    let Some(c) = conn.as_ref().filter(|c| in_transaction(c)) else {
        return;
    };
    if c.execute_batch("COMMIT").is_err() {
        roll_back_left_open(conn);
    }
}

/// A job that began a transaction of its own and panicked before ending
/// it, or a shared one whose COMMIT failed, would leave its snapshot open:
/// later reads would see it frozen, and the WAL could not be checkpointed
/// past it. A connection that cannot end it is dropped.
fn roll_back_left_open(conn: &mut Option<Conn>) {
    let Some(c) = conn.as_ref().filter(|c| in_transaction(c)) else {
        return;
    };
    if let Err(e) = c.execute_batch("ROLLBACK") {
        tracing::warn!(error = %e, "reader: could not end a read transaction");
        *conn = None;
    }
}

/// The migrations in `schema.sql`, in order: `(version, sql)`.
pub fn migrations() -> Vec<(i64, String)> {
    split_migrations(SCHEMA)
}

/// A schema file's blocks: `(version, sql)`. A block starts at a line that
/// is exactly `-- migration: N`.
fn split_migrations(schema: &str) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = Vec::new();
    for line in schema.lines() {
        if let Some(n) = line.trim_end().strip_prefix("-- migration: ") {
            let version = n.parse().expect("schema file: bad migration number");
            out.push((version, String::new()));
        } else if let Some((_, sql)) = out.last_mut() {
            sql.push_str(line);
            sql.push('\n');
        }
    }
    out
}

/// The blocks of `all` newer than `current`, in order; an error if the
/// database is newer than this whatan.
fn pending_migrations(
    all: Vec<(i64, String)>,
    current: i64,
) -> Result<Vec<(i64, String)>, StoreError> {
    let latest = all.last().map(|(v, _)| *v).unwrap_or(0);
    if current > latest {
        return Err(StoreError::Invalid(format!(
            "database schema version {current} is newer than this whatan ({latest}); upgrade whatan"
        )));
    }
    Ok(all.into_iter().filter(|(v, _)| *v > current).collect())
}

/// A migrated in-memory database with `fixture` (SQL) applied: where the
/// store's unit tests start.
#[cfg(test)]
pub(crate) fn test_db(fixture: &str) -> Conn {
    let mut conn = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
    migrate(&mut conn).unwrap();
    conn.execute_batch(fixture).unwrap();
    conn
}

/// Bring the schema up to date: on SQLite every migration newer than
/// `PRAGMA user_version`, in one transaction; on PostgreSQL see
/// [`postgres::migrate`].
pub fn migrate(conn: &mut Conn) -> Result<(), StoreError> {
    let conn = match conn {
        Conn::Sqlite(c) => c,
        Conn::Pg(_) => return postgres::migrate(conn),
    };
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", (), |r| r.get(0))?;
    for (version, sql) in pending_migrations(migrations(), current)? {
        tx.execute_batch(&sql)?;
        tx.pragma_update(None, "user_version", version)?;
    }
    tx.commit()?;
    Ok(())
}

/// The schema version the database is at.
pub fn schema_version(conn: &Conn) -> Result<i64, StoreError> {
    match conn.sqlite() {
        Some(c) => Ok(c
            .query_row("PRAGMA user_version", (), |r| r.get(0))
            .map_err(db::Error::from)?),
        None => postgres::schema_version(conn),
    }
}

/// A time-ordered UUID (version 7: 48-bit milliseconds at `now_ms`, 74
/// random bits): still unguessable, and rows keyed by it are inserted at the
/// end of their index instead of on a random page, one 4 KiB page less to
/// write per insert under load; in logs, such ids read in order.
pub fn time_ordered_uuid(now_ms: i64) -> uuid::Uuid {
    uuid::Builder::from_unix_timestamp_millis(now_ms.max(0) as u64, &rand::random()).into_uuid()
}

/// Text a driver or a remote service reported, as both stores keep it:
/// PostgreSQL's TEXT cannot hold U+0000, so it becomes U+FFFD on both.
pub fn storable_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// A fresh random id with a readable prefix: `ws_3f9a0c...` (96 random bits).
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 12] = rand::random();
    format!("{prefix}_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(snapshot: bool, run: impl FnOnce(&Conn) + Send + 'static) -> ReadJob {
        ReadJob {
            snapshot,
            run: Box::new(move |c| run(c.unwrap())),
        }
    }

    /// A job that leaves a read transaction open (a panic inside a
    /// transaction of its own) does not leave it to the reader's next job.
    #[test]
    fn a_reader_ends_a_transaction_its_job_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        open_connection(&path).unwrap();
        let location = Location::File(path);
        let (jobs, receiver) = crossbeam_channel::unbounded::<ReadJob>();
        let (seen, answers) = mpsc::channel::<bool>();
        let left_open = seen.clone();
        let send = |j| jobs.send(j).unwrap();
        send(job(false, move |c| {
            c.execute_batch("BEGIN; SELECT 1;").unwrap();
            left_open.send(c.is_autocommit()).unwrap();
        }));
        send(job(false, move |c| seen.send(c.is_autocommit()).unwrap()));
        drop(jobs);
        // One reader, so both jobs run on the same connection, in order.
        read_loop(&location, &receiver);
        assert!(!answers.recv().unwrap(), "the first job left it open");
        assert!(answers.recv().unwrap(), "the next job starts outside it");
    }

    /// The rows of table `t`.
    fn rows(c: &Conn) -> i64 {
        c.query_row("SELECT count(*) FROM t", (), |r| r.get(0))
            .unwrap()
    }

    /// Adds a row to `t` from a connection of its own.
    fn add_row(path: &Path) {
        open_connection(path)
            .unwrap()
            .execute_batch("INSERT INTO t VALUES (1)")
            .unwrap()
    }

    /// What each job that `queue` queued saw (a label and a count), in
    /// order, when one reader ran them over a file with an empty table `t`.
    /// `queue` gets the queue, where the jobs tell what they saw, and the
    /// file.
    fn seen_by_one_reader(
        queue: impl FnOnce(
            &crossbeam_channel::Sender<ReadJob>,
            &mpsc::Sender<(&'static str, i64)>,
            &Path,
        ),
    ) -> Vec<(&'static str, i64)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        open_connection(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let (jobs, receiver) = crossbeam_channel::unbounded::<ReadJob>();
        let (seen, counts) = mpsc::channel();
        queue(&jobs, &seen, &path);
        drop((jobs, seen));
        read_loop(&Location::File(path), &receiver);
        counts.iter().collect()
    }

    /// Snapshot reads queued together share one read transaction, which
    /// begins after all of them were taken; a read queued after a write
    /// committed (as a status read after its send's 202) sees it.
    #[test]
    fn snapshot_reads_queued_together_share_one_snapshot() {
        let seen = seen_by_one_reader(|jobs, seen, path| {
            let (first, second, after) = (seen.clone(), seen.clone(), seen.clone());
            let (later, path) = (jobs.clone(), path.to_path_buf());
            jobs.send(job(true, move |c| {
                first.send(("first", rows(c))).unwrap();
                add_row(&path);
                later
                    .send(job(true, move |c| {
                        after.send(("queued after the write", rows(c))).unwrap()
                    }))
                    .unwrap();
            }))
            .unwrap();
            jobs.send(job(true, move |c| {
                second.send(("queued with the first", rows(c))).unwrap()
            }))
            .unwrap();
        });
        assert_eq!(
            seen,
            [
                ("first", 0),
                ("queued with the first", 0),
                ("queued after the write", 1),
            ]
        );
    }

    /// Plain reads taken with snapshot reads run after them, outside their
    /// transaction.
    #[test]
    fn plain_reads_run_after_the_snapshot_reads_taken_with_them() {
        let seen = seen_by_one_reader(|jobs, seen, path| {
            let (plain, first, second) = (seen.clone(), seen.clone(), seen.clone());
            let path = path.to_path_buf();
            let send = |j| jobs.send(j).unwrap();
            send(job(false, move |c| plain.send(("plain", rows(c))).unwrap()));
            send(job(true, move |c| {
                first.send(("first", rows(c))).unwrap();
                add_row(&path);
            }));
            send(job(true, move |c| {
                second.send(("second", rows(c))).unwrap()
            }));
        });
        assert_eq!(seen, [("first", 0), ("second", 0), ("plain", 1)]);
    }

    /// Reader threads map the file (their reads copy no page); the writer
    /// does not.
    #[tokio::test(flavor = "current_thread")]
    async fn reader_connections_map_the_file_and_the_writer_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        let mapped = |c: &Conn| -> Result<i64, StoreError> {
            Ok(c.query_row("PRAGMA mmap_size", (), |r| r.get(0))?)
        };
        assert_eq!(store.read(mapped).await.unwrap(), READ_MMAP_BYTES);
        assert_eq!(store.write(mapped).await.unwrap(), 0);
    }

    #[test]
    fn text_from_drivers_loses_only_its_nul_characters() {
        assert_eq!(storable_text("timed out"), "timed out");
        assert!(matches!(storable_text("ok"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(storable_text("bad\0byte\0"), "bad\u{FFFD}byte\u{FFFD}");
    }

    #[test]
    fn schema_splits_into_numbered_migrations_starting_at_one() {
        let all = migrations();
        assert!(!all.is_empty());
        for (i, (v, sql)) in all.iter().enumerate() {
            assert_eq!(*v, i as i64 + 1);
            assert!(sql.contains("CREATE") || sql.contains("ALTER"));
        }
    }

    #[test]
    fn migrating_twice_is_a_no_op_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut conn = Conn::Sqlite(rusqlite::Connection::open(&path).unwrap());
        migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO workspaces (id, name, created_at) VALUES ('ws_1', 'a', 0)",
            (),
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", (), |r| r.get(0))
            .unwrap();
        assert_eq!(version, migrations().last().unwrap().0);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM workspaces", (), |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_database_at_an_older_version_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Conn::Sqlite(rusqlite::Connection::open(dir.path().join("old.db")).unwrap());
        let (v1, sql1) = migrations().into_iter().next().unwrap();
        conn.execute_batch(&sql1).unwrap();
        conn.sqlite()
            .unwrap()
            .pragma_update(None, "user_version", v1)
            .unwrap();
        conn.execute_batch(
            "INSERT INTO workspaces VALUES ('ws_1', 'a', 0);
             INSERT INTO users VALUES ('usr_1', 'ws_1', 'u', 'owner', 0);
             INSERT INTO accounts (id, workspace_id, user_id, phone, driver, status, status_changed_at, created_at)
                 VALUES ('acc_1', 'ws_1', 'usr_1', '+917000000001', 'sandbox', 'connected', 0, 0);
             INSERT INTO send_attempts (id, workspace_id, account_id, user_id, mode, from_phone, to_phone, type, payload, status, created_at, updated_at)
                 VALUES ('a1', 'ws_1', 'acc_1', 'usr_1', 'personal', '+917000000001', '+917999709798', 'text', '{}', 'sending', 0, 0);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", (), |r| r.get(0))
            .unwrap();
        assert_eq!(version, migrations().last().unwrap().0);
        let row = attempts::get_attempt(&conn, "a1").unwrap().unwrap();
        assert!(
            !row.handoff_unsent,
            "an old in-flight attempt counts as possibly sent"
        );
    }

    #[test]
    fn pooled_connections_run_wal_full_sync_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p.db")).unwrap();
        for _ in 0..3 {
            let conn = store.pooled().unwrap();
            let mode: String = conn
                .query_row("PRAGMA journal_mode", (), |r| r.get(0))
                .unwrap();
            let sync: i64 = conn
                .query_row("PRAGMA synchronous", (), |r| r.get(0))
                .unwrap();
            let fk: i64 = conn
                .query_row("PRAGMA foreign_keys", (), |r| r.get(0))
                .unwrap();
            let busy: i64 = conn
                .query_row("PRAGMA busy_timeout", (), |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            assert_eq!(sync, 2, "synchronous=FULL");
            assert_eq!(fk, 1);
            assert!(busy >= 1000);
        }
    }

    #[test]
    fn a_failing_job_rolls_back_alone_within_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db")).unwrap();
        let ok = store.write_blocking(|c| {
            c.execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES ('ws_a', 'a', 0)",
                (),
            )?;
            Ok(())
        });
        assert!(ok.is_ok());
        let failed: Result<(), StoreError> = store.write_blocking(|c| {
            c.execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES ('ws_b', 'b', 0)",
                (),
            )?;
            Err(StoreError::Invalid("refused".into()))
        });
        assert!(failed.is_err());
        let names: Vec<String> = store
            .read_blocking(|c| {
                let mut s = c.prepare("SELECT id FROM workspaces ORDER BY id")?;
                let rows = s.query_map((), |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .unwrap();
        assert_eq!(names, vec!["ws_a".to_string()]);
    }
}
