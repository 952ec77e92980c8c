//! The single writer: one thread owns the one connection that writes, and
//! commits every write request waiting at that moment in one transaction
//! (group commit).
//!
//! Why: with WAL and `synchronous=FULL` every commit is an fsync, and one
//! fsync per HTTP request caps the server at a few hundred writes per second.
//! One transaction holding many requests costs one fsync. Each request runs
//! inside its own SAVEPOINT, so a request that fails rolls back alone, and
//! each caller is answered only after the commit that holds its rows is
//! durable (or has failed, in which case every caller of the batch gets the
//! error and nothing of the batch is kept).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use rusqlite::Connection;

use super::StoreError;

/// Sends the outcome to the caller once the batch's commit is decided.
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Runs the caller's SQL; says whether it succeeded (else its savepoint is
/// rolled back) and how to answer the caller after the commit.
/// `None` means the batch could not begin: the job answers with that error.
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Completion) + Send>;

/// Most jobs in one transaction; bounds latency of the first job in a batch.
const MAX_BATCH: usize = 2048;

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Start the writer thread over `conn` (already migrated).
    pub fn start(conn: Connection) -> Writer {
        let (jobs, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("whatan-writer".into())
            .spawn(move || run(conn, receiver))
            .expect("spawn writer thread");
        Writer { jobs }
    }

    fn submit<T, F>(
        &self,
        f: F,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<T, StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = match conn {
                Some(conn) => catch_unwind(AssertUnwindSafe(|| f(conn)))
                    .unwrap_or_else(|_| Err(StoreError::Internal("write job panicked".into()))),
                None => Err(StoreError::Internal(
                    "could not begin a write transaction".into(),
                )),
            };
            let ok = outcome.is_ok();
            let completion: Completion = Box::new(move |commit| {
                let result = match commit {
                    Ok(()) => outcome,
                    Err(e) => Err(e),
                };
                let _ = tx.send(result);
            });
            (ok, completion)
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Run `f` in the next group commit; resolves after the commit is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f)?.await.map_err(|_| StoreError::Closed)?
    }

    /// Blocking form of [`Writer::write`], for the CLI and other non-async callers.
    pub fn write_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f)?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }
}

fn run(conn: Connection, receiver: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(64);
    let mut completions: Vec<Completion> = Vec::with_capacity(64);
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "writer: BEGIN failed; answering the batch with an error");
            for job in batch.drain(..) {
                let (_, completion) = job(None);
                completion(Ok(()));
            }
            continue;
        }
        for job in batch.drain(..) {
            let _ = conn.execute_batch("SAVEPOINT job");
            let (ok, completion) = job(Some(&conn));
            if !ok {
                let _ = conn.execute_batch("ROLLBACK TO job");
            }
            let _ = conn.execute_batch("RELEASE job");
            completions.push(completion);
        }
        let commit = conn.execute_batch("COMMIT").map_err(StoreError::from);
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for completion in completions.drain(..) {
            completion(commit.clone());
        }
    }
}
