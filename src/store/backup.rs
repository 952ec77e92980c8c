//! `whatan backup FILE`: a consistent copy of the database taken while
//! `serve` runs. `VACUUM INTO` reads one snapshot (a read transaction, which
//! under WAL never blocks the writer or waits for it) and writes a compact,
//! self-contained database file: no `-wal` beside it, opens with plain
//! `sqlite3`. Restoring is: stop `serve`, put the file in place, start it.
//! A PostgreSQL store is backed up with PostgreSQL's own tools.

use std::path::Path;

use super::{files, Store, StoreError};

/// Copy the database to `dest`, created 0600; returns its size in bytes. An
/// existing `dest` is refused rather than overwritten; a failed copy leaves
/// no file behind.
pub fn backup_to(store: &Store, dest: &Path) -> Result<u64, StoreError> {
    if store.path().is_none() {
        return Err(StoreError::Invalid(
            "the store is PostgreSQL: back it up with pg_dump or the server's own backups (whatan backup copies the SQLite file)".into(),
        ));
    }
    if dest.exists() {
        return Err(StoreError::Invalid(format!(
            "{} already exists; choose a new file",
            dest.display()
        )));
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::create_private_dir_all(dir).map_err(|e| {
            StoreError::Invalid(format!("cannot create directory {}: {e}", dir.display()))
        })?;
    }
    // Created empty with its mode first: SQLite would create it with the
    // umask's (usually world-readable), and accepts an empty target.
    files::create_private_file(dest)
        .map_err(|e| StoreError::Invalid(format!("cannot create {}: {e}", dest.display())))?;
    let target = dest.to_string_lossy().into_owned();
    let copied = store.read_blocking(move |c| {
        c.execute("VACUUM INTO ?1", [&target])?;
        Ok(())
    });
    if let Err(e) = copied {
        let _ = std::fs::remove_file(dest);
        return Err(e);
    }
    std::fs::metadata(dest)
        .map(|m| m.len())
        .map_err(|e| StoreError::Internal(format!("cannot read {}: {e}", dest.display())))
}
