//! What only the PostgreSQL store has: its migrations (`schema.postgres.sql`,
//! applied under an advisory lock so that nodes starting together are safe).

use super::db::{Conn, OptionalExtension};
use super::StoreError;

/// The schema on PostgreSQL, as ordered migrations (see its header).
const SCHEMA: &str = include_str!("../../schema.postgres.sql");

/// The advisory lock every node takes to migrate ("whatan" in ASCII).
const MIGRATION_LOCK: i64 = 0x7768_6174_616e;

/// The blocks of `schema.postgres.sql`: `(version, sql)`.
pub fn migrations() -> Vec<(i64, String)> {
    super::split_migrations(SCHEMA)
}

/// The tables `schema.postgres.sql` creates, in the order it creates them:
/// a referenced table always comes before the tables that reference it.
pub fn table_order() -> Vec<String> {
    let mut tables: Vec<String> = Vec::new();
    for line in SCHEMA.lines() {
        let Some(rest) = line.trim_start().strip_prefix("CREATE TABLE ") else {
            continue;
        };
        let rest = rest.strip_prefix("IF NOT EXISTS ").unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !tables.contains(&name) {
            tables.push(name);
        }
    }
    tables
}

/// The version `whatan_schema` records (0 before the first migration).
pub fn schema_version(conn: &Conn) -> Result<i64, StoreError> {
    let exists: bool =
        conn.query_row("SELECT to_regclass('whatan_schema') IS NOT NULL", (), |r| {
            r.get(0)
        })?;
    if !exists {
        return Ok(0);
    }
    Ok(conn
        .query_row("SELECT version FROM whatan_schema", (), |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Apply every migration newer than the one `whatan_schema` records, in one
/// transaction holding the migration lock.
pub fn migrate(conn: &Conn) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN")?;
    let outcome = migrate_in_transaction(conn);
    match outcome {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    outcome
}

fn migrate_in_transaction(conn: &Conn) -> Result<(), StoreError> {
    conn.query_row("SELECT pg_advisory_xact_lock(?1)", [MIGRATION_LOCK], |_| {
        Ok(())
    })?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS whatan_schema (version BIGINT NOT NULL)")?;
    let current: i64 = conn
        .query_row("SELECT version FROM whatan_schema", (), |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    for (version, sql) in super::pending_migrations(migrations(), current)? {
        conn.execute_batch(&sql)?;
        conn.execute("DELETE FROM whatan_schema", ())?;
        conn.execute("INSERT INTO whatan_schema (version) VALUES (?1)", [version])?;
    }
    Ok(())
}

/// The lock that keeps a second `serve` with the same node id off a
/// PostgreSQL database, held for as long as its connection is open (a
/// session advisory lock, so it goes with the process, however it ends).
///
/// Leases are renewed by node id: two live nodes with one id would both
/// drive that id's accounts. Nodes with different ids share the database.
pub struct NodeLock {
    _conn: Conn,
}

impl NodeLock {
    pub fn acquire(url: &str, node_id: &str) -> Result<NodeLock, StoreError> {
        let conn = Conn::Pg(Box::new(super::db::PgConn::connect(url)?));
        let locked: bool = conn.query_row(
            "SELECT pg_try_advisory_lock(?1)",
            [node_lock_key(node_id)],
            |r| r.get(0),
        )?;
        if !locked {
            return Err(StoreError::Conflict(format!(
                "a whatan with node id {node_id:?} already serves this PostgreSQL database; give each node its own cluster.node_id"
            )));
        }
        Ok(NodeLock { _conn: conn })
    }
}

/// The advisory lock key of a node id: FNV-1a, 64 bits, over a prefix and
/// the id (stable across builds, unlike std's hasher).
fn node_lock_key(node_id: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "whatan node ".bytes().chain(node_id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}
