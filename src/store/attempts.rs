//! Send attempts: the enqueue transaction (idempotency claim, connection
//! check, daily counter and insert in one atomic write), status reads, the
//! pacer's claim / result / receipt transitions, and the sender's cancel.

use super::db::{params, OptionalExtension, Row};
use super::Conn;
use serde::Serialize;
use std::sync::LazyLock;

use super::StoreError;
use crate::clock::{rfc3339_ms, utc_day};
use crate::domain::error_codes::CANCELLED;
use crate::domain::{AccountStatus, AttemptStatus, SenderMode};

#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub seq: i64,
    pub id: String,
    pub workspace_id: String,
    pub account_id: String,
    pub user_id: String,
    pub mode: SenderMode,
    pub from_phone: String,
    pub to_phone: String,
    pub type_name: String,
    pub payload: String,
    pub status: AttemptStatus,
    pub message_id: Option<String>,
    pub remote_jid: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub tries: i64,
    /// The last hand-off certainly did not reach WhatsApp (the driver said
    /// "retry later" or "not connected"); a `sending` attempt without it was
    /// interrupted mid-hand-off and may have been sent.
    pub handoff_unsent: bool,
    /// When whatan last handed the message to WhatsApp.
    pub handed_off_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The page's status body, with whatan's added fields.
#[derive(Serialize)]
pub struct StatusBody<'a> {
    #[serde(rename = "sendAttemptId")]
    send_attempt_id: &'a str,
    status: &'a str,
    #[serde(rename = "messageId")]
    message_id: Option<&'a str>,
    #[serde(rename = "remoteJid")]
    remote_jid: Option<&'a str>,
    #[serde(rename = "errorCode")]
    error_code: Option<&'a str>,
    #[serde(rename = "errorMessage")]
    error_message: Option<&'a str>,
    #[serde(rename = "createdAt")]
    created_at: String,
    #[serde(rename = "updatedAt")]
    updated_at: String,
    // Additions to the page's body (the contract allows added fields).
    from: &'a str,
    to: &'a str,
    #[serde(rename = "type")]
    type_name: &'a str,
    /// When whatan last handed the message to WhatsApp.
    #[serde(rename = "sentAt")]
    sent_at: Option<String>,
}

impl AttemptRow {
    /// The body of `GET /api/v1/messages/{id}`: what the status endpoint,
    /// the MCP tools and `message.*` webhook events show of an attempt.
    pub fn status_body(&self) -> StatusBody<'_> {
        let a = self;
        StatusBody {
            send_attempt_id: &a.id,
            status: a.status.as_str(),
            message_id: a.message_id.as_deref(),
            remote_jid: a.remote_jid.as_deref(),
            error_code: a.error_code.as_deref(),
            error_message: a.error_message.as_deref(),
            created_at: rfc3339_ms(a.created_at),
            updated_at: rfc3339_ms(a.updated_at),
            from: &a.from_phone,
            to: &a.to_phone,
            type_name: &a.type_name,
            sent_at: a.handed_off_at.map(rfc3339_ms),
        }
    }
}

pub(super) const ATTEMPT_COLUMNS: &str = "seq, id, workspace_id, account_id, user_id, mode, from_phone, to_phone, type, payload, status, message_id, remote_jid, error_code, error_message, tries, created_at, updated_at, handoff_unsent, handed_off_at";

pub(super) fn attempt_from_row(r: &Row<'_>) -> super::db::Result<AttemptRow> {
    Ok(AttemptRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        workspace_id: r.get(2)?,
        account_id: r.get(3)?,
        user_id: r.get(4)?,
        mode: r.get(5)?,
        from_phone: r.get(6)?,
        to_phone: r.get(7)?,
        type_name: r.get(8)?,
        payload: r.get(9)?,
        status: r.get(10)?,
        message_id: r.get(11)?,
        remote_jid: r.get(12)?,
        error_code: r.get(13)?,
        error_message: r.get(14)?,
        tries: r.get(15)?,
        created_at: r.get(16)?,
        updated_at: r.get(17)?,
        handoff_unsent: r.get::<_, i64>(18)? != 0,
        handed_off_at: r.get(19)?,
    })
}

