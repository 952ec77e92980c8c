//! `whatan migrate --from-sqlite FILE`: copy a SQLite database, every table
//! the two schemas share, into an empty PostgreSQL database, in one
//! transaction, so a failed copy leaves the target empty. The file is read
//! in one snapshot, under its `serve` lock (a running server is refused).
//!
//! Tables are copied in the order `schema.postgres.sql` creates them, which
//! puts every referenced table before the tables that reference it. Rows
//! keep their ids and sequence numbers; each identity column's counter then
//! starts after the largest copied value, so the next insert does not
//! collide. What belongs to a running node (leases, node heartbeats) is not
//! copied.

use std::path::Path;

use super::db::{Conn, ToParam, Value};
use super::{postgres, Location, Store, StoreError};

/// Tables that describe the nodes serving a database, not its data.
const NODE_TABLES: &[&str] = &["whatan_schema", "leases", "nodes"];

/// Rows copied per table, in copy order.
pub type Copied = Vec<(String, u64)>;

/// Copy the SQLite file at `file` into the store's PostgreSQL database. The
/// file is migrated to this whatan's schema first, as any command would.
/// The file stays locked against `serve` while the returned lock lives, so
/// the caller can copy what lies beside it (linked sessions) unchanged.
pub fn from_sqlite_file(
    store: &Store,
    file: &Path,
) -> Result<(Copied, super::lock::ServeLock), StoreError> {
    if !file.is_file() {
        return Err(StoreError::NotFound(format!(
            "no SQLite database at {}",
            file.display()
        )));
    }
    let Location::Postgres(_) = &*store.location else {
        return Err(StoreError::Invalid(
            "--from-sqlite copies into PostgreSQL: set database.url (or WHATAN_DATABASE_URL)"
                .into(),
        ));
    };
    // No `serve` may write the file meanwhile: its lock is held for the copy.
    let serving = super::lock::ServeLock::acquire(file).map_err(|e| match e {
        super::lock::LockError::Held { .. } => StoreError::Conflict(format!(
            "{} is being served by a running whatan; stop it before copying",
            file.display()
        )),
        e => StoreError::Invalid(e.to_string()),
    })?;
    // On a thread of its own: the blocking client must not run on an async
    // runtime's thread.
    let copied = std::thread::scope(|s| {
        s.spawn(|| {
            let mut source = super::open_connection(file)?;
            super::migrate(&mut source)?;
            // One snapshot of the file for every table.
            source.execute_batch("BEGIN")?;
            let target = store.location.connect()?;
            copy_from_sqlite(&source, &target)
        })
        .join()
        .map_err(|_| StoreError::Internal("copying panicked".into()))?
    })?;
    Ok((copied, serving))
}

/// Copy every shared table of the SQLite file `source` (already migrated to
/// this whatan's schema) into `target`, a PostgreSQL database at the same
/// schema version whose tables are all empty.
pub fn copy_from_sqlite(source: &Conn, target: &Conn) -> Result<Copied, StoreError> {
    let sqlite = source
        .sqlite()
        .ok_or_else(|| StoreError::Invalid("--from-sqlite reads a SQLite file".into()))?;
    target.execute_batch("BEGIN")?;
    let outcome = copy_tables(sqlite, target);
    match outcome {
        Ok(_) => target.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = target.execute_batch("ROLLBACK");
        }
    }
    outcome
}

fn copy_tables(source: &rusqlite::Connection, target: &Conn) -> Result<Copied, StoreError> {
    let tables: Vec<String> = postgres::table_order()
        .into_iter()
        .filter(|t| !NODE_TABLES.contains(&t.as_str()))
        .collect();
    for table in &tables {
        let rows: i64 =
            target.query_row(&format!("SELECT count(*) FROM {table}"), (), |r| r.get(0))?;
        if rows > 0 {
            return Err(StoreError::Conflict(format!(
                "the PostgreSQL database is not empty (table {table} has {rows} rows); --from-sqlite copies into an empty database only"
            )));
        }
    }
    let mut copied = Vec::new();
    for table in &tables {
        let columns = target_columns(target, table)?;
        check_source_columns(source, table, &columns)?;
        let list = columns.join(", ");
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let mut insert = target.prepare(&format!(
            "INSERT INTO {table} ({list}) VALUES ({})",
            placeholders.join(", ")
        ))?;
        let mut select = source
            .prepare(&format!("SELECT {list} FROM {table}"))
            .map_err(super::db::Error::from)?;
        let mut rows = select.query(()).map_err(super::db::Error::from)?;
        let mut count = 0u64;
        while let Some(row) = rows.next().map_err(super::db::Error::from)? {
            let values = (0..columns.len())
                .map(|i| row.get_ref(i).map(from_sqlite))
                .collect::<Result<Vec<Value<'_>>, _>>()
                .map_err(super::db::Error::from)?;
            let params: Vec<&dyn ToParam> = values.iter().map(|v| v as &dyn ToParam).collect();
            insert.execute(params.as_slice())?;
            count += 1;
        }
        reset_identities(target, table)?;
        copied.push((table.clone(), count));
    }
    Ok(copied)
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value<'_> {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(r) => Value::Real(r),
        // The schema keeps text as UTF-8; anything else goes as bytes and
        // PostgreSQL refuses it with the table's name in the error.
        ValueRef::Text(t) => std::str::from_utf8(t).map_or(Value::Blob(t), Value::Text),
        ValueRef::Blob(b) => Value::Blob(b),
    }
}

/// The target table's columns, in their order.
fn target_columns(target: &Conn, table: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = target.prepare(
        "SELECT column_name FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = ?1 ORDER BY ordinal_position",
    )?;
    let columns = stmt.query_map([table], |r| r.get::<_, String>(0))?;
    Ok(columns.collect::<Result<_, _>>()?)
}

/// Both schemas are at the same version, so their columns match; a file
/// changed by hand is refused before anything is copied from it.
fn check_source_columns(
    source: &rusqlite::Connection,
    table: &str,
    columns: &[String],
) -> Result<(), StoreError> {
    let mut stmt = source
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .map_err(super::db::Error::from)?;
    let mut present: Vec<String> = stmt
        .query_map([table], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(super::db::Error::from)?;
    let mut wanted = columns.to_vec();
    present.sort();
    wanted.sort();
    if present != wanted {
        return Err(StoreError::Invalid(format!(
            "table {table} has columns {present:?} in the SQLite file but {wanted:?} on PostgreSQL; is the file from another whatan?"
        )));
    }
    Ok(())
}

/// Start each identity counter of `table` after its largest copied value.
fn reset_identities(target: &Conn, table: &str) -> Result<(), StoreError> {
    let mut stmt = target.prepare(
        "SELECT column_name FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = ?1 AND is_identity = 'YES'",
    )?;
    let identities: Vec<String> = stmt
        .query_map([table], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for column in identities {
        target.query_row(
            &format!(
                "SELECT setval(pg_get_serial_sequence(?1, ?2), COALESCE((SELECT max({column}) FROM {table}), 0) + 1, false)"
            ),
            [table, column.as_str()],
            |_| Ok(()),
        )?;
    }
    Ok(())
}
