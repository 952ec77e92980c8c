//! Where linked sessions live ([`Session`]): one SQLite file per account,
//! `<database dir>/web-sessions/<account id>.db`, next to whatan's own
//! database so that backing up that directory keeps the links; or rows in
//! the caller's database ([`crate::rows`]), so that another machine can
//! drive the account without pairing again. Either holds the device's keys
//! (whoever has them can read and send as the account): a file is created
//! readable by its owner only (0600, in a 0700 folder).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use whatsapp_rust::wacore::store::traits::{Backend, DeviceStore};
use whatsapp_rust_sqlite_storage::SqliteStore;

use crate::backend::RowBackend;
use crate::rows::SessionRows;
use crate::WebError;

/// Where one account's linked session is kept.
#[derive(Clone)]
pub enum Session {
    /// The library's own SQLite file.
    File(PathBuf),
    /// Rows in the caller's database; `name` says which, in messages.
    /// Built by [`Session::rows`].
    Rows {
        name: String,
        rows: Arc<dyn SessionRows>,
        /// The one backend of this session (its write lock is the
        /// session's).
        backend: Arc<RowBackend>,
    },
}

impl Session {
    /// A session kept in `rows`.
    pub fn rows(name: String, rows: Arc<dyn SessionRows>) -> Session {
        let backend = Arc::new(RowBackend::new(rows.clone()));
        Session::Rows {
            name,
            rows,
            backend,
        }
    }

    /// Whether a session is stored (linked, or a pairing left unfinished:
    /// [`crate::linked_phone`] tells them apart).
    pub async fn exists(&self) -> Result<bool, WebError> {
        match self {
            Session::File(path) => Ok(session_exists(path)),
            Session::Rows { backend, .. } => DeviceStore::exists(&**backend)
                .await
                .map_err(|e| WebError::Store(format!("cannot read {self}: {e}"))),
        }
    }

    /// Remove the session (missing is fine).
    pub async fn remove(&self) -> Result<(), WebError> {
        let removed = match self {
            Session::File(path) => remove_session(path).map_err(|e| e.to_string()),
            Session::Rows { rows, .. } => rows.clear().await,
        };
        removed.map_err(|e| WebError::Store(format!("cannot remove {self}: {e}")))
    }

    /// The library's storage backend on this session, creating an empty
    /// file (owner-only) when there is none.
    pub(crate) async fn backend(&self) -> Result<Arc<dyn Backend>, WebError> {
        match self {
            Session::File(path) => {
                if let Some(dir) = path.parent() {
                    if !dir.as_os_str().is_empty() {
                        create_private_dir(dir).map_err(|e| {
                            WebError::Store(format!("cannot create {}: {e}", dir.display()))
                        })?;
                    }
                }
                // The session holds the device's keys: created owner-only
                // before the store opens it (SQLite gives its -wal/-shm the
                // same mode).
                create_private_file(path).map_err(|e| {
                    WebError::Store(format!("cannot create {}: {e}", path.display()))
                })?;
                let store = SqliteStore::new(store_url(path)?)
                    .await
                    .map_err(|e| WebError::Store(format!("cannot open {self}: {e}")))?;
                Ok(Arc::new(store))
            }
            Session::Rows { backend, .. } => Ok(backend.clone()),
        }
    }
}

impl std::fmt::Display for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Session::File(path) => write!(f, "{}", path.display()),
            Session::Rows { name, .. } => f.write_str(name),
        }
    }
}

/// Session files hold the account's keys: a folder created for them is
/// readable by its owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Create `path` with mode 0600 if it does not exist; an existing session
/// file is left as it is.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// The folder, next to whatan's database, that holds the session files.
pub const SESSIONS_DIR: &str = "web-sessions";

/// The session folder for whatan's database at `database_path`.
pub fn sessions_dir(database_path: &Path) -> PathBuf {
    match database_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.join(SESSIONS_DIR),
        _ => PathBuf::from(".").join(SESSIONS_DIR),
    }
}

/// The session file of one account. Account ids become file names, so only
/// ids made of letters, digits, `_` and `-` are accepted.
pub fn session_path(sessions_dir: &Path, account_id: &str) -> Result<PathBuf, WebError> {
    let plain = !account_id.is_empty()
        && account_id.len() <= 100
        && account_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !plain {
        return Err(WebError::Invalid(format!(
            "account id {account_id:?} cannot name a session file"
        )));
    }
    Ok(sessions_dir.join(format!("{account_id}.db")))
}

/// Whether a session file exists (linked, or a pairing that was left
/// unfinished: [`crate::linked_phone`] tells them apart).
pub fn session_exists(path: &Path) -> bool {
    path.is_file()
}

/// Remove a session file and SQLite's companions (`-wal`, `-shm`,
/// `-journal`). Missing files are fine.
pub fn remove_session(path: &Path) -> io::Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(PathBuf::from(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The store URL the library wants (a plain path), refusing paths that are
/// not valid UTF-8 rather than mangling them.
pub(crate) fn store_url(path: &Path) -> Result<&str, WebError> {
    path.to_str()
        .ok_or_else(|| WebError::Store(format!("{} is not a UTF-8 path", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_next_to_the_database() {
        assert_eq!(
            sessions_dir(Path::new("/var/lib/whatan/whatan.db")),
            PathBuf::from("/var/lib/whatan/web-sessions")
        );
        assert_eq!(
            sessions_dir(Path::new("whatan.db")),
            PathBuf::from("./web-sessions")
        );
        assert_eq!(
            session_path(Path::new("/data/web-sessions"), "acc_3f9a").unwrap(),
            PathBuf::from("/data/web-sessions/acc_3f9a.db")
        );
    }

    #[test]
    fn account_ids_that_are_not_plain_names_are_refused() {
        for bad in [
            "", "../acc", "acc/1", "acc.db", "acc 1", "ácc", "..", "a\0b",
        ] {
            assert!(
                matches!(
                    session_path(Path::new("/d"), bad),
                    Err(WebError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        assert!(session_path(Path::new("/d"), "acc_A-9").is_ok());
    }

    #[test]
    fn removing_a_session_removes_the_file_and_its_sqlite_companions() {
        let dir = tempfile::tempdir().unwrap();
        let path = session_path(dir.path(), "acc_1").unwrap();
        assert!(!session_exists(&path));
        for suffix in ["", "-wal", "-shm"] {
            std::fs::write(format!("{}{suffix}", path.display()), b"x").unwrap();
        }
        let other = session_path(dir.path(), "acc_2").unwrap();
        std::fs::write(&other, b"x").unwrap();
        assert!(session_exists(&path));

        remove_session(&path).unwrap();

        assert!(!session_exists(&path));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec!["acc_2.db".to_string()]);
        // Removing again (nothing there) is not an error.
        remove_session(&path).unwrap();
    }
}