/// Everything the enqueue transaction needs; built by the API after the
/// checks that need no write (auth, shape, phones, sender, media).
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub id: String,
    pub workspace_id: String,
    pub account_id: String,
    pub user_id: String,
    pub mode: SenderMode,
    pub from_phone: String,
    pub to_phone: String,
    pub type_name: &'static str,
    pub payload: String,
    /// `(key, fingerprint)` when the request carried an Idempotency-Key.
    pub idempotency: Option<(String, [u8; 32])>,
    pub daily_limit: i64,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueOutcome {
    Queued,
    /// The key's first request was accepted: answer it again.
    Replayed(Replay),
    KeyConflict,
    NotConnected,
    RateLimited,
}

/// What a request repeating an accepted key's request is answered.
///
/// A key's row keeps no copy of the 202 it answered: that body is a
/// function of the attempt (its id and numbers), so it is rebuilt from the
/// attempt, byte for byte. Without the copy a key's row is a third of the
/// size, and each send dirties fewer pages of the keys' index, whose
/// inserts land on random pages. Rows written before that keep their body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// The answer as stored.
    Stored { http_status: u16, body: Vec<u8> },
    /// The 202 of this attempt.
    Accepted {
        attempt_id: String,
        from_phone: String,
        to_phone: String,
    },
}

/// An Idempotency-Key's row as both ways of enqueueing read it (columns
/// 0-5: fingerprint, status, stored body, and the attempt's id and numbers,
/// NULL if it is gone, which retention never leaves: it deletes a key with
/// its attempt).
struct StoredKey {
    fingerprint: Vec<u8>,
    http_status: u16,
    body: Vec<u8>,
    attempt: Option<(String, String, String)>,
}

impl StoredKey {
    /// The key in `r`, or `None` where there is none (no fingerprint).
    fn read(r: &Row<'_>) -> super::db::Result<Option<StoredKey>> {
        let Some(fingerprint) = r.get::<_, Option<Vec<u8>>>(0)? else {
            return Ok(None);
        };
        let attempt = match r.get::<_, Option<String>>(3)? {
            Some(id) => Some((id, r.get(4)?, r.get(5)?)),
            None => None,
        };
        Ok(Some(StoredKey {
            fingerprint,
            http_status: r.get(1)?,
            body: r.get(2)?,
            attempt,
        }))
    }

    /// The answer to a request with `fingerprint` under this key: a replay
    /// (the stored body, else the attempt's 202) or a conflict.
    fn outcome(self, fingerprint: &[u8]) -> Result<EnqueueOutcome, StoreError> {
        if !crate::domain::token::hashes_equal(&self.fingerprint, fingerprint) {
            return Ok(EnqueueOutcome::KeyConflict);
        }
        if !self.body.is_empty() {
            return Ok(EnqueueOutcome::Replayed(Replay::Stored {
                http_status: self.http_status,
                body: self.body,
            }));
        }
        let (attempt_id, from_phone, to_phone) = self.attempt.ok_or_else(|| {
            StoreError::Internal("the attempt of an Idempotency-Key is gone".into())
        })?;
        Ok(EnqueueOutcome::Replayed(Replay::Accepted {
            attempt_id,
            from_phone,
            to_phone,
        }))
    }
}

