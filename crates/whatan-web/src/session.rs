//! Where linked sessions live: one SQLite file per account,
//! `<database dir>/web-sessions/<account id>.db`, next to whatan's own
//! database so that backing up that directory keeps the links. The file holds
//! the device's keys (whoever has it can read and send as the account):
//! it is created readable by its owner only (0600, in a 0700 folder).

use std::io;
use std::path::{Path, PathBuf};

use crate::WebError;

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
