//! Leases: which node drives each account when several nodes share one
//! PostgreSQL database (cluster.md). The engine's `delivery::cluster` runs
//! the loop; these are its statements, plus the fence guard every write of
//! a hand-off takes.
//!
//! A lease is a row `(account, node, expires_at, fence)`. Taking one that
//! is free or expired raises its fence, so the fence grows with every new
//! holder. A lease given up is expired, never deleted, so its fence is
//! kept. Times are the nodes' clocks, in milliseconds: keep them in sync
//! (NTP); a skew eats into `cluster.lease_ttl`.

use super::db::params;
use super::{Conn, StoreError};

/// The lease of the one node that sends the status webhooks (a pseudo
/// account: account ids start with `acc_`). Leased like an account, but
/// outside the fair share.
pub const WEBHOOKS: &str = "~webhooks";

/// A lease this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub account_id: String,
    pub fence: i64,
}

/// What one tick of the lease loop saw and did (see [`tick`]).
#[derive(Debug, Clone, Default)]
pub struct Tick {
    /// Every account lease the node holds now: renewed or newly taken.
    pub held: Vec<Held>,
    /// The fence of the [`WEBHOOKS`] lease, if this node holds it.
    pub webhooks: Option<i64>,
    /// The accounts among `held` taken in this tick.
    pub taken: Vec<String>,
    /// Nodes seen within a lease period, this one included.
    pub live_nodes: i64,
    /// The most leases a node should hold: all accounts over the live nodes,
    /// rounded up.
    pub fair_share: usize,
}

