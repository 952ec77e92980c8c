//! Where this process keeps linked sessions ([`Sessions`]): files next to
//! the SQLite database (`web-sessions/<account id>.db`), or, on PostgreSQL,
//! rows of `web_session_rows` ([`DbRows`]), which every node reads, so an
//! account moves to another node without pairing again.
//!
//! On PostgreSQL a device writes its session under the fence of the lease
//! it was started with: a node whose lease moved on (paused, cut off) can
//! no longer write the account's Signal state, as it can no longer claim or
//! settle its sends. Pairing (the CLI, the dashboard) writes without one:
//! the account has no linked device running anywhere until it is linked.
//!
//! Nodes of earlier versions kept sessions in files on PostgreSQL too: a
//! node that opens an account's session and finds no rows but such a file
//! beside its configured `database.path` moves it into the rows first
//! ([`Sessions::open`]) and renames the file `<id>.db.imported`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use whatan_web::{Kind, Op, Row, Session, SessionRows, WebError};

use crate::store::{admin, leases, web_sessions, Conn, Store, StoreError};

/// Where linked sessions live for one store.
#[derive(Clone)]
pub enum Sessions {
    /// A folder of session files (the SQLite file's `web-sessions/`).
    Files(PathBuf),
    /// Rows in the database (PostgreSQL); `leftovers` is where earlier
    /// versions kept session files.
    Database { store: Store, leftovers: PathBuf },
}

impl Sessions {
    /// Files next to a SQLite file; rows on PostgreSQL (`database_path`,
    /// the config's `database.path`, says where earlier versions kept
    /// files).
    pub fn of(store: &Store, database_path: &Path) -> Sessions {
        match store.path() {
            Some(path) => Sessions::Files(whatan_web::sessions_dir(path)),
            None => Sessions::Database {
                store: store.clone(),
                leftovers: whatan_web::sessions_dir(database_path),
            },
        }
    }

    /// [`Sessions::session`], after moving a session file an earlier
    /// version left for this account into the database, if its rows are
    /// empty.
    pub async fn open(&self, account_id: &str, fence: Option<i64>) -> Result<Session, WebError> {
        let Sessions::Database { store, leftovers } = self else {
            return self.session(account_id, fence);
        };
        let rows: Arc<dyn SessionRows> = Arc::new(DbRows::new(store.clone(), account_id, fence));
        let session = rows_session(account_id, rows.clone());
        let file = whatan_web::session_path(leftovers, account_id)?;
        if !file.is_file() || session.exists().await? {
            return Ok(session);
        }
        let copied = whatan_web::copy_file_session(&file, rows).await?;
        let mut imported = file.clone().into_os_string();
        imported.push(".imported");
        std::fs::rename(&file, &imported).map_err(|e| {
            WebError::Store(format!(
                "moved {} into the database, but: {e}",
                file.display()
            ))
        })?;
        tracing::info!(account = %account_id, entries = copied, file = %file.display(), "linked session moved from its file into the database");
        Ok(session)
    }

    /// The session of `account_id`; in the database, written under `fence`
    /// when one is given.
    pub fn session(&self, account_id: &str, fence: Option<i64>) -> Result<Session, WebError> {
        match self {
            Sessions::Files(dir) => Ok(Session::File(whatan_web::session_path(dir, account_id)?)),
            Sessions::Database { store, .. } => Ok(rows_session(
                account_id,
                Arc::new(DbRows::new(store.clone(), account_id, fence)),
            )),
        }
    }
}

/// The session of `account_id` kept in `rows`.
fn rows_session(account_id: &str, rows: Arc<dyn SessionRows>) -> Session {
    Session::rows(format!("the database's session of {account_id}"), rows)
}

