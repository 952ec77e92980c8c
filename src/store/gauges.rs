//! What `GET /metrics` reads from the database: per account, its state, its
//! waiting attempts and today's count. One indexed lookup per account (the
//! `send_attempts_pending` partial index, the `daily_counters` key), so a
//! scrape costs O(accounts), never a scan of all attempts.

use super::db::OptionalExtension;
use super::Conn;

use super::StoreError;
use crate::clock::utc_day;
use crate::domain::{AccountStatus, DriverKind};
use crate::metrics::AccountGauges;

/// How many attempts of `account` wait to be handed off (queued or in a
/// hand-off): the queue depth.
pub fn waiting(conn: &Conn, account: &str) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM send_attempts INDEXED BY send_attempts_pending
             WHERE account_id = ?1 AND status IN ('queued', 'sending')",
        )?
        .query_row([account], |r| r.get(0))?)
}

pub fn account_gauges(conn: &Conn, now_ms: i64) -> Result<Vec<AccountGauges>, StoreError> {
    let accounts: Vec<(String, DriverKind, AccountStatus)> = conn
        .prepare_cached("SELECT id, driver, status FROM accounts ORDER BY id")?
        .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut oldest = conn.prepare_cached(
        "SELECT created_at FROM send_attempts INDEXED BY send_attempts_pending
         WHERE account_id = ?1 AND status IN ('queued', 'sending') ORDER BY seq LIMIT 1",
    )?;
    let today = utc_day(now_ms);
    let mut out = Vec::with_capacity(accounts.len());
    for (account_id, driver, status) in accounts {
        out.push(AccountGauges {
            waiting: waiting(conn, &account_id)?,
            oldest_waiting_at: oldest.query_row([&account_id], |r| r.get(0)).optional()?,
            daily_sends: super::attempts::sent_on_day(conn, &account_id, today)?,
            account_id,
            driver,
            status,
        });
    }
    Ok(out)
}