/// One tick, in one transaction: the node's heartbeat, the renewal of every
/// lease it holds, and, below its fair share, the take-over of free or
/// expired leases up to it.
///
/// A node's `first` tick takes the leases recorded under its own id (a
/// restart with the same `cluster.node_id`) with a larger fence, so they
/// come back at once and anything the previous run left cannot write.
pub fn tick(
    conn: &Conn,
    node_id: &str,
    now: i64,
    ttl_ms: i64,
    first: bool,
) -> Result<Tick, StoreError> {
    conn.prepare_cached(
        "INSERT INTO nodes (node_id, seen_at) VALUES (?1, ?2)
         ON CONFLICT (node_id) DO UPDATE SET seen_at = excluded.seen_at",
    )?
    .execute(params![node_id, now])?;
    // Forget nodes gone for long; they hold nothing any more.
    conn.prepare_cached("DELETE FROM nodes WHERE seen_at < ?1")?
        .execute([now - 100 * ttl_ms])?;
    let live_nodes: i64 = conn
        .prepare_cached("SELECT count(*) FROM nodes WHERE seen_at > ?1")?
        .query_row([now - ttl_ms], |r| r.get(0))?;
    let accounts: i64 = conn
        .prepare_cached("SELECT count(*) FROM accounts")?
        .query_row((), |r| r.get(0))?;
    let fair_share = (accounts as usize).div_ceil(live_nodes.max(1) as usize);

    let renewed: Vec<Held> = conn
        .prepare_cached(
            "UPDATE leases SET expires_at = ?2, fence = fence + ?3, acquired_at =
                 CASE WHEN ?3 = 1 THEN ?4 ELSE acquired_at END
             WHERE node_id = ?1 RETURNING account_id, fence",
        )?
        .query_map(params![node_id, now + ttl_ms, i64::from(first), now], |r| {
            Ok(Held {
                account_id: r.get(0)?,
                fence: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let (mut webhooks, mut held) = (None, Vec::with_capacity(renewed.len()));
    for lease in renewed {
        if lease.account_id == WEBHOOKS {
            webhooks = Some(lease.fence);
        } else {
            held.push(lease);
        }
    }
    if webhooks.is_none() {
        webhooks = take(conn, WEBHOOKS, node_id, now, now + ttl_ms)?;
    }
    let mut taken = Vec::new();
    if held.len() < fair_share {
        let free: Vec<String> = conn
            .prepare_cached(
                "SELECT a.id FROM accounts a LEFT JOIN leases l ON l.account_id = a.id
                 WHERE l.account_id IS NULL OR l.expires_at <= ?1
                 ORDER BY a.id LIMIT ?2",
            )?
            .query_map(params![now, (fair_share - held.len()) as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for account_id in free {
            if let Some(fence) = take(conn, &account_id, node_id, now, now + ttl_ms)? {
                held.push(Held {
                    account_id: account_id.clone(),
                    fence,
                });
                taken.push(account_id);
            }
        }
    }
    Ok(Tick {
        held,
        webhooks,
        taken,
        live_nodes,
        fair_share,
    })
}

/// Take the account's lease if it is free or expired; the new fence.
fn take(
    conn: &Conn,
    account_id: &str,
    node_id: &str,
    now: i64,
    expires_at: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO leases (account_id, node_id, expires_at, fence, acquired_at)
             VALUES (?1, ?2, ?3, 1, ?4)
             ON CONFLICT (account_id) DO UPDATE SET node_id = excluded.node_id,
                 expires_at = excluded.expires_at, fence = leases.fence + 1,
                 acquired_at = excluded.acquired_at
             WHERE leases.expires_at <= ?4
             RETURNING fence",
        )?
        .query_map(params![account_id, node_id, expires_at, now], |r| r.get(0))?
        .next()
        .transpose()?)
}

/// Whether some account has no lease or an expired one: the lease loop then
/// ticks at once instead of at its next period (a new account, a dead node).
pub fn any_free(conn: &Conn, now: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM accounts a LEFT JOIN leases l ON l.account_id = a.id
             WHERE l.account_id IS NULL OR l.expires_at <= ?1 LIMIT 1",
        )?
        .exists([now])?)
}

/// Give leases up (shedding above the fair share, or stopping): expired at
/// once, fence kept, so another node takes them at its next tick.
pub fn release(conn: &Conn, node_id: &str, leases: &[Held]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE leases SET expires_at = 0, node_id = '' WHERE account_id = ?1 AND node_id = ?2 AND fence = ?3",
    )?;
    for lease in leases {
        stmt.execute(params![lease.account_id, node_id, lease.fence])?;
    }
    Ok(())
}

/// A stopping node's goodbye: its heartbeat goes, so the others' fair share
/// counts without it at once.
pub fn leave(conn: &Conn, node_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM nodes WHERE node_id = ?1")?
        .execute([node_id])?;
    Ok(())
}

/// The guard a write of a hand-off takes first, in its own transaction: it
/// locks the account's lease row (on PostgreSQL, a take-over waits for this
/// transaction) and fails with [`StoreError::Fenced`] unless `fence` is
/// still the current one. `None` (one node on the file) always passes.
pub fn guard(conn: &Conn, account_id: &str, fence: Option<i64>) -> Result<(), StoreError> {
    let Some(fence) = fence else {
        return Ok(());
    };
    let held = conn
        .prepare_cached("UPDATE leases SET fence = fence WHERE account_id = ?1 AND fence = ?2")?
        .execute(params![account_id, fence])?;
    if held == 0 {
        return Err(StoreError::Fenced(format!(
            "the lease of account {account_id} moved on from fence {fence}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db;

    const FIXTURE: &str = "
        INSERT INTO workspaces (id, name, created_at) VALUES ('ws', 'W', 0);
        INSERT INTO users (id, workspace_id, name, role, created_at) VALUES ('u', 'ws', 'U', 'owner', 0);
        INSERT INTO accounts (id, workspace_id, user_id, phone, driver, status, created_at, status_changed_at)
            VALUES ('a1', 'ws', 'u', '+1', 'sandbox', 'connected', 0, 0);
    ";

    fn accounts(conn: &Conn, n: usize) {
        for i in 2..=n {
            conn.execute_batch(&format!(
                "INSERT INTO users (id, workspace_id, name, role, created_at) VALUES ('u{i}', 'ws', 'U', 'owner', 0);
                 INSERT INTO accounts (id, workspace_id, user_id, phone, driver, status, created_at, status_changed_at)
                     VALUES ('a{i}', 'ws', 'u{i}', '+{i}', 'sandbox', 'connected', 0, 0);"
            ))
            .unwrap();
        }
    }

    fn ids(t: &Tick) -> Vec<&str> {
        t.held.iter().map(|h| h.account_id.as_str()).collect()
    }

    #[test]
    fn nodes_share_accounts_fairly_and_a_dead_nodes_leases_move_with_a_larger_fence() {
        let conn = test_db(FIXTURE);
        accounts(&conn, 5);
        // Alone, a node takes everything.
        let a = tick(&conn, "A", 1_000, 300, false).unwrap();
        assert_eq!((a.live_nodes, a.fair_share, a.held.len()), (1, 5, 5));
        assert!(a.held.iter().all(|h| h.fence == 1));
        assert_eq!(a.webhooks, Some(1), "the first node sends the webhooks");
        // A second node finds nothing free until A gives up what is above
        // its share (the engine sheds; here by hand).
        let b = tick(&conn, "B", 1_100, 300, false).unwrap();
        assert_eq!((b.live_nodes, b.fair_share, b.held.len()), (2, 3, 0));
        assert_eq!(b.webhooks, None);
        release(&conn, "A", &a.held[3..]).unwrap();
        let b = tick(&conn, "B", 1_200, 300, false).unwrap();
        assert_eq!(ids(&b), ["a4", "a5"]);
        assert!(b.held.iter().all(|h| h.fence == 2), "{b:?}");
        // A renews its three; B stops renewing (dies). Past its expiry, A
        // takes B's accounts with fences one larger again.
        let a = tick(&conn, "A", 1_250, 300, false).unwrap();
        assert_eq!(ids(&a), ["a1", "a2", "a3"]);
        let a = tick(&conn, "A", 1_600, 300, false).unwrap();
        assert_eq!(a.live_nodes, 1);
        assert_eq!(a.taken, ["a4", "a5"]);
        assert_eq!(a.webhooks, Some(1));
        // B comes back and takes the webhooks only once A's lease on them
        // expired (A stopped ticking).
        assert_eq!(tick(&conn, "B", 1_700, 300, false).unwrap().webhooks, None);
        assert_eq!(
            tick(&conn, "B", 2_000, 300, false).unwrap().webhooks,
            Some(2)
        );
        assert_eq!(
            a.held.iter().map(|h| h.fence).collect::<Vec<_>>(),
            [1, 1, 1, 3, 3]
        );
    }

    #[test]
    fn the_guard_passes_only_the_current_fence() {
        let conn = test_db(FIXTURE);
        let a = tick(&conn, "A", 1_000, 300, false).unwrap();
        assert_eq!(
            a.held,
            [Held {
                account_id: "a1".into(),
                fence: 1
            }]
        );
        guard(&conn, "a1", Some(1)).unwrap();
        guard(&conn, "a1", None).unwrap();
        // A paused past its lease; B took it over.
        let b = tick(&conn, "B", 1_400, 300, false).unwrap();
        assert_eq!(b.held[0].fence, 2);
        assert!(matches!(
            guard(&conn, "a1", Some(1)),
            Err(StoreError::Fenced(_))
        ));
        guard(&conn, "a1", Some(2)).unwrap();
        // A's renewal no longer returns it.
        assert!(tick(&conn, "A", 1_450, 300, false).unwrap().held.is_empty());
        assert!(!any_free(&conn, 1_450).unwrap());
        assert!(any_free(&conn, 1_800).unwrap(), "B's lease expired");
        // B restarts with the same id: its lease comes back at once, with a
        // fence that shuts out what the previous run left.
        let b = tick(&conn, "B", 1_500, 300, true).unwrap();
        assert_eq!(b.held[0].fence, 3);
        assert!(matches!(
            guard(&conn, "a1", Some(2)),
            Err(StoreError::Fenced(_))
        ));
    }
}
