//! The sandbox network's durable record of what "reached phones". Kept in
//! the same file so `whatan sandbox outbox` can show it from the CLI; the
//! primary key de-duplicates by message id, as WhatsApp does.

use super::db::params;
use super::Conn;
use serde::Serialize;

use super::StoreError;

#[derive(Debug, Clone, Serialize)]
pub struct OutboxEntry {
    #[serde(rename = "messageId")]
    pub message_id: String,
    #[serde(rename = "accountId")]
    pub account_id: String,
    pub from: String,
    pub to: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub body: serde_json::Value,
    #[serde(rename = "deliveredAt")]
    pub delivered_at: String,
}

/// Record a delivery; returns false if this message id was already delivered.
#[allow(clippy::too_many_arguments)]
pub fn record(
    conn: &Conn,
    message_id: &str,
    account_id: &str,
    from: &str,
    to: &str,
    type_name: &str,
    body: &serde_json::Value,
    now: i64,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO sandbox_outbox (message_id, account_id, from_phone, to_phone, type, body, delivered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (message_id) DO NOTHING",
        )?
        .execute(params![message_id, account_id, from, to, type_name, body.to_string(), now])?;
    Ok(n > 0)
}

/// Log one hand-off as the network received it, duplicates included, with
/// the node and fence it came under. A hand-off under a fence that is no
/// longer the account's current one is refused in the same statement (the
/// network only hears the linked device of the lease's holder), logged as
/// refused: false.
pub fn record_handoff(
    conn: &Conn,
    message_id: &str,
    account_id: &str,
    redelivery: bool,
    lease: Option<&crate::driver::LeaseRef>,
    now: i64,
) -> Result<bool, StoreError> {
    let (node_id, fence) = match lease {
        Some(l) => (Some(&*l.node_id), Some(l.fence)),
        None => (None, None),
    };
    let refused: i64 = conn
        .prepare_cached(
            "INSERT INTO sandbox_handoffs (message_id, account_id, redelivery, received_at, node_id, fence, refused)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN CAST(?6 AS BIGINT) IS NULL
                 OR EXISTS (SELECT 1 FROM leases WHERE account_id = ?2 AND fence = ?6) THEN 0 ELSE 1 END)
             RETURNING refused",
        )?
        .query_row(params![message_id, account_id, redelivery, now, node_id, fence], |r| r.get(0))?;
    Ok(refused == 0)
}

pub fn list(conn: &Conn) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT message_id, account_id, from_phone, to_phone, type, body, delivered_at
         FROM sandbox_outbox ORDER BY delivered_at, message_id",
    )?;
    let rows = stmt.query_map((), |r| {
        let body: String = r.get(5)?;
        Ok(OutboxEntry {
            message_id: r.get(0)?,
            account_id: r.get(1)?,
            from: r.get(2)?,
            to: r.get(3)?,
            type_name: r.get(4)?,
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
            delivered_at: crate::clock::rfc3339_ms(r.get(6)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