/// `migrate --from-sqlite FILE`: copy the linked sessions beside FILE
/// (`web-sessions/<account id>.db`) into the database's rows, for the
/// accounts the copy brought along (others are left, with a warning).
/// Entries copied per account, by account id.
pub fn copy_sessions_blocking(store: &Store, file: &Path) -> Result<Vec<(String, u64)>, String> {
    let dir = whatan_web::sessions_dir(file);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let id = path.file_name()?.to_str()?.strip_suffix(".db")?.to_string();
            Some((id, path))
        })
        .collect();
    files.sort();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let mut copied = Vec::new();
    for (account_id, path) in files {
        let known = {
            let id = account_id.clone();
            store
                .read_blocking(move |c| admin::get_account(c, &id))
                .map_err(|e| e.to_string())?
        };
        if known.is_none() {
            tracing::warn!(file = %path.display(), "a session file of no copied account: left as it is");
            continue;
        }
        let rows = Arc::new(DbRows::new(store.clone(), &account_id, None));
        let n = runtime
            .block_on(whatan_web::copy_file_session(&path, rows))
            .map_err(|e| {
                format!("the database was copied, but the linked session of {account_id} was not: {e}; link that account again with `whatan account connect {account_id}`")
            })?;
        copied.push((account_id, n));
    }
    Ok(copied)
}

/// One account's session rows in the database. Reads run on the store's
/// readers; every batch is one write job (durable when it returns).
pub struct DbRows {
    store: Store,
    account_id: String,
    fence: Option<i64>,
}

impl DbRows {
    pub fn new(store: Store, account_id: &str, fence: Option<i64>) -> DbRows {
        DbRows {
            store,
            account_id: account_id.to_string(),
            fence,
        }
    }

    /// Run `f` (given the connection and the account id) in one write job,
    /// after checking the fence this session writes under.
    async fn fenced<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Conn, &str) -> Result<T, StoreError> + Send + 'static,
    {
        let (id, fence) = (self.account_id.clone(), self.fence);
        self.store
            .write(move |c| {
                leases::guard(c, &id, fence)?;
                f(c, &id)
            })
            .await
            .map_err(|e| e.to_string())
    }
}

/// A stored `(value, ts)` as a row.
fn row((value, ts): (Vec<u8>, i64)) -> Row {
    Row { value, ts }
}

#[async_trait]
impl SessionRows for DbRows {
    async fn get(&self, kind: Kind, key: &[u8]) -> Result<Option<Row>, String> {
        let (id, key) = (self.account_id.clone(), key.to_vec());
        self.store
            .read(move |c| web_sessions::get(c, &id, kind.code(), &key))
            .await
            .map(|found| found.map(row))
            .map_err(|e| e.to_string())
    }

    async fn get_many(&self, kind: Kind, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Row>>, String> {
        let id = self.account_id.clone();
        self.store
            .read(move |c| {
                keys.iter()
                    .map(|key| {
                        let web_row = web_sessions::get(c, &id, kind.code(), key)?;
                        Ok(web_row.map(row))
                    })
                    .collect()
            })
            .await
            .map_err(|e| e.to_string())
    }

    async fn scan(&self, kind: Kind, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Row)>, String> {
        let (id, prefix) = (self.account_id.clone(), prefix.to_vec());
        let rows = self
            .store
            .read(move |c| web_sessions::scan(c, &id, kind.code(), &prefix))
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(|(key, value, ts)| (key, row((value, ts))))
            .collect())
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<u64, String> {
        self.fenced(move |c, id| {
            let mut removed = 0;
            for op in &ops {
                removed += match op {
                    Op::Put {
                        kind,
                        key,
                        value,
                        ts,
                    } => web_sessions::put(c, id, kind.code(), key, value, *ts).map(|()| 0)?,
                    Op::SetTs { kind, key, ts } => {
                        web_sessions::set_ts(c, id, kind.code(), key, *ts).map(|()| 0)?
                    }
                    Op::Delete { kind, key } => {
                        web_sessions::delete(c, id, kind.code(), key, true)?
                    }
                    Op::DeletePrefix { kind, prefix } => {
                        web_sessions::delete(c, id, kind.code(), prefix, false)?
                    }
                    Op::DeleteExpired { kind, up_to } => {
                        web_sessions::delete_expired(c, id, kind.code(), *up_to)?
                    }
                };
            }
            Ok(removed)
        })
        .await
    }

    async fn take(&self, kind: Kind, key: &[u8]) -> Result<Option<Row>, String> {
        let key = key.to_vec();
        let taken = self
            .fenced(move |c, id| web_sessions::take(c, id, kind.code(), &key))
            .await?;
        Ok(taken.map(row))
    }

    async fn clear(&self) -> Result<(), String> {
        self.fenced(web_sessions::clear).await
    }
}
