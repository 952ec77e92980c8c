//! Reads that list what a token may see: its sends and the accounts it may
//! send from. Each is a bounded index range, never a table scan.

use super::db::params;
use super::Conn;

use super::admin::{account_from_row, Account, ACCOUNT_COLUMNS};
use super::attempts::{attempt_from_row, AttemptRow, ATTEMPT_COLUMNS};
use super::StoreError;
use crate::domain::AttemptStatus;

/// Whose attempts a listing covers: the user's own and, for owners and
/// admins, the workspace-sender-mode attempts of their workspace (the
/// status endpoint's read rules).
pub struct Readable<'a> {
    pub user_id: &'a str,
    /// `Some(workspace)` for owners and admins.
    pub workspace_view: Option<&'a str>,
}

/// What narrows a listing; the default lists everything readable. Every
/// field is a condition on the index walk, never a reason to leave it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptFilter<'a> {
    pub status: Option<AttemptStatus>,
    pub account_id: Option<&'a str>,
    /// The sender's number, E.164.
    pub from_phone: Option<&'a str>,
    /// `created_at >= created_since` (milliseconds).
    pub created_since: Option<i64>,
    /// `created_at < created_until` (milliseconds).
    pub created_until: Option<i64>,
    /// Only attempts older in queue order than this `seq`: the page cursor.
    pub before_seq: Option<i64>,
}

