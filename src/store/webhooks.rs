//! Webhook endpoints and their deliveries: the durable half of status push.
//!
//! Events are written by [`emit`] inside the write job of the change that
//! causes them (an attempt's transition, an account's new state), so they
//! commit or roll back with it: a crash can neither lose an event nor emit
//! one for a change that did not commit. One row per event and endpoint; the
//! dispatcher (`crate::webhooks`) sends the due ones and records each try.

use super::db::{params, OptionalExtension, Row};
use super::Conn;
use serde::Serialize;
use serde_json::{json, Value};

use super::StoreError;
use crate::clock::rfc3339_ms;
use crate::webhooks::sign::SigningKey;

/// Every event type, in the order webhooks.md lists them (the default
/// subscription).
pub const EVENT_TYPES: &[&str] = &[
    "message.accepted",
    "message.delivered",
    "message.read",
    "message.failed",
    "account.connected",
    "account.disconnected",
    "account.logged_out",
    "account.banned",
];

/// An endpoint as listed: never its key.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub id: String,
    #[serde(skip)]
    pub workspace_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub status: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
}

/// What the dispatcher needs to send to one endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub url: String,
    /// The current key, then the previous one while it is still live.
    pub keys: Vec<SigningKey>,
}

/// A delivery as `webhook deliveries` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: String,
    #[serde(rename = "eventId")]
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub status: String,
    pub attempts: i64,
    #[serde(rename = "lastStatusCode")]
    pub last_status_code: Option<i64>,
    #[serde(rename = "lastError")]
    pub last_error: Option<String>,
    #[serde(rename = "nextAttemptAt")]
    pub next_attempt_at: Option<String>,
    #[serde(rename = "createdAt")]
    pub created_at: String,
}

/// A due delivery, with what goes on the wire.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: String,
    pub event_id: String,
    pub body: String,
    pub attempts: i64,
}

const ENDPOINT_COLUMNS: &str = "id, workspace_id, url, events, description, status, created_at";

fn endpoint_from_row(r: &Row<'_>) -> super::db::Result<Endpoint> {
    let events: String = r.get(3)?;
    Ok(Endpoint {
        id: r.get(0)?,
        workspace_id: r.get(1)?,
        url: r.get(2)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        description: r.get(4)?,
        status: r.get(5)?,
        created_at: rfc3339_ms(r.get(6)?),
    })
}

/// `whk_`, `evt_` or `dlv_` and a time-ordered UUID: deliveries are
/// inserted at the end of their `id` index.
fn new_id(prefix: &str, now: i64) -> String {
    format!("{prefix}_{}", super::time_ordered_uuid(now).simple())
}

/// Add an endpoint, or re-enable the workspace's disabled endpoint of the
/// same URL with a new key (webhooks.md: `webhook add` of the same URL
/// enables it). Returns the endpoint.
pub fn add_endpoint(
    conn: &Conn,
    workspace: &str,
    url: &str,
    events: &[String],
    description: Option<&str>,
    key: &SigningKey,
    now: i64,
) -> Result<Endpoint, StoreError> {
    let events_json = serde_json::to_string(events).unwrap_or_else(|_| "[]".into());
    let disabled: Option<String> = conn
        .prepare_cached(
            "SELECT id FROM webhook_endpoints
             WHERE workspace_id = ?1 AND url = ?2 AND status = 'disabled' LIMIT 1",
        )?
        .query_row(params![workspace, url], |r| r.get(0))
        .optional()?;
    let id = match disabled {
        Some(id) => {
            conn.execute(
                "UPDATE webhook_endpoints SET status = 'enabled', failing_since = NULL,
                     events = ?2, description = COALESCE(?3, description),
                     signing_key = ?4, previous_key = NULL, previous_until = NULL
                 WHERE id = ?1",
                params![id, events_json, description, key.to_bytes()],
            )?;
            id
        }
        None => {
            let id = new_id("whk", now);
            conn.execute(
                "INSERT INTO webhook_endpoints
                     (id, workspace_id, url, events, description, signing_key, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'enabled', ?7)",
                params![
                    id,
                    workspace,
                    url,
                    events_json,
                    description,
                    key.to_bytes(),
                    now
                ],
            )?;
            id
        }
    };
    get_endpoint(conn, &id)?.ok_or_else(|| StoreError::Internal("endpoint vanished".into()))
}