/// The contract's steps after the media check, as one atomic write:
/// idempotency, connection state, daily limit, insert. Refusals store nothing.
///
/// On PostgreSQL, where each statement is a round trip, the same steps are
/// one statement ([`enqueue_in_one_round_trip`]); the suite runs both.
pub fn enqueue(conn: &Conn, a: &NewAttempt) -> Result<EnqueueOutcome, StoreError> {
    if conn.engine() == super::db::Engine::Postgres {
        return enqueue_in_one_round_trip(conn, a);
    }
    if let Some((key, fingerprint)) = &a.idempotency {
        let existing = conn
            .prepare_cached(
                "SELECT k.fingerprint, k.http_status, k.response_body, a.id, a.from_phone, a.to_phone
                 FROM idempotency_keys k LEFT JOIN send_attempts a ON a.id = k.attempt_id
                 WHERE k.user_id = ?1 AND k.key = ?2",
            )?
            .query_row(params![a.user_id, key], StoredKey::read)
            .optional()?
            .flatten();
        if let Some(stored) = existing {
            return stored.outcome(fingerprint);
        }
    }
    let status: Option<AccountStatus> = conn
        .prepare_cached("SELECT status FROM accounts WHERE id = ?1")?
        .query_row([&a.account_id], |r| r.get(0))
        .optional()?;
    if status != Some(AccountStatus::Connected) {
        return Ok(EnqueueOutcome::NotConnected);
    }
    if a.daily_limit <= 0 {
        return Ok(EnqueueOutcome::RateLimited);
    }
    let counted = conn
        .prepare_cached(
            "INSERT INTO daily_counters (account_id, day, count) VALUES (?1, ?2, 1)
             ON CONFLICT (account_id, day) DO UPDATE SET count = daily_counters.count + 1 WHERE daily_counters.count < ?3",
        )?
        .execute(params![a.account_id, utc_day(a.now), a.daily_limit])?;
    if counted == 0 {
        return Ok(EnqueueOutcome::RateLimited);
    }
    conn.prepare_cached(
        "INSERT INTO send_attempts (id, workspace_id, account_id, user_id, mode, from_phone, to_phone, type, payload, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'queued', ?10, ?10)",
    )?
    .execute(params![
        a.id, a.workspace_id, a.account_id, a.user_id, a.mode, a.from_phone, a.to_phone, a.type_name, a.payload, a.now
    ])?;
    if let Some((key, fingerprint)) = &a.idempotency {
        let claimed = conn
            .prepare_cached(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, attempt_id, http_status, response_body, created_at)
                 VALUES (?1, ?2, ?3, ?4, 202, x'', ?5)",
            )?
            .execute(params![a.user_id, key, &fingerprint[..], a.id, a.now]);
        match claimed {
            Ok(_) => {}
            // Another writer claimed the key first: roll this request back.
            Err(e) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(
                    "idempotency key claimed concurrently".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(EnqueueOutcome::Queued)
}

/// [`enqueue`] as one statement (PostgreSQL's data-modifying CTEs, which
/// SQLite lacks): the stored key if there is one; else the account's state,
/// the day's counter (counted only if connected and under the limit), the
/// attempt (only if counted) and the key (only with the attempt). All parts
/// see one snapshot; the writer's lock keeps other writers out meanwhile.
fn enqueue_in_one_round_trip(conn: &Conn, a: &NewAttempt) -> Result<EnqueueOutcome, StoreError> {
    let (key, fingerprint) = match &a.idempotency {
        Some((key, fingerprint)) => (Some(key.as_str()), Some(&fingerprint[..])),
        None => (None, None),
    };
    type Found = (Option<StoredKey>, Option<AccountStatus>, i64);
    let found: Result<Found, _> = conn
        .prepare_cached(
            "WITH existing AS (
                 SELECT k.fingerprint, k.http_status, k.response_body, a.id AS attempt_id,
                     a.from_phone, a.to_phone
                 FROM idempotency_keys k LEFT JOIN send_attempts a ON a.id = k.attempt_id
                 WHERE CAST(?11 AS TEXT) IS NOT NULL AND k.user_id = ?4 AND k.key = ?11
             ), account AS (
                 SELECT status FROM accounts
                 WHERE id = ?3 AND NOT EXISTS (SELECT 1 FROM existing)
             ), counted AS (
                 INSERT INTO daily_counters (account_id, day, count)
                 SELECT ?3, ?13, 1 FROM account WHERE account.status = 'connected' AND CAST(?14 AS BIGINT) > 0
                 ON CONFLICT (account_id, day) DO UPDATE SET count = daily_counters.count + 1
                     WHERE daily_counters.count < ?14
                 RETURNING 1
             ), attempt AS (
                 INSERT INTO send_attempts (id, workspace_id, account_id, user_id, mode, from_phone,
                     to_phone, type, payload, status, created_at, updated_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'queued', ?10, ?10 FROM counted
                 RETURNING id
             ), claimed AS (
                 INSERT INTO idempotency_keys (user_id, key, fingerprint, attempt_id, http_status,
                     response_body, created_at)
                 SELECT ?4, ?11, ?12, id, 202, ''::bytea, ?10 FROM attempt
                 WHERE CAST(?11 AS TEXT) IS NOT NULL
                 RETURNING 1
             )
             SELECT (SELECT fingerprint FROM existing), (SELECT http_status FROM existing),
                 (SELECT response_body FROM existing), (SELECT attempt_id FROM existing),
                 (SELECT from_phone FROM existing), (SELECT to_phone FROM existing),
                 (SELECT status FROM account), (SELECT count(*) FROM counted)",
        )?
        .query_row(
            params![
                a.id,
                a.workspace_id,
                a.account_id,
                a.user_id,
                a.mode,
                a.from_phone,
                a.to_phone,
                a.type_name,
                a.payload,
                a.now,
                key,
                fingerprint,
                utc_day(a.now),
                a.daily_limit
            ],
            |r| Ok((StoredKey::read(r)?, r.get(6)?, r.get(7)?)),
        );
    let (stored, status, counted) = match found {
        Ok(found) => found,
        // Another writer claimed the key first: roll this request back.
        Err(e) if e.is_unique_violation() => {
            return Err(StoreError::Conflict(
                "idempotency key claimed concurrently".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if let (Some(stored), Some(fingerprint)) = (stored, fingerprint) {
        return stored.outcome(fingerprint);
    }
    if status != Some(AccountStatus::Connected) {
        return Ok(EnqueueOutcome::NotConnected);
    }
    if counted == 0 {
        return Ok(EnqueueOutcome::RateLimited);
    }
    Ok(EnqueueOutcome::Queued)
}

/// Accepted API sends of `account` on UTC day `day`: what the daily limit
/// counts (the `daily_counters` key, one lookup).
pub fn sent_on_day(conn: &Conn, account: &str, day: i64) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT count FROM daily_counters WHERE account_id = ?1 AND day = ?2")?
        .query_row(params![account, day], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

pub fn get_attempt(conn: &Conn, id: &str) -> Result<Option<AttemptRow>, StoreError> {
    // Built once: every status read runs it.
    static SQL: LazyLock<String> =
        LazyLock::new(|| format!("SELECT {ATTEMPT_COLUMNS} FROM send_attempts WHERE id = ?1"));
    Ok(conn
        .prepare_cached(&SQL)?
        .query_row([id], attempt_from_row)
        .optional()?)
}

/// `(attempt id, account id)` of the attempt carrying `message_id` (the
/// `send_attempts_by_message` index).
pub fn attempt_of_message(
    conn: &Conn,
    message_id: &str,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id, account_id FROM send_attempts WHERE message_id = ?1 LIMIT 1")?
        .query_row([message_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Accounts that have queued or sending attempts (start-up recovery).
pub fn accounts_with_pending(conn: &Conn) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.id FROM accounts a WHERE EXISTS (SELECT 1 FROM send_attempts s
             WHERE s.account_id = a.id AND s.status IN ('queued', 'sending'))",
    )?;
    let rows = stmt.query_map((), |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The oldest pending attempt of one account (an index range, no scan of
/// other accounts' rows). A `sending` attempt left by a crash comes first
/// because it is older than everything queued after it.
pub fn next_pending(conn: &Conn, account_id: &str) -> Result<Option<AttemptRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM send_attempts INDEXED BY send_attempts_pending
             WHERE account_id = ?1 AND status IN ('queued', 'sending') ORDER BY seq LIMIT 1"
        ))?
        .query_row([account_id], attempt_from_row)
        .optional()?)
}

/// Claim an attempt for hand-off: `sending`, a message id chosen once and
/// kept across retries, and the account's next hand-off time. Committed
/// before the driver sees the message, so a crash re-sends the same id.
pub fn claim(
    conn: &Conn,
    attempt_id: &str,
    account_id: &str,
    fresh_message_id: &str,
    next_send_at: i64,
    fence: Option<i64>,
    now: i64,
) -> Result<Option<AttemptRow>, StoreError> {
    // The account must still be connected when the claim commits (the
    // pacer's read may predate an operator's disconnect). With several
    // nodes, the claim happens only under the account's current lease, checked in this same statement (a lease that expired
    // but was not taken over still has its fence: nobody else drives the
    // account; the engine stops before its lease expires anyway).
    let changed = conn
        .prepare_cached(
            "UPDATE send_attempts SET status = 'sending', message_id = COALESCE(message_id, ?2),
                 tries = tries + 1, handoff_unsent = 0, handed_off_at = ?3, updated_at = ?3
             WHERE id = ?1 AND status IN ('queued', 'sending')
               AND EXISTS (SELECT 1 FROM accounts WHERE id = ?5 AND status = 'connected')
               AND (CAST(?4 AS BIGINT) IS NULL OR EXISTS (SELECT 1 FROM leases
                    WHERE account_id = ?5 AND fence = ?4))",
        )?
        .execute(params![
            attempt_id,
            fresh_message_id,
            now,
            fence,
            account_id
        ])?;
    if changed == 0 {
        if fence.is_some() {
            super::leases::guard(conn, account_id, fence)?;
        }
        return Ok(None);
    }
    set_next_send_at(conn, account_id, next_send_at)?;
    get_attempt(conn, attempt_id)
}

/// Record that the last hand-off of a `sending` attempt certainly did not
/// reach WhatsApp, so handing it off again is not a redelivery.
pub fn mark_handoff_unsent(conn: &Conn, attempt_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE send_attempts SET handoff_unsent = 1 WHERE id = ?1")?
        .execute([attempt_id])?;
    Ok(())
}

pub fn set_next_send_at(conn: &Conn, account_id: &str, at: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE accounts SET next_send_at = ?2 WHERE id = ?1")?
        .execute(params![account_id, at])?;
    Ok(())
}

/// Move the account's next slot to `at` unless it is later already.
pub fn defer_next_send_at(conn: &Conn, account_id: &str, at: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE accounts SET next_send_at = ?2 WHERE id = ?1 AND next_send_at < ?2",
    )?
    .execute(params![account_id, at])?;
    Ok(())
}

/// Which attempt a transition targets.
#[derive(Debug, Clone, Copy)]
pub enum AttemptKey<'a> {
    Id(&'a str),
    /// The attempt of `account_id` that carries `message_id`: what a
    /// driver's news about a message names. Message ids are chosen per
    /// account (and by the network), so the account is part of the key.
    AccountMessage {
        account_id: &'a str,
        message_id: &'a str,
    },
}

/// Fields a transition may set alongside the status.
#[derive(Debug, Clone, Default)]
pub struct TransitionFields<'a> {
    pub remote_jid: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
}

/// Move an attempt to `next` if that is forward; returns whether it moved.
/// Duplicate and out-of-order events are therefore harmless.
pub fn transition(
    conn: &Conn,
    key: AttemptKey<'_>,
    next: AttemptStatus,
    fields: &TransitionFields<'_>,
    now: i64,
) -> Result<bool, StoreError> {
    let allowed: Vec<String> = AttemptStatus::predecessors(next)
        .into_iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    if allowed.is_empty() {
        // Nothing moves to the first status (`IN ()` is SQLite's only).
        return Ok(false);
    }
    let (target, value, account) = match key {
        AttemptKey::Id(id) => ("id = ?1", id, None),
        AttemptKey::AccountMessage {
            account_id,
            message_id,
        } => (
            "message_id = ?1 AND account_id = ?8",
            message_id,
            Some(account_id),
        ),
    };
    // The moved row comes back from the UPDATE itself, for its event.
    let sql = format!(
        "UPDATE send_attempts SET status = ?2, updated_at = ?3,
             remote_jid = COALESCE(?4, remote_jid), message_id = COALESCE(?5, message_id),
             error_code = COALESCE(?6, error_code), error_message = COALESCE(?7, error_message),
             accepted_at = CASE ?2 WHEN 'accepted' THEN ?3 ELSE accepted_at END,
             delivered_at = CASE ?2 WHEN 'delivered' THEN ?3 ELSE delivered_at END,
             read_at = CASE ?2 WHEN 'read' THEN ?3 ELSE read_at END
         WHERE {target} AND status IN ({})
         RETURNING {ATTEMPT_COLUMNS}",
        allowed.join(", ")
    );
    let mut statement = conn.prepare_cached(&sql)?;
    // A driver's words: storable on both engines.
    let error_message = fields.error_message.map(super::storable_text);
    let base = params![
        value,
        next.as_str(),
        now,
        fields.remote_jid,
        fields.message_id,
        fields.error_code,
        error_message.as_deref()
    ];
    let moved = match account {
        None => statement.query_row(base, attempt_from_row).optional()?,
        Some(account_id) => {
            let mut all = base.to_vec();
            all.push(&account_id);
            statement
                .query_row(all.as_slice(), attempt_from_row)
                .optional()?
        }
    };
    let Some(attempt) = moved else {
        return Ok(false);
    };
    emit_status(conn, &attempt, now)?;
    Ok(true)
}

/// When an attempt first reached `accepted`, `delivered` and `read` (each
/// `None` if it has not, or a receipt skipped it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepTimes {
    pub accepted_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub read_at: Option<i64>,
}

pub fn step_times(conn: &Conn, id: &str) -> Result<StepTimes, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT accepted_at, delivered_at, read_at FROM send_attempts WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok(StepTimes {
                accepted_at: r.get(0)?,
                delivered_at: r.get(1)?,
                read_at: r.get(2)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// `message.<status>` for an attempt that just reached a status webhooks
/// report, in the same transaction: the status body plus `workspaceId`.
pub fn emit_status(conn: &Conn, attempt: &AttemptRow, now: i64) -> Result<(), StoreError> {
    let event = match attempt.status {
        AttemptStatus::Accepted => "message.accepted",
        AttemptStatus::Delivered => "message.delivered",
        AttemptStatus::Read => "message.read",
        AttemptStatus::Failed => "message.failed",
        AttemptStatus::Queued | AttemptStatus::Sending => return Ok(()),
    };
    super::webhooks::emit(conn, &attempt.workspace_id, event, now, || {
        let mut data = serde_json::to_value(attempt.status_body()).unwrap_or_default();
        data["workspaceId"] = attempt.workspace_id.clone().into();
        data
    })?;
    Ok(())
}

/// What a cancel did; each variant carries the attempt as it now is.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// It was `queued`: now `failed` with `errorCode` `cancelled`.
    Cancelled(AttemptRow),
    /// It was already claimed for a hand-off (`sending`) or later.
    NotCancellable(AttemptRow),
    NotFound,
}

/// Shown as the `errorMessage` of a cancelled attempt.
pub const CANCELLED_MESSAGE: &str = "cancelled by the sender before it was handed to WhatsApp";

/// Cancel a send that has not been handed off: `queued` becomes `failed`
/// (`cancelled`). Every state change of a cancel happens here, in the
/// caller's one write job. The single writer orders it against the
/// pacer's [`claim`], which takes only `queued` or `sending` rows: either
/// the claim committed first (the attempt is `sending`, the cancel is
/// refused) or the cancel did (the claim finds nothing and the driver is
/// never called). The daily counter is left as it is: the send was accepted.
pub fn cancel(conn: &Conn, attempt_id: &str, now: i64) -> Result<CancelOutcome, StoreError> {
    let cancelled = conn
        .prepare_cached(&format!(
            "UPDATE send_attempts SET status = 'failed', error_code = ?2, error_message = ?3, updated_at = ?4
             WHERE id = ?1 AND status = 'queued'
             RETURNING {ATTEMPT_COLUMNS}"
        ))?
        .query_row(
            params![attempt_id, CANCELLED, CANCELLED_MESSAGE, now],
            attempt_from_row,
        )
        .optional()?;
    if let Some(attempt) = cancelled {
        emit_status(conn, &attempt, now)?;
        return Ok(CancelOutcome::Cancelled(attempt));
    }
    Ok(match get_attempt(conn, attempt_id)? {
        None => CancelOutcome::NotFound,
        Some(attempt) => CancelOutcome::NotCancellable(attempt),
    })
}

/// Fail every pending attempt of an account (offline past the grace period).
pub fn fail_pending_of_account(
    conn: &Conn,
    account_id: &str,
    code: &str,
    message: &str,
    now: i64,
) -> Result<usize, StoreError> {
    let failed: Vec<AttemptRow> = conn
        .prepare_cached(&format!(
            "UPDATE send_attempts SET status = 'failed', error_code = ?2, error_message = ?3, updated_at = ?4
             WHERE account_id = ?1 AND status IN ('queued', 'sending')
             RETURNING {ATTEMPT_COLUMNS}"
        ))?
        .query_map(params![account_id, code, message, now], attempt_from_row)?
        .collect::<Result<_, _>>()?;
    for attempt in &failed {
        emit_status(conn, attempt, now)?;
    }
    Ok(failed.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DriverKind, Role};
    use crate::store::admin;

    /// A fresh database with one sandbox account per phone, each with one
    /// attempt claimed under the same message id.
    fn two_accounts_sharing_a_message_id(message_id: &str) -> (Conn, Vec<(String, String)>) {
        let conn = crate::store::test_db("");
        let ws = admin::create_workspace(&conn, "Acme").unwrap();
        let mut made = Vec::new();
        for (n, phone) in ["+917000000001", "+917000000002"].into_iter().enumerate() {
            let user = admin::add_user(&conn, &ws.id, &format!("u{n}"), Role::Owner).unwrap();
            let account = admin::add_account(
                &conn,
                &ws.id,
                &user.id,
                phone,
                DriverKind::Sandbox,
                &serde_json::json!({}),
            )
            .unwrap();
            let attempt = NewAttempt {
                id: format!("attempt-{n}"),
                workspace_id: ws.id.clone(),
                account_id: account.id.clone(),
                user_id: user.id.clone(),
                mode: SenderMode::Personal,
                from_phone: phone.into(),
                to_phone: "+917999709798".into(),
                type_name: "text",
                payload: r#"{"text":"hi"}"#.into(),
                idempotency: None,
                daily_limit: 100,
                now: 1,
            };
            assert_eq!(enqueue(&conn, &attempt).unwrap(), EnqueueOutcome::Queued);
            claim(&conn, &attempt.id, &account.id, message_id, 0, None, 2)
                .unwrap()
                .unwrap();
            made.push((account.id, attempt.id));
        }
        (conn, made)
    }

    fn status(conn: &Conn, attempt_id: &str) -> AttemptStatus {
        get_attempt(conn, attempt_id).unwrap().unwrap().status
    }

    #[test]
    fn news_about_a_message_moves_only_the_attempt_of_the_reporting_account() {
        let (conn, made) = two_accounts_sharing_a_message_id("3EB0SAME");
        let [(account_a, attempt_a), (account_b, attempt_b)] = made.as_slice() else {
            panic!("two accounts");
        };
        let key = AttemptKey::AccountMessage {
            account_id: account_a,
            message_id: "3EB0SAME",
        };
        let fields = TransitionFields {
            remote_jid: Some("917999709798@s.whatsapp.net"),
            ..Default::default()
        };
        assert!(transition(&conn, key, AttemptStatus::Accepted, &fields, 3).unwrap());
        assert_eq!(status(&conn, attempt_a), AttemptStatus::Accepted);
        assert_eq!(status(&conn, attempt_b), AttemptStatus::Sending);

        let key_b = AttemptKey::AccountMessage {
            account_id: account_b,
            message_id: "3EB0SAME",
        };
        let failed = TransitionFields {
            error_code: Some("send_failed"),
            error_message: Some("refused"),
            ..Default::default()
        };
        assert!(transition(&conn, key_b, AttemptStatus::Failed, &failed, 4).unwrap());
        let a = get_attempt(&conn, attempt_a).unwrap().unwrap();
        assert_eq!(a.status, AttemptStatus::Accepted);
        assert_eq!(a.error_code, None);
        assert_eq!(status(&conn, attempt_b), AttemptStatus::Failed);
    }

    #[test]
    fn only_a_queued_attempt_can_be_cancelled_and_a_cancelled_one_is_never_claimed() {
        let (conn, made) = two_accounts_sharing_a_message_id("3EB0SAME");
        // Both attempts are `sending`: claimed, so no longer cancellable.
        let (account, claimed) = &made[0];
        assert!(matches!(
            cancel(&conn, claimed, 5).unwrap(),
            CancelOutcome::NotCancellable(a) if a.status == AttemptStatus::Sending
        ));
        assert!(matches!(
            cancel(&conn, "nope", 5).unwrap(),
            CancelOutcome::NotFound
        ));

        conn.execute(
            "INSERT INTO send_attempts (id, workspace_id, account_id, user_id, mode, from_phone, to_phone, type, payload, status, created_at, updated_at)
             SELECT 'queued-one', workspace_id, account_id, user_id, mode, from_phone, to_phone, type, payload, 'queued', 3, 3
             FROM send_attempts WHERE id = ?1",
            [claimed],
        )
        .unwrap();
        let CancelOutcome::Cancelled(a) = cancel(&conn, "queued-one", 7).unwrap() else {
            panic!("a queued attempt is cancellable");
        };
        assert_eq!(a.status, AttemptStatus::Failed);
        assert_eq!(a.error_code.as_deref(), Some("cancelled"));
        assert_eq!(a.error_message.as_deref(), Some(CANCELLED_MESSAGE));
        assert_eq!(a.updated_at, 7);
        // Cancelling twice changes nothing; the pacer's claim finds nothing.
        assert!(matches!(
            cancel(&conn, "queued-one", 8).unwrap(),
            CancelOutcome::NotCancellable(a) if a.updated_at == 7
        ));
        assert!(claim(&conn, "queued-one", account, "MSG", 0, None, 9)
            .unwrap()
            .is_none());
        assert_eq!(status(&conn, "queued-one"), AttemptStatus::Failed);
    }

    #[test]
    fn news_naming_another_account_moves_nothing() {
        let (conn, made) = two_accounts_sharing_a_message_id("3EB0SAME");
        let key = AttemptKey::AccountMessage {
            account_id: "acc_elsewhere",
            message_id: "3EB0SAME",
        };
        let moved = transition(
            &conn,
            key,
            AttemptStatus::Delivered,
            &TransitionFields::default(),
            3,
        )
        .unwrap();
        assert!(!moved);
        for (_, attempt) in &made {
            assert_eq!(status(&conn, attempt), AttemptStatus::Sending);
        }
    }
}