/// The newest `limit` attempts `who` may read that match `filter`, newest
/// (highest `seq`) first. Two index ranges (`send_attempts_by_user`,
/// `send_attempts_by_workspace`), each walked backwards from the cursor
/// and stopped after `limit` matches, then merged: a page costs the same
/// however many attempts are older than it. Filters are checked on the walk,
/// so a filter that matches rarely walks further before it finds `limit`.
pub fn recent_attempts(
    conn: &Conn,
    who: &Readable<'_>,
    filter: &AttemptFilter<'_>,
    limit: usize,
) -> Result<Vec<AttemptRow>, StoreError> {
    let limit = limit as i64;
    let range = |(index, whose): (&str, &str), key: &str| -> Result<Vec<AttemptRow>, StoreError> {
        let rows = conn
            .prepare_cached(&range_sql(index, whose))?
            .query_map(
                params![
                    key,
                    filter.before_seq.unwrap_or(i64::MAX),
                    filter.status,
                    filter.account_id,
                    filter.from_phone,
                    filter.created_since,
                    filter.created_until,
                    limit
                ],
                attempt_from_row,
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    };
    let mut rows = range(BY_USER, who.user_id)?;
    if let Some(workspace) = who.workspace_view {
        rows.extend(range(BY_WORKSPACE, workspace)?);
        rows.sort_unstable_by_key(|a| std::cmp::Reverse(a.seq));
        // The user's own workspace-mode sends are in both ranges.
        rows.dedup_by_key(|a| a.seq);
        rows.truncate(limit as usize);
    }
    Ok(rows)
}

/// The two ranges of a listing: `(index, whose rows)`, keyed by `?1`.
const BY_USER: (&str, &str) = ("send_attempts_by_user", "user_id = ?1");
const BY_WORKSPACE: (&str, &str) = (
    "send_attempts_by_workspace",
    "workspace_id = ?1 AND mode = 'workspace'",
);

/// One range's walk: backwards from the cursor `?2`, filters `?3`-`?7`,
/// at most `?8` rows. `INDEXED BY` turns a plan that would leave the index
/// (a scan of the whole table in `seq` order) into an error on SQLite
/// (PostgreSQL has no such hint: `db.rs` drops it). The casts in the null
/// tests give PostgreSQL each parameter's type.
fn range_sql(index: &str, whose: &str) -> String {
    format!(
        "SELECT {ATTEMPT_COLUMNS} FROM send_attempts INDEXED BY {index}
         WHERE {whose} AND seq < ?2 AND (CAST(?3 AS TEXT) IS NULL OR status = ?3)
           AND (CAST(?4 AS TEXT) IS NULL OR account_id = ?4)
           AND (CAST(?5 AS TEXT) IS NULL OR from_phone = ?5)
           AND (CAST(?6 AS BIGINT) IS NULL OR created_at >= ?6)
           AND (CAST(?7 AS BIGINT) IS NULL OR created_at < ?7)
         ORDER BY seq DESC LIMIT ?8"
    )
}

/// The accounts a user may send from: the whole workspace's for owners
/// and admins (`workspace_view`), else the user's own attached account.
pub fn senders(conn: &Conn, who: &Readable<'_>) -> Result<Vec<Account>, StoreError> {
    match who.workspace_view {
        Some(workspace) => accounts_in_workspace(conn, workspace),
        None => Ok(super::admin::account_of_user(conn, who.user_id)?
            .into_iter()
            .collect()),
    }
}

/// The accounts of one workspace, oldest first.
pub fn accounts_in_workspace(conn: &Conn, workspace: &str) -> Result<Vec<Account>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE workspace_id = ?1 ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([workspace], account_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workspace w1: an owner, an admin and a member; w2: another owner.
    /// Attempts, in seq order: 1 owner personal, 2 admin workspace-mode,
    /// 3 member personal, 4 owner workspace-mode (failed), 5 w2's owner
    /// workspace-mode, 6 admin personal.
    fn db() -> Conn {
        let conn = crate::store::test_db(
            "INSERT INTO workspaces (id, name, created_at) VALUES ('w1', 'one', 0), ('w2', 'two', 0);
             INSERT INTO users (id, workspace_id, name, role, created_at) VALUES
               ('owner', 'w1', 'o', 'owner', 0), ('admin', 'w1', 'a', 'admin', 0),
               ('member', 'w1', 'm', 'member', 0), ('other', 'w2', 'x', 'owner', 0);
             INSERT INTO accounts (id, workspace_id, user_id, phone, driver, status, status_changed_at, created_at) VALUES
               ('a1', 'w1', 'owner', '+917000000001', 'sandbox', 'connected', 0, 1),
               ('a2', 'w1', 'member', '+917000000002', 'sandbox', 'connected', 0, 2),
               ('a3', 'w2', 'other', '+917000000003', 'sandbox', 'connected', 0, 3);
             INSERT INTO daily_counters (account_id, day, count) VALUES ('a1', 5, 7), ('a1', 6, 2);",
        );
        let rows = [
            (1, "w1", "a1", "owner", "personal", "queued"),
            (2, "w1", "a1", "admin", "workspace", "read"),
            (3, "w1", "a2", "member", "personal", "queued"),
            (4, "w1", "a1", "owner", "workspace", "failed"),
            (5, "w2", "a3", "other", "workspace", "queued"),
            (6, "w1", "a1", "admin", "personal", "queued"),
        ];
        for (seq, ws, account, user, mode, status) in rows {
            conn.execute(
                "INSERT INTO send_attempts (seq, id, workspace_id, account_id, user_id, mode, from_phone, to_phone, type, payload, status, created_at, updated_at)
                 VALUES (?1, 'id' || ?1, ?2, ?3, ?4, ?5, '+1', '+2', 'text', '{}', ?6, ?1, ?1)",
                params![seq, ws, account, user, mode, status],
            )
            .unwrap();
        }
        conn
    }

    fn seqs(
        conn: &Conn,
        who: Readable<'_>,
        status: Option<AttemptStatus>,
        limit: usize,
    ) -> Vec<i64> {
        let filter = AttemptFilter {
            status,
            ..Default::default()
        };
        filtered(conn, &who, &filter, limit)
    }

    fn filtered(
        conn: &Conn,
        who: &Readable<'_>,
        filter: &AttemptFilter<'_>,
        limit: usize,
    ) -> Vec<i64> {
        recent_attempts(conn, who, filter, limit)
            .unwrap()
            .iter()
            .map(|a| a.seq)
            .collect()
    }

    #[test]
    fn recent_attempts_follow_the_status_endpoints_read_rules() {
        let conn = db();
        let owner = || Readable {
            user_id: "owner",
            workspace_view: Some("w1"),
        };
        // Own (1, 4) and the workspace's workspace-mode sends (2, 4), once each.
        assert_eq!(seqs(&conn, owner(), None, 10), vec![4, 2, 1]);
        assert_eq!(seqs(&conn, owner(), None, 2), vec![4, 2]);
        assert_eq!(
            seqs(&conn, owner(), Some(AttemptStatus::Failed), 10),
            vec![4]
        );
        assert_eq!(
            seqs(&conn, owner(), Some(AttemptStatus::Queued), 10),
            vec![1]
        );
        let member = Readable {
            user_id: "member",
            workspace_view: None,
        };
        assert_eq!(seqs(&conn, member, None, 10), vec![3]);
        let other = Readable {
            user_id: "other",
            workspace_view: Some("w2"),
        };
        assert_eq!(seqs(&conn, other, None, 10), vec![5]);
    }

    #[test]
    fn the_cursor_and_the_filters_narrow_both_ranges() {
        let conn = db();
        let owner = Readable {
            user_id: "owner",
            workspace_view: Some("w1"),
        };
        let all = AttemptFilter::default();
        let before = |seq| AttemptFilter {
            before_seq: Some(seq),
            ..all
        };
        // Pages of one over 4, 2, 1: each starts below the last one shown.
        assert_eq!(filtered(&conn, &owner, &all, 1), vec![4]);
        assert_eq!(filtered(&conn, &owner, &before(4), 1), vec![2]);
        assert_eq!(filtered(&conn, &owner, &before(2), 1), vec![1]);
        assert!(filtered(&conn, &owner, &before(1), 1).is_empty());
        // created_at is the seq in this fixture: since inclusive, until not.
        let window = AttemptFilter {
            created_since: Some(2),
            created_until: Some(4),
            ..all
        };
        assert_eq!(filtered(&conn, &owner, &window, 10), vec![2]);
        let account = AttemptFilter {
            account_id: Some("a2"),
            ..all
        };
        assert!(filtered(&conn, &owner, &account, 10).is_empty());
        let member = Readable {
            user_id: "member",
            workspace_view: None,
        };
        assert_eq!(filtered(&conn, &member, &account, 10), vec![3]);
        let from = |phone| AttemptFilter {
            from_phone: Some(phone),
            ..all
        };
        assert_eq!(filtered(&conn, &owner, &from("+1"), 10), vec![4, 2, 1]);
        assert!(filtered(&conn, &owner, &from("+3"), 10).is_empty());
    }

    #[test]
    fn each_range_is_an_index_walk_from_the_cursor_without_a_sort() {
        let conn = db();
        for (index, whose) in [BY_USER, BY_WORKSPACE] {
            let sql = format!("EXPLAIN QUERY PLAN {}", range_sql(index, whose));
            let plan: Vec<String> = conn
                .prepare(&sql)
                .unwrap()
                .query_map(params!["w1", 10, "queued", "a1", "+1", 0, 100, 5], |r| {
                    r.get(3)
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(plan.contains(&format!("USING INDEX {index}")), "{plan}");
            assert!(
                plan.contains("seq<?"),
                "the cursor must bound the walk: {plan}"
            );
            assert!(
                !plan.contains("TEMP B-TREE"),
                "a sort reads the whole range: {plan}"
            );
        }
    }

    #[test]
    fn senders_and_todays_count() {
        let conn = db();
        let ids: Vec<String> = accounts_in_workspace(&conn, "w1")
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["a1", "a2"]);
        assert_eq!(
            crate::store::attempts::sent_on_day(&conn, "a1", 5).unwrap(),
            7
        );
        assert_eq!(
            crate::store::attempts::sent_on_day(&conn, "a1", 7).unwrap(),
            0
        );
        assert_eq!(
            crate::store::attempts::sent_on_day(&conn, "a2", 5).unwrap(),
            0
        );
    }
}
