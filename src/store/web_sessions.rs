//! Linked-device sessions as rows (`web_session_rows`), on PostgreSQL: one
//! account's WhatsApp Web state (Signal sessions, keys, app-state sync...)
//! as `(kind, key) -> (value, ts)`, so that whichever node holds the
//! account's lease can load it. What the kinds and keys mean is the
//! linked-device crate's business (`whatan_web::rows`); here they are
//! numbers and bytes.
//!
//! Keys compare as bytes on both engines (SQLite BLOB, PostgreSQL bytea),
//! so a prefix is a key range.

use super::db::params;
use super::{Conn, StoreError};

/// One stored row: key, value, ts.
pub type Row = (Vec<u8>, Vec<u8>, i64);

pub fn get(
    conn: &Conn,
    account_id: &str,
    kind: i64,
    key: &[u8],
) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
    value_and_ts(
        conn,
        "SELECT value, ts FROM web_session_rows WHERE account_id = ?1 AND kind = ?2 AND row_key = ?3",
        account_id,
        kind,
        key,
    )
}

/// The value and ts of the one row `sql` (over account, kind, key) yields.
fn value_and_ts(
    conn: &Conn,
    sql: &str,
    account_id: &str,
    kind: i64,
    key: &[u8],
) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query_map(params![account_id, kind, key], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
    })?;
    Ok(rows.next().transpose()?)
}

/// The rows of `kind` whose key starts with `prefix`, in key order.
pub fn scan(
    conn: &Conn,
    account_id: &str,
    kind: i64,
    prefix: &[u8],
) -> Result<Vec<Row>, StoreError> {
    let map = |r: &super::db::Row<'_>| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
        ))
    };
    let rows = match after_prefix(prefix) {
        Some(end) => conn
            .prepare_cached(
                "SELECT row_key, value, ts FROM web_session_rows
                 WHERE account_id = ?1 AND kind = ?2 AND row_key >= ?3 AND row_key < ?4
                 ORDER BY row_key",
            )?
            .query_map(params![account_id, kind, prefix, end], map)?,
        None => conn
            .prepare_cached(
                "SELECT row_key, value, ts FROM web_session_rows
                 WHERE account_id = ?1 AND kind = ?2 AND row_key >= ?3
                 ORDER BY row_key",
            )?
            .query_map(params![account_id, kind, prefix], map)?,
    };
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn put(
    conn: &Conn,
    account_id: &str,
    kind: i64,
    key: &[u8],
    value: &[u8],
    ts: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO web_session_rows (account_id, kind, row_key, value, ts)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (account_id, kind, row_key) DO UPDATE SET value = excluded.value, ts = excluded.ts",
    )?
    .execute(params![account_id, kind, key, value, ts])?;
    Ok(())
}

/// Set the `ts` of one row, if it exists (never inserts).
pub fn set_ts(
    conn: &Conn,
    account_id: &str,
    kind: i64,
    key: &[u8],
    ts: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE web_session_rows SET ts = ?4 WHERE account_id = ?1 AND kind = ?2 AND row_key = ?3",
    )?
    .execute(params![account_id, kind, key, ts])?;
    Ok(())
}

/// Remove one row and return its value and ts, in one statement.
pub fn take(
    conn: &Conn,
    account_id: &str,
    kind: i64,
    key: &[u8],
) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
    value_and_ts(
        conn,
        "DELETE FROM web_session_rows WHERE account_id = ?1 AND kind = ?2 AND row_key = ?3
         RETURNING value, ts",
        account_id,
        kind,
        key,
    )
}

/// Remove the rows of `kind` whose key starts with `prefix` (one row when
/// `exact`). Returns how many went.
pub fn delete(
    conn: &Conn,
    account_id: &str,
    kind: i64,
    key: &[u8],
    exact: bool,
) -> Result<u64, StoreError> {
    let removed = if exact {
        conn.prepare_cached(
            "DELETE FROM web_session_rows WHERE account_id = ?1 AND kind = ?2 AND row_key = ?3",
        )?
        .execute(params![account_id, kind, key])?
    } else {
        match after_prefix(key) {
            Some(end) => conn
                .prepare_cached(
                    "DELETE FROM web_session_rows
                     WHERE account_id = ?1 AND kind = ?2 AND row_key >= ?3 AND row_key < ?4",
                )?
                .execute(params![account_id, kind, key, end])?,
            None => conn
                .prepare_cached(
                    "DELETE FROM web_session_rows
                     WHERE account_id = ?1 AND kind = ?2 AND row_key >= ?3",
                )?
                .execute(params![account_id, kind, key])?,
        }
    };
    Ok(removed as u64)
}