pub fn get_endpoint(conn: &Conn, id: &str) -> Result<Option<Endpoint>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?1"
        ))?
        .query_row([id], endpoint_from_row)
        .optional()?)
}

/// The endpoints of one workspace, or of all (`None`), oldest first.
pub fn list_endpoints(conn: &Conn, workspace: Option<&str>) -> Result<Vec<Endpoint>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
         WHERE CAST(?1 AS TEXT) IS NULL OR workspace_id = ?1 ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([workspace], endpoint_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Remove an endpoint and its deliveries; whether it existed.
/// Enable an endpoint of `workspace` that failing disabled (the
/// dashboard's action): it gets new events again, its failure clock starts
/// over. An enabled one is left as it is. Returns whether the endpoint
/// exists in `workspace`.
pub fn enable_endpoint(conn: &Conn, workspace: &str, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE webhook_endpoints
             SET failing_since = CASE status WHEN 'disabled' THEN NULL ELSE failing_since END,
                 status = 'enabled'
             WHERE id = ?1 AND workspace_id = ?2",
        )?
        .execute([id, workspace])?
        > 0)
}

pub fn remove_endpoint(conn: &Conn, id: &str) -> Result<bool, StoreError> {
    conn.execute(
        "DELETE FROM webhook_deliveries WHERE endpoint_id = ?1",
        [id],
    )?;
    Ok(conn.execute("DELETE FROM webhook_endpoints WHERE id = ?1", [id])? > 0)
}

/// A new current key; the old one keeps signing until `previous_until`.
pub fn rotate_key(
    conn: &Conn,
    id: &str,
    key: &SigningKey,
    previous_until: i64,
) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE webhook_endpoints SET previous_key = signing_key, previous_until = ?3,
             signing_key = ?2
         WHERE id = ?1",
        params![id, key.to_bytes(), previous_until],
    )? > 0)
}

/// How many deliveries `webhook deliveries` and its route show.
pub const RECENT_DELIVERIES: usize = 100;

/// The recent deliveries of an endpoint, newest first.
pub fn deliveries(
    conn: &Conn,
    endpoint: &str,
    failed_only: bool,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    // Two statements, so each is one index walk: the failed ones have an
    // index of their own.
    let sql = if failed_only {
        format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries INDEXED BY webhook_deliveries_failed
             WHERE endpoint_id = ?1 AND status = 'failed' ORDER BY seq DESC LIMIT ?2"
        )
    } else {
        format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries INDEXED BY webhook_deliveries_by_endpoint
             WHERE endpoint_id = ?1 ORDER BY seq DESC LIMIT ?2"
        )
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![endpoint, limit as i64], delivery_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const DELIVERY_COLUMNS: &str = "id, event_id, type, status, attempts, last_status_code, last_error, next_attempt_at, created_at";

fn delivery_from_row(r: &Row<'_>) -> super::db::Result<Delivery> {
    let status: String = r.get(3)?;
    let next: i64 = r.get(7)?;
    Ok(Delivery {
        id: r.get(0)?,
        event_id: r.get(1)?,
        event_type: r.get(2)?,
        next_attempt_at: (status == "pending").then(|| rfc3339_ms(next)),
        status,
        attempts: r.get(4)?,
        last_status_code: r.get(5)?,
        last_error: r.get(6)?,
        created_at: rfc3339_ms(r.get(8)?),
    })
}

