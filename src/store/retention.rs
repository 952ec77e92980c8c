//! Retention: attempts that reached a final status (accepted, delivered,
//! read, failed) longer ago than `[retention] attempts` are deleted, with
//! their Idempotency-Keys and the sandbox network's rows for their message;
//! finished webhook deliveries of the same age go too.
//! Queued and sending attempts are never touched.
//!
//! Deletion runs in batches of [`BATCH`] attempts, each one write job of the
//! group-committing writer, so a send waits behind one small batch at most,
//! never behind the whole purge. Every lookup is by index (migration 6).

use std::time::Duration;

use super::db::params;
use super::Conn;
use tokio::sync::watch;

use super::{Store, StoreError};
use crate::clock::Clock;

/// Attempts deleted by one write job.
pub const BATCH: usize = 500;

/// How long history is kept; `None` keeps it forever (the default).
#[derive(Debug, Clone, Default)]
pub struct RetentionConfig {
    /// Attempts final for longer than this are deleted.
    pub attempts: Option<Duration>,
}

/// Delete up to `limit` attempts that were final before `cutoff_ms` (by
/// `updated_at`, the time of their last status change), with what belongs to
/// them. Returns how many attempts went.
pub fn prune_batch(conn: &Conn, cutoff_ms: i64, limit: usize) -> Result<usize, StoreError> {
    let old: Vec<(String, String, Option<String>)> = conn
        .prepare_cached(
            "SELECT id, account_id, message_id FROM send_attempts INDEXED BY send_attempts_final
             WHERE status IN ('accepted', 'delivered', 'read', 'failed') AND updated_at < ?1
             ORDER BY updated_at LIMIT ?2",
        )?
        .query_map(params![cutoff_ms, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut keys = conn.prepare_cached("DELETE FROM idempotency_keys WHERE attempt_id = ?1")?;
    let mut outbox = conn
        .prepare_cached("DELETE FROM sandbox_outbox WHERE message_id = ?1 AND account_id = ?2")?;
    let mut handoffs = conn
        .prepare_cached("DELETE FROM sandbox_handoffs WHERE message_id = ?1 AND account_id = ?2")?;
    let mut attempt = conn.prepare_cached("DELETE FROM send_attempts WHERE id = ?1")?;
    for (id, account_id, message_id) in &old {
        keys.execute([id])?;
        if let Some(message_id) = message_id {
            outbox.execute([message_id, account_id])?;
            handoffs.execute([message_id, account_id])?;
        }
        attempt.execute([id])?;
    }
    // Finished webhook deliveries of the same age (their bodies carry the
    // attempts' numbers), at most as many per batch.
    conn.prepare_cached(
        "DELETE FROM webhook_deliveries WHERE seq IN (
             SELECT seq FROM webhook_deliveries INDEXED BY webhook_deliveries_final
             WHERE status IN ('delivered', 'failed') AND updated_at < ?1 LIMIT ?2)",
    )?
    .execute(params![cutoff_ms, limit as i64])?;
    Ok(old.len())
}

/// `whatan prune`: batches until none is left; returns the total deleted.
///
/// It runs in its own process, beside a serving `whatan` whose writer needs
/// the same database lock: after each batch it rests as long as the batch
/// took, so the server's writer holds the lock at least half the time and
/// sends keep flowing however large the purge.
pub fn prune_all(store: &Store, older_than: Duration, now_ms: i64) -> Result<u64, StoreError> {
    let cutoff = cutoff(now_ms, older_than);
    let mut total = 0u64;
    loop {
        let started = std::time::Instant::now();
        let deleted = store.write_blocking(move |c| prune_batch(c, cutoff, BATCH))?;
        total += deleted as u64;
        if deleted < BATCH {
            return Ok(total);
        }
        std::thread::sleep(started.elapsed());
    }
}

fn cutoff(now_ms: i64, older_than: Duration) -> i64 {
    now_ms.saturating_sub(older_than.as_millis().min(i64::MAX as u128) as i64)
}

/// How often the background job looks for attempts to delete: a tenth of
/// the retention, between 100 ms and an hour.
fn interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(3600))
}

/// The background job of `serve`: a full batch is followed at once (after
/// yielding) by the next, a partial one by a pause of [`interval`]. Ends when
/// `shutdown` turns true.
pub async fn run(
    store: Store,
    retention: Duration,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
) {
    let pause = interval(retention);
    loop {
        let cutoff = cutoff(clock.now_ms(), retention);
        let wait = match store.write(move |c| prune_batch(c, cutoff, BATCH)).await {
            Ok(deleted) if deleted == BATCH => Duration::ZERO,
            Ok(deleted) => {
                if deleted > 0 {
                    tracing::info!(deleted, "retention: deleted old attempts");
                }
                pause
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention: could not delete old attempts");
                pause
            }
        };
        tokio::task::yield_now().await;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::webhooks::{add_endpoint, due, emit, record_try, TryOutcome, EVENT_TYPES};
    use crate::webhooks::sign::new_secret;

    #[test]
    fn finished_deliveries_go_with_the_attempts_of_their_age_and_pending_ones_stay() {
        let conn = crate::store::test_db("");
        conn.execute(
            "INSERT INTO workspaces (id, name, created_at) VALUES ('w1', 'one', 0)",
            (),
        )
        .unwrap();
        let all: Vec<String> = EVENT_TYPES.iter().map(|s| s.to_string()).collect();
        let e = add_endpoint(
            &conn,
            "w1",
            "https://a.example/",
            &all,
            None,
            &new_secret().1,
            0,
        )
        .unwrap();
        for _ in 0..3 {
            emit(&conn, "w1", "message.read", 0, || serde_json::json!({})).unwrap();
        }
        let rows = due(&conn, &e.id, 0, 3).unwrap();
        let delivered = TryOutcome::Delivered { status_code: 200 };
        let failed = TryOutcome::Failed {
            status_code: None,
            error: "x".into(),
            next_at: None,
        };
        record_try(&conn, &rows[0].id, &e.id, &delivered, i64::MAX, 10).unwrap();
        record_try(&conn, &rows[1].id, &e.id, &failed, i64::MAX, 2000).unwrap();

        prune_batch(&conn, 1000, BATCH).unwrap();

        let left: Vec<String> = conn
            .prepare("SELECT status FROM webhook_deliveries ORDER BY seq")
            .unwrap()
            .query_map((), |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // The old delivered one went; the newer failed and the pending stay.
        assert_eq!(left, ["failed", "pending"]);
    }
}