/// Remove the rows of `kind` with `0 < ts <= up_to`.
pub fn delete_expired(
    conn: &Conn,
    account_id: &str,
    kind: i64,
    up_to: i64,
) -> Result<u64, StoreError> {
    let removed = conn
        .prepare_cached(
            "DELETE FROM web_session_rows
             WHERE account_id = ?1 AND kind = ?2 AND ts > 0 AND ts <= ?3",
        )?
        .execute(params![account_id, kind, up_to])?;
    Ok(removed as u64)
}

/// Remove an account's whole session.
pub fn clear(conn: &Conn, account_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM web_session_rows WHERE account_id = ?1")?
        .execute(params![account_id])?;
    Ok(())
}

/// The smallest key greater than every key that starts with `prefix`, or
/// None when there is none (an empty prefix, or all 0xFF).
fn after_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db;

    #[test]
    fn the_end_of_a_prefix_range_is_the_next_key_up() {
        assert_eq!(after_prefix(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(after_prefix(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(after_prefix(b"\xff\xff"), None);
        assert_eq!(after_prefix(b""), None);
    }

    #[test]
    fn rows_are_scanned_by_prefix_in_byte_order_and_removed_by_range() {
        let conn = test_db("");
        for key in [&b"b\0x"[..], b"a\0z", b"a\0y", b"a\xff", b"ab"] {
            put(&conn, "acc", 3, key, b"v", 0).unwrap();
        }
        put(&conn, "acc", 4, b"a\0z", b"other kind", 0).unwrap();
        put(&conn, "other", 3, b"a\0z", b"other account", 0).unwrap();
        let keys = |prefix: &[u8]| -> Vec<Vec<u8>> {
            scan(&conn, "acc", 3, prefix)
                .unwrap()
                .into_iter()
                .map(|(k, _, _)| k)
                .collect()
        };
        assert_eq!(keys(b"a\0"), vec![b"a\0y".to_vec(), b"a\0z".to_vec()]);
        assert_eq!(keys(b"").len(), 5);
        assert_eq!(keys(b"a\xff"), vec![b"a\xff".to_vec()]);

        assert_eq!(delete(&conn, "acc", 3, b"a\0", false).unwrap(), 2);
        assert_eq!(keys(b"").len(), 3);
        assert_eq!(delete(&conn, "acc", 3, b"ab", true).unwrap(), 1);
        assert_eq!(
            get(&conn, "acc", 4, b"a\0z").unwrap(),
            Some((b"other kind".to_vec(), 0))
        );

        set_ts(&conn, "acc", 4, b"a\0z", 9).unwrap();
        set_ts(&conn, "acc", 4, b"gone", 9).unwrap();
        assert_eq!(
            get(&conn, "acc", 4, b"a\0z").unwrap(),
            Some((b"other kind".to_vec(), 9))
        );
        assert_eq!(
            get(&conn, "acc", 4, b"gone").unwrap(),
            None,
            "set_ts never inserts"
        );
        assert_eq!(
            take(&conn, "acc", 4, b"a\0z").unwrap(),
            Some((b"other kind".to_vec(), 9))
        );
        assert_eq!(take(&conn, "acc", 4, b"a\0z").unwrap(), None, "taken once");

        put(&conn, "acc", 3, b"t1", b"", 10).unwrap();
        put(&conn, "acc", 3, b"t2", b"", 20).unwrap();
        assert_eq!(delete_expired(&conn, "acc", 3, 10).unwrap(), 1);
        assert!(get(&conn, "acc", 3, b"t2").unwrap().is_some());

        clear(&conn, "acc").unwrap();
        assert!(scan(&conn, "acc", 3, b"").unwrap().is_empty());
        assert!(get(&conn, "other", 3, b"a\0z").unwrap().is_some());
    }
}
