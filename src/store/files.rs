//! Files and directories whatan creates are its owner's only (files 0600,
//! directories 0700): the database holds message texts, phone numbers and
//! Cloud API secrets, and whoever reads a session file can send as the account.
//!
//! The process umask cannot be changed without `unsafe`, and a `chmod` after
//! creation leaves a moment in which the file is readable, so each file is
//! created with its mode from the start.
//!
//! The database's `-wal` and `-shm` files are not pre-created: SQLite makes
//! them whenever they are missing (after a clean close, or a copy of the
//! database file alone) and gives them the database file's mode and owner, so a private database has
//! private companions every time, not only the first. Pre-creating them would
//! also be wrong once: `root` running the CLI on a service's database would
//! leave root-owned companions the service cannot open, where SQLite hands
//! them to the database's owner.
//!
//! Files and directories that already exist are left as they are: their mode
//! is then the operator's choice.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

/// Mode of the files whatan creates.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of the directories whatan creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// `mkdir -p` with mode 0700 for each directory it creates.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(PRIVATE_DIR_MODE);
    builder.create(dir)
}

/// Options to read and write a file, creating it with mode 0600 if it is
/// missing (an existing one is opened as it is, never truncated).
pub fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    options.mode(PRIVATE_FILE_MODE);
    options
}

/// Create `path` empty with mode 0600 if it does not exist. An existing file
/// is not opened at all: it may be in use, or readable but not writable by
/// us, and then SQLite should be the one to say so.
pub fn create_private_file(path: &Path) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(PRIVATE_FILE_MODE);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_database_and_the_directories_above_it_are_private() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("state").join("whatan").join("w.db");

        create_private_dir_all(db.parent().unwrap()).unwrap();
        create_private_file(&db).unwrap();

        assert_eq!(mode(&db), 0o600);
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
        assert_eq!(mode(&root.path().join("state")), 0o700);
        assert_eq!(mode(&root.path().join("state/whatan")), 0o700);
    }

    #[test]
    fn existing_files_and_directories_are_left_as_they_are() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = root.path().join("w.db");
        std::fs::write(&db, b"kept").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();

        create_private_dir_all(root.path()).unwrap();
        create_private_file(&db).unwrap();

        assert_eq!(mode(&db), 0o640);
        assert_eq!(std::fs::read(&db).unwrap(), b"kept");
        assert_eq!(mode(root.path()), 0o755);
    }
}
