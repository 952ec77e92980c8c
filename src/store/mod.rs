//! The SQLite store: one local file holding workspaces, users, accounts,
//! tokens, send attempts, idempotency records and counters.
//!
//! Async reads run on a few dedicated reader threads (see [`Readers`]);
//! blocking reads (CLI, tests) use an r2d2 pool; every write goes through
//! the single group-committing [`Writer`]. Nothing here knows about
//! HTTP. Repository functions are plain functions over `&Connection` with
//! inline SQL and `prepare_cached`; "not found" is `Ok(None)`.

pub mod admin;
pub mod attempts;
pub mod backup;
pub mod dashboard;
pub mod files;
pub mod gauges;
pub mod listing;
pub mod lock;
pub mod outbox;
pub mod retention;
mod types;
pub mod webhooks;
mod writer;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

pub use writer::Writer;

/// The schema, as ordered migrations (see the header of `schema.sql`).
const SCHEMA: &str = include_str!("../../schema.sql");

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Threads (each with its own connection) that run [`Store::read`].
const READER_THREADS: usize = 4;

#[derive(Debug, Clone)]
pub enum StoreError {
    Db(Arc<rusqlite::Error>),
    Pool(String),
    /// A named thing does not exist ("unknown user usr_...").
    NotFound(String),
    /// A uniqueness or state rule refused the write ("phone already used").
    Conflict(String),
    /// Input the store refuses ("user belongs to another workspace").
    Invalid(String),
    Internal(String),
    /// The database cannot take writes right now (disk full, not writable,
    /// locked by another program, I/O error): nothing was stored; a retry
    /// later may succeed. The API answers 503 `service_unavailable`.
    Unavailable(String),
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
            StoreError::Closed => f.write_str("the database writer has stopped"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Db(Arc::new(e))
        }
    }
}

impl StoreError {
    /// Whether the error says "cannot write now" rather than "this request
    /// is wrong": a caller answers 503 and retries later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// SQLite's codes for a database that cannot take a write now, as opposed to
/// a bug or a refused statement.
fn is_unavailable(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e.sqlite_error_code(),
        Some(
            DiskFull
                | SystemIoFailure
                | ReadOnly
                | DatabaseBusy
                | DatabaseLocked
                | CannotOpen
                | OutOfMemory
                | FileLockingProtocolFailed
        )
    )
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Pool(e.to_string())
    }
}

/// Handle to the database: cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: r2d2::Pool<SqliteConnectionManager>,
    readers: Readers,
    writer: Writer,
    path: PathBuf,
}

/// Applied to every connection, pooled or the writer's.
pub fn apply_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// A connection to `path` with [`apply_pragmas`] applied: how every
/// connection of the process (writer, readers, checkpointer) is opened.
pub(crate) fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    apply_pragmas(&conn)?;
    Ok(conn)
}

impl Store {
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
        Ok(Store {
            pool,
            readers: Readers::start(path),
            writer: Writer::start(conn),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Run a read on a reader thread, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
                    Err(StoreError::Internal("read task failed: it panicked".into()))
                }),
                Err(e) => Err(e),
            };
            let _ = tx.send(result);
        });
        self.readers
            .jobs
            .send(job)
            .map_err(|_| StoreError::Closed)?;
        rx.await
            .map_err(|_| StoreError::Internal("read task failed".into()))?
    }

    /// Blocking read, for the CLI and threads that are not async.
    pub fn read_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError>,
    {
        let conn = self.pool.get()?;
        f(&conn)
    }

    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(f).await
    }

    pub fn write_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write_blocking(f)
    }

    /// A pooled connection, for tests and diagnostics.
    pub fn pooled(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, StoreError> {
        Ok(self.pool.get()?)
    }
}

/// A read job: gets the reader's connection, or why it could not be opened.
type ReadJob = Box<dyn FnOnce(Result<&Connection, StoreError>) + Send>;

/// The async read path: [`READER_THREADS`] threads, each owning one
/// connection (opened on its first job), take jobs from one queue.
///
/// Why not `spawn_blocking` over the r2d2 pool: under load that hands every
/// read to a different blocking thread (a sleep and a wake-up per read, and
/// hundreds of threads contending for the pool's connections), and measured
/// on 2 cores the context switches cost more CPU than SQLite did. A reader
/// that finds the queue non-empty runs the next job without sleeping.
#[derive(Clone)]
struct Readers {
    jobs: mpsc::Sender<ReadJob>,
}

