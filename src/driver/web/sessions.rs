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

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use whatan_web::{Kind, Op, Row, Session, SessionRows, WebError};

use crate::store::{leases, web_sessions, Store};

/// Where linked sessions live for one store.
#[derive(Clone)]
pub enum Sessions {
    /// A folder of session files (the SQLite file's `web-sessions/`).
    Files(PathBuf),
    /// Rows in the database (PostgreSQL).
    Database(Store),
}

impl Sessions {
    /// Files next to a SQLite file; rows on PostgreSQL.
    pub fn of(store: &Store) -> Sessions {
        match store.path() {
            Some(path) => Sessions::Files(whatan_web::sessions_dir(path)),
            None => Sessions::Database(store.clone()),
        }
    }

    /// The session of `account_id`; in the database, written under `fence`
    /// when one is given.
    pub fn session(&self, account_id: &str, fence: Option<i64>) -> Result<Session, WebError> {
        match self {
            Sessions::Files(dir) => Ok(Session::File(whatan_web::session_path(dir, account_id)?)),
            Sessions::Database(store) => Ok(Session::Rows {
                name: format!("the database's session of {account_id}"),
                rows: Arc::new(DbRows::new(store.clone(), account_id, fence)),
            }),
        }
    }
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
}

#[async_trait]
impl SessionRows for DbRows {
    async fn get(&self, kind: Kind, key: &[u8]) -> Result<Option<Row>, String> {
        let (id, key) = (self.account_id.clone(), key.to_vec());
        self.store
            .read(move |c| web_sessions::get(c, &id, kind.code(), &key))
            .await
            .map(|row| row.map(|(value, ts)| Row { value, ts }))
            .map_err(|e| e.to_string())
    }

    async fn get_many(&self, kind: Kind, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Row>>, String> {
        let id = self.account_id.clone();
        self.store
            .read(move |c| {
                keys.iter()
                    .map(|key| {
                        let row = web_sessions::get(c, &id, kind.code(), key)?;
                        Ok(row.map(|(value, ts)| Row { value, ts }))
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
            .map(|(key, value, ts)| (key, Row { value, ts }))
            .collect())
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<u64, String> {
        let (id, fence) = (self.account_id.clone(), self.fence);
        self.store
            .write(move |c| {
                leases::guard(c, &id, fence)?;
                let mut removed = 0;
                for op in &ops {
                    removed += match op {
                        Op::Put {
                            kind,
                            key,
                            value,
                            ts,
                        } => web_sessions::put(c, &id, kind.code(), key, value, *ts).map(|()| 0)?,
                        Op::Delete { kind, key } => {
                            web_sessions::delete(c, &id, kind.code(), key, true)?
                        }
                        Op::DeletePrefix { kind, prefix } => {
                            web_sessions::delete(c, &id, kind.code(), prefix, false)?
                        }
                        Op::DeleteExpired { kind, up_to } => {
                            web_sessions::delete_expired(c, &id, kind.code(), *up_to)?
                        }
                    };
                }
                Ok(removed)
            })
            .await
            .map_err(|e| e.to_string())
    }

    async fn clear(&self) -> Result<(), String> {
        let (id, fence) = (self.account_id.clone(), self.fence);
        self.store
            .write(move |c| {
                leases::guard(c, &id, fence)?;
                web_sessions::clear(c, &id)
            })
            .await
            .map_err(|e| e.to_string())
    }
}
