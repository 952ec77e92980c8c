//! One `serve` per database. Two servers on one file would each run pacers
//! over the same queue and hand the same attempt to WhatsApp twice, and each
//! believe its writer is the only one. `serve` therefore holds an exclusive
//! lock on `<database>.lock` for as long as it runs; the admin CLI never
//! takes it, so it keeps working beside a running server.
//!
//! The lock is an advisory `flock` (`File::try_lock`) on a file of its own,
//! not on the database, so it cannot meddle with SQLite's locks on the
//! database file (on some systems `flock` and SQLite's POSIX locks are one
//! and the same). The kernel releases it when the process ends, however it
//! ends, so a crash never leaves a stale lock.
//! The file holds the holder's pid, for the message the second server
//! prints; the file is never removed (removing it would let a third server
//! lock a new file while the second still waits on the old one).

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::files::{create_private_dir_all, private_file_options};

/// Held while `serve` runs; dropping it releases the lock.
#[derive(Debug)]
pub struct ServeLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; `pid` is what it wrote, if it could be read.
    Held {
        lock_path: PathBuf,
        pid: Option<u32>,
    },
    Io {
        lock_path: PathBuf,
        error: std::io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held { lock_path, pid } => {
                let holder = match pid {
                    Some(pid) => format!("pid {pid}"),
                    None => "another process (pid unknown)".to_string(),
                };
                write!(f, "held by {holder} (lock file {})", lock_path.display())
            }
            LockError::Io { lock_path, error } => {
                write!(f, "cannot lock {}: {error}", lock_path.display())
            }
        }
    }
}

/// `<database>.lock`, next to the database.
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// How long to wait for a holder that has just taken the lock to write its
/// pid (it writes right after locking).
const PID_WAIT: Duration = Duration::from_secs(1);

impl ServeLock {
    /// Take the lock of `database` without waiting, and write our pid in it.
    /// Creates the lock file (0600) and its directory (0700) if missing.
    pub fn acquire(database: &Path) -> Result<ServeLock, LockError> {
        let lock_path = lock_path(database);
        let io_error = |error| LockError::Io {
            lock_path: lock_path.clone(),
            error,
        };
        if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir_all(dir).map_err(io_error)?;
        }
        // Opened without truncating: if another server holds the lock, its
        // pid must survive our open.
        let mut file = private_file_options().open(&lock_path).map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    pid: read_holder_pid(&mut file),
                    lock_path,
                })
            }
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io_error)?;
        Ok(ServeLock { _file: file })
    }
}

/// The pid the holder wrote. A holder that has just locked may not have
/// written it yet, so an empty file is read again for up to [`PID_WAIT`].
fn read_holder_pid(file: &mut File) -> Option<u32> {
    let deadline = Instant::now() + PID_WAIT;
    loop {
        let mut text = String::new();
        let read = file.rewind().and_then(|()| file.read_to_string(&mut text));
        if read.is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("w.db");
        let held = ServeLock::acquire(&db).unwrap();

        let second = ServeLock::acquire(&db).unwrap_err();

        match &second {
            LockError::Held { lock_path: p, pid } => {
                assert_eq!(p, &dir.path().join("w.db.lock"));
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(held);
        ServeLock::acquire(&db).expect("released when the holder is dropped");
    }

    #[test]
    fn another_database_in_the_same_directory_has_its_own_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _a = ServeLock::acquire(&dir.path().join("a.db")).unwrap();
        assert!(ServeLock::acquire(&dir.path().join("b.db")).is_ok());
    }
}