/// One delivery by id.
pub fn get_delivery(conn: &Conn, id: &str) -> Result<Option<Delivery>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1"
        ))?
        .query_row([id], delivery_from_row)
        .optional()?)
}

/// Queue a delivery's event again: a new delivery with the same
/// `webhook-id` and body, due now. Returns the new delivery; `None` when
/// there is no such delivery (in `workspace`, when given: the API and the
/// dashboard act only on their workspace's, the operator's CLI on any).
pub fn redeliver(
    conn: &Conn,
    id: &str,
    workspace: Option<&str>,
    now: i64,
) -> Result<Option<Delivery>, StoreError> {
    let new = new_id("dlv", now);
    let changed = conn.execute(
        "INSERT INTO webhook_deliveries
             (id, endpoint_id, event_id, type, body, status, next_attempt_at, created_at, updated_at)
         SELECT ?2, d.endpoint_id, d.event_id, d.type, d.body, 'pending', ?3, ?3, ?3
         FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
         WHERE d.id = ?1 AND (CAST(?4 AS TEXT) IS NULL OR e.workspace_id = ?4)",
        params![id, new, now, workspace],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    get_delivery(conn, &new)
}

/// Write `event_type` with `data()` for every enabled endpoint of
/// `workspace` that subscribes to it. Call it inside the write job of the
/// change itself. When no endpoint listens it costs one read of the
/// `webhook_endpoints_by_workspace` index, and `data` is never built.
pub fn emit(
    conn: &Conn,
    workspace: &str,
    event_type: &str,
    now: i64,
    data: impl FnOnce() -> Value,
) -> Result<usize, StoreError> {
    let endpoints: Vec<(String, String)> = conn
        .prepare_cached(
            "SELECT id, events FROM webhook_endpoints
             WHERE workspace_id = ?1 AND status = 'enabled'",
        )?
        .query_map([workspace], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let listening: Vec<String> = endpoints
        .into_iter()
        .filter(|(_, events)| {
            serde_json::from_str::<Vec<String>>(events)
                .is_ok_and(|e| e.iter().any(|t| t == event_type))
        })
        .map(|(id, _)| id)
        .collect();
    if listening.is_empty() {
        return Ok(0);
    }
    let body =
        json!({ "type": event_type, "timestamp": rfc3339_ms(now), "data": data() }).to_string();
    let event_id = new_id("evt", now);
    let mut insert = conn.prepare_cached(
        "INSERT INTO webhook_deliveries
             (id, endpoint_id, event_id, type, body, status, next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?6)",
    )?;
    for endpoint in &listening {
        insert.execute(params![
            new_id("dlv", now),
            endpoint,
            event_id,
            event_type,
            body,
            now
        ])?;
    }
    Ok(listening.len())
}

/// Enabled endpoints with a delivery due at `now`, with their keys.
pub fn targets_due(conn: &Conn, now: i64) -> Result<Vec<Target>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.id, e.url, e.signing_key, e.previous_key, e.previous_until
         FROM webhook_endpoints e
         WHERE e.status = 'enabled' AND EXISTS (
             SELECT 1 FROM webhook_deliveries d
             WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= ?1)",
    )?;
    let rows = stmt.query_map([now], |r| {
        let current: Vec<u8> = r.get(2)?;
        let previous: Option<Vec<u8>> = r.get(3)?;
        let until: Option<i64> = r.get(4)?;
        let mut keys: Vec<SigningKey> = SigningKey::from_bytes(&current).into_iter().collect();
        if let (Some(previous), Some(until)) = (previous, until) {
            if until > now {
                keys.extend(SigningKey::from_bytes(&previous));
            }
        }
        Ok(Target {
            id: r.get(0)?,
            url: r.get(1)?,
            keys,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Up to `limit` due deliveries of one endpoint, oldest due first.
pub fn due(conn: &Conn, endpoint: &str, now: i64, limit: usize) -> Result<Vec<Due>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, event_id, body, attempts FROM webhook_deliveries
         WHERE endpoint_id = ?1 AND status = 'pending' AND next_attempt_at <= ?2
         ORDER BY next_attempt_at LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![endpoint, now, limit as i64], |r| {
        Ok(Due {
            id: r.get(0)?,
            event_id: r.get(1)?,
            body: r.get(2)?,
            attempts: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How one try ended.
#[derive(Debug, Clone)]
pub enum TryOutcome {
    Delivered {
        status_code: u16,
    },
    /// Failed; try again at `next_at`, or give up (`None`).
    Failed {
        status_code: Option<u16>,
        error: String,
        next_at: Option<i64>,
    },
}

/// Record a try, and the endpoint's health: a success clears its failing
/// streak; a failure starts one, and a streak of `disable_after_ms` disables
/// the endpoint. Returns `true` when this try disabled it.
pub fn record_try(
    conn: &Conn,
    delivery: &str,
    endpoint: &str,
    outcome: &TryOutcome,
    disable_after_ms: i64,
    now: i64,
) -> Result<bool, StoreError> {
    match outcome {
        TryOutcome::Delivered { status_code } => {
            conn.prepare_cached(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1,
                     last_status_code = ?2, last_error = NULL, updated_at = ?3
                 WHERE id = ?1 AND status = 'pending'",
            )?
            .execute(params![delivery, status_code, now])?;
            conn.prepare_cached("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ?1")?
                .execute([endpoint])?;
            Ok(false)
        }
        TryOutcome::Failed {
            status_code,
            error,
            next_at,
        } => {
            conn.prepare_cached(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = ?2,
                     last_error = ?3, updated_at = ?4,
                     status = CASE WHEN CAST(?5 AS BIGINT) IS NULL THEN 'failed' ELSE 'pending' END,
                     next_attempt_at = COALESCE(?5, next_attempt_at)
                 WHERE id = ?1 AND status = 'pending'",
            )?
            .execute(params![delivery, status_code, error, now, next_at])?;
            let disabled = conn
                .prepare_cached(
                    "UPDATE webhook_endpoints SET
                         failing_since = COALESCE(failing_since, ?2),
                         status = CASE WHEN ?2 - COALESCE(failing_since, ?2) >= ?3
                                       THEN 'disabled' ELSE status END
                     WHERE id = ?1 AND status = 'enabled'
                     RETURNING status",
                )?
                .query_row(params![endpoint, now, disable_after_ms], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?;
            Ok(disabled.as_deref() == Some("disabled"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::sign::new_secret;

    fn db() -> Conn {
        crate::store::test_db(
            "INSERT INTO workspaces (id, name, created_at) VALUES ('w1', 'one', 0), ('w2', 'two', 0);",
        )
    }

    fn all() -> Vec<String> {
        EVENT_TYPES.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn events_go_to_the_workspaces_subscribed_enabled_endpoints() {
        let conn = db();
        let (_, key) = new_secret();
        let every = add_endpoint(&conn, "w1", "https://a.example/", &all(), None, &key, 1).unwrap();
        let reads = ["message.read".to_string()];
        add_endpoint(&conn, "w1", "https://b.example/", &reads, None, &key, 1).unwrap();
        add_endpoint(&conn, "w2", "https://c.example/", &all(), None, &key, 1).unwrap();

        assert_eq!(
            emit(&conn, "w1", "message.read", 5, || json!({"x": 1})).unwrap(),
            2
        );
        assert_eq!(
            emit(&conn, "w1", "message.failed", 6, || json!({})).unwrap(),
            1
        );
        let due = due(&conn, &every.id, 10, 10).unwrap();
        assert_eq!(due.len(), 2);
        let body: Value = serde_json::from_str(&due[0].body).unwrap();
        assert_eq!(body["type"], "message.read");
        assert_eq!(body["data"]["x"], 1);
        assert_eq!(body["timestamp"], rfc3339_ms(5));
        // One event, one webhook-id, whichever endpoint receives it.
        let ids: Vec<String> = conn
            .prepare("SELECT DISTINCT event_id FROM webhook_deliveries WHERE type = 'message.read'")
            .unwrap()
            .query_map((), |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids.len(), 1);
    }

    #[test]
    fn a_failing_streak_disables_and_add_of_the_same_url_enables_again() {
        let conn = db();
        let (_, key) = new_secret();
        let e = add_endpoint(&conn, "w1", "https://a.example/", &all(), None, &key, 0).unwrap();
        emit(&conn, "w1", "message.read", 0, || json!({})).unwrap();
        let d = &due(&conn, &e.id, 0, 1).unwrap()[0];
        let fail = |next_at| TryOutcome::Failed {
            status_code: Some(500),
            error: "HTTP 500".into(),
            next_at,
        };
        assert!(!record_try(&conn, &d.id, &e.id, &fail(Some(100)), 1000, 0).unwrap());
        assert!(!record_try(&conn, &d.id, &e.id, &fail(Some(200)), 1000, 999).unwrap());
        assert!(record_try(&conn, &d.id, &e.id, &fail(None), 1000, 1000).unwrap());
        assert_eq!(
            get_endpoint(&conn, &e.id).unwrap().unwrap().status,
            "disabled"
        );
        assert_eq!(deliveries(&conn, &e.id, true, 10).unwrap()[0].attempts, 3);
        // Disabled endpoints get no new events.
        assert_eq!(
            emit(&conn, "w1", "message.read", 1001, || json!({})).unwrap(),
            0
        );

        let again =
            add_endpoint(&conn, "w1", "https://a.example/", &all(), None, &key, 2000).unwrap();
        assert_eq!(
            (again.id.as_str(), again.status.as_str()),
            (e.id.as_str(), "enabled")
        );
    }

    #[test]
    fn a_success_ends_the_failing_streak() {
        let conn = db();
        let (_, key) = new_secret();
        let e = add_endpoint(&conn, "w1", "https://a.example/", &all(), None, &key, 0).unwrap();
        emit(&conn, "w1", "message.read", 0, || json!({})).unwrap();
        emit(&conn, "w1", "message.failed", 0, || json!({})).unwrap();
        let due = due(&conn, &e.id, 0, 2).unwrap();
        let fail = TryOutcome::Failed {
            status_code: None,
            error: "timeout".into(),
            next_at: Some(10),
        };
        record_try(&conn, &due[0].id, &e.id, &fail, 1000, 0).unwrap();
        record_try(
            &conn,
            &due[1].id,
            &e.id,
            &TryOutcome::Delivered { status_code: 204 },
            1000,
            500,
        )
        .unwrap();
        // A later failure starts a new streak instead of completing the old one.
        assert!(!record_try(&conn, &due[0].id, &e.id, &fail, 1000, 1200).unwrap());
        assert_eq!(
            get_endpoint(&conn, &e.id).unwrap().unwrap().status,
            "enabled"
        );
    }

    #[test]
    fn redelivery_keeps_the_webhook_id() {
        let conn = db();
        let (_, key) = new_secret();
        let e = add_endpoint(&conn, "w1", "https://a.example/", &all(), None, &key, 0).unwrap();
        emit(&conn, "w1", "message.read", 0, || json!({})).unwrap();
        let first = due(&conn, &e.id, 0, 1).unwrap().remove(0);
        record_try(
            &conn,
            &first.id,
            &e.id,
            &TryOutcome::Delivered { status_code: 200 },
            1000,
            1,
        )
        .unwrap();
        let again = redeliver(&conn, &first.id, None, 5).unwrap().unwrap().id;
        let queued = due(&conn, &e.id, 5, 10).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].id, again);
        assert_eq!(queued[0].event_id, first.event_id);
        assert_eq!(queued[0].body, first.body);
        assert!(redeliver(&conn, "dlv_unknown", None, 5).unwrap().is_none());
    }
}