impl Readers {
    /// The threads end when the last [`Store`] clone is dropped.
    fn start(path: &Path) -> Readers {
        let (jobs, receiver) = mpsc::channel::<ReadJob>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..READER_THREADS {
            let (receiver, path) = (receiver.clone(), path.to_path_buf());
            std::thread::Builder::new()
                .name(format!("whatan-reader-{i}"))
                .spawn(move || read_loop(&path, &receiver))
                .expect("spawn reader thread");
        }
        Readers { jobs }
    }
}

fn read_loop(path: &Path, jobs: &Mutex<mpsc::Receiver<ReadJob>>) {
    let mut conn: Option<Connection> = None;
    loop {
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        if conn.is_none() {
            match open_connection(path) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    job(Err(e.into()));
                    continue;
                }
            }
        }
        if let Some(c) = &conn {
            job(Ok(c));
        }
    }
}

/// The migrations in `schema.sql`, in order: `(version, sql)`. A block
/// starts at a line that is exactly `-- migration: N`.
pub fn migrations() -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = Vec::new();
    for line in SCHEMA.lines() {
        if let Some(n) = line.trim_end().strip_prefix("-- migration: ") {
            let version = n.parse().expect("schema.sql: bad migration number");
            out.push((version, String::new()));
        } else if let Some((_, sql)) = out.last_mut() {
            sql.push_str(line);
            sql.push('\n');
        }
    }
    out
}

/// A migrated in-memory database with `fixture` (SQL) applied: where the
/// store's unit tests start.
#[cfg(test)]
pub(crate) fn test_db(fixture: &str) -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate(&mut conn).unwrap();
    conn.execute_batch(fixture).unwrap();
    conn
}

/// Apply every migration newer than `PRAGMA user_version`, in one transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let all = migrations();
    let latest = all.last().map(|(v, _)| *v).unwrap_or(0);
    if current > latest {
        return Err(StoreError::Invalid(format!(
            "database schema version {current} is newer than this whatan ({latest}); upgrade whatan"
        )));
    }
    for (version, sql) in all.into_iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(&sql)?;
        tx.pragma_update(None, "user_version", version)?;
    }
    tx.commit()?;
    Ok(())
}

/// A time-ordered UUID (version 7: 48-bit milliseconds at `now_ms`, 74
/// random bits): still unguessable, and rows keyed by it are inserted at the
/// end of their index instead of on a random page, one 4 KiB page less to
/// write per insert under load; in logs, such ids read in order.
pub fn time_ordered_uuid(now_ms: i64) -> uuid::Uuid {
    uuid::Builder::from_unix_timestamp_millis(now_ms.max(0) as u64, &rand::random()).into_uuid()
}

/// A fresh random id with a readable prefix: `ws_3f9a0c...` (96 random bits).
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 12] = rand::random();
    format!("{prefix}_{}", hex::encode(bytes))
}

/// True if a SQLite error is a UNIQUE / PRIMARY KEY violation.
pub fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO workspaces (id, name, created_at) VALUES ('ws_1', 'a', 0)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, migrations().last().unwrap().0);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM workspaces", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_database_at_an_older_version_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("old.db")).unwrap();
        let (v1, sql1) = migrations().into_iter().next().unwrap();
        conn.execute_batch(&sql1).unwrap();
        conn.pragma_update(None, "user_version", v1).unwrap();
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
            .query_row("PRAGMA user_version", [], |r| r.get(0))
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
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            let sync: i64 = conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            let fk: i64 = conn
                .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
                .unwrap();
            let busy: i64 = conn
                .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
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
                [],
            )?;
            Ok(())
        });
        assert!(ok.is_ok());
        let failed: Result<(), StoreError> = store.write_blocking(|c| {
            c.execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES ('ws_b', 'b', 0)",
                [],
            )?;
            Err(StoreError::Invalid("refused".into()))
        });
        assert!(failed.is_err());
        let names: Vec<String> = store
            .read_blocking(|c| {
                let mut s = c.prepare("SELECT id FROM workspaces ORDER BY id")?;
                let rows = s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .unwrap();
        assert_eq!(names, vec!["ws_a".to_string()]);
    }
}
