//! What the dashboard keeps: one-time sign-in links, browser sessions, a
//! sandbox account's pairing while its Link page waits for the simulated
//! phone, and the team's membership. Secrets (link secrets, session ids)
//! are stored only as their SHA-256; callers hash them.

use super::db::{params, OptionalExtension};
use super::Conn;

use super::admin::{
    self, token_from_row, user_from_row, Account, TokenInfo, User, TOKEN_COLUMNS, USER_COLUMNS,
};
use super::StoreError;
use crate::domain::{AccountStatus, DriverKind};

/// A session unused for this long is over (dashboard.md: 30 days).
pub const SESSION_IDLE_MS: i64 = 30 * 24 * 3600 * 1000;

/// `last_seen_at` is rewritten at most this often, so that browsing is
/// not a write per page.
pub const SESSION_TOUCH_MS: i64 = 3600 * 1000;

/// User `id` if they are still on the team (not removed).
fn active_user(conn: &Conn, id: &str) -> Result<Option<User>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = ?1 AND removed_at IS NULL"
        ))?
        .query_row([id], user_from_row)
        .optional()?)
}

/// User `id` if they are on the team of `workspace`.
pub fn team_member(conn: &Conn, workspace: &str, id: &str) -> Result<Option<User>, StoreError> {
    Ok(active_user(conn, id)?.filter(|u| u.workspace == workspace))
}

/// Record a sign-in link for `user`; the caller shows the secret once.
pub fn create_login_link(
    conn: &Conn,
    user: &str,
    secret_hash: &[u8; 32],
    expires_at: i64,
    now: i64,
) -> Result<User, StoreError> {
    let user = active_user(conn, user)?
        .ok_or_else(|| StoreError::NotFound(format!("unknown user {user}")))?;
    conn.prepare_cached(
        "INSERT INTO login_links (secret_hash, user_id, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![&secret_hash[..], user.id, expires_at, now])?;
    Ok(user)
}

/// Whose sign-in link this is, if it is unspent, unexpired and its user
/// still on the team; spends nothing (the page that asks to continue).
pub fn login_link_user(
    conn: &Conn,
    secret_hash: &[u8; 32],
    now: i64,
) -> Result<Option<User>, StoreError> {
    let user: Option<String> = conn
        .prepare_cached(
            "SELECT user_id FROM login_links WHERE secret_hash = ?1 AND expires_at > ?2",
        )?
        .query_row(params![&secret_hash[..], now], |r| r.get(0))
        .optional()?;
    match user {
        Some(user) => active_user(conn, &user),
        None => Ok(None),
    }
}

/// Spend a sign-in link: it is deleted whatever happens next, and names its
/// user only while unexpired and the user is still on the team.
pub fn spend_login_link(
    conn: &Conn,
    secret_hash: &[u8; 32],
    now: i64,
) -> Result<Option<String>, StoreError> {
    let spent: Option<(String, i64)> = conn
        .prepare_cached(
            "DELETE FROM login_links WHERE secret_hash = ?1 RETURNING user_id, expires_at",
        )?
        .query_row([&secret_hash[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match spent {
        Some((user, expires_at)) if expires_at > now => Ok(active_user(conn, &user)?.map(|u| u.id)),
        _ => Ok(None),
    }
}

pub fn create_session(
    conn: &Conn,
    id_hash: &[u8; 32],
    user: &str,
    csrf_token: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![&id_hash[..], user, csrf_token, now])?;
    Ok(())
}

/// A live session: its user, the CSRF token its forms carry, and when it
/// was last seen.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf_token: String,
    pub last_seen_at: i64,
}

/// The session with this id hash, unless it is unknown, idle for
/// [`SESSION_IDLE_MS`] or its user was removed.
pub fn session(conn: &Conn, id_hash: &[u8; 32], now: i64) -> Result<Option<Session>, StoreError> {
    // The user's columns first, as `user_from_row` reads them.
    Ok(conn
        .prepare_cached(
            "SELECT u.id, u.workspace_id, u.name, u.role, s.csrf_token, s.last_seen_at
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id_hash = ?1 AND u.removed_at IS NULL AND s.last_seen_at > ?2",
        )?
        .query_row(params![&id_hash[..], now - SESSION_IDLE_MS], |r| {
            Ok(Session {
                user: user_from_row(r)?,
                csrf_token: r.get(4)?,
                last_seen_at: r.get(5)?,
            })
        })
        .optional()?)
}

pub fn touch_session(conn: &Conn, id_hash: &[u8; 32], now: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE sessions SET last_seen_at = ?2 WHERE id_hash = ?1")?
        .execute(params![&id_hash[..], now])?;
    Ok(())
}

pub fn end_session(conn: &Conn, id_hash: &[u8; 32]) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM sessions WHERE id_hash = ?1")?
        .execute([&id_hash[..]])?;
    Ok(())
}

/// The members of a workspace still on the team, oldest first.
pub fn team(conn: &Conn, workspace: &str) -> Result<Vec<User>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users
         WHERE workspace_id = ?1 AND removed_at IS NULL ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([workspace], user_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Take `user` off the team: their tokens stop at once (authentication
/// skips removed users), their sessions and sign-in links are deleted.
pub fn remove_user(conn: &Conn, user: &str, now: i64) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached("UPDATE users SET removed_at = ?2 WHERE id = ?1 AND removed_at IS NULL")?
        .execute(params![user, now])?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("unknown user {user}")));
    }
    conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
        .execute([user])?;
    conn.prepare_cached("DELETE FROM login_links WHERE user_id = ?1")?
        .execute([user])?;
    Ok(())
}

/// The tokens of a workspace's team (`user: Some`: only that user's),
/// newest first, with their holder's name; never a secret.
pub fn tokens(
    conn: &Conn,
    workspace: &str,
    user: Option<&str>,
) -> Result<Vec<(TokenInfo, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS}, u.name FROM tokens t JOIN users u ON u.id = t.user_id
         WHERE u.workspace_id = ?1 AND u.removed_at IS NULL AND (CAST(?2 AS TEXT) IS NULL OR t.user_id = ?2)
         ORDER BY t.created_at DESC, t.id"
    ))?;
    let rows = stmt.query_map(params![workspace, user], |r| {
        Ok((token_from_row(r)?, r.get(8)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The workspace and holder of token `id`, if it exists.
pub fn token_holder(conn: &Conn, id: &str) -> Result<Option<User>, StoreError> {
    // The user's columns, as `user_from_row` reads them.
    Ok(conn
        .prepare_cached(
            "SELECT u.id, u.workspace_id, u.name, u.role
             FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?1",
        )?
        .query_row([id], user_from_row)
        .optional()?)
}

/// A sandbox account's simulated QR code: shown until scanned.
#[derive(Debug, Clone)]
pub struct SandboxPairing {
    pub nonce: String,
    pub started_at: i64,
}

/// Show a (new) simulated QR code for a sandbox account: the account is
/// `connecting` until `sandbox scan` (or the page's button) scans it.
pub fn start_sandbox_pairing(
    conn: &Conn,
    account: &str,
    nonce: &str,
    now: i64,
) -> Result<Account, StoreError> {
    sandbox_account(conn, account)?;
    conn.prepare_cached(
        "INSERT INTO sandbox_pairings (account_id, nonce, started_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (account_id) DO UPDATE SET nonce = excluded.nonce, started_at = excluded.started_at",
    )?
    .execute(params![account, nonce, now])?;
    // An operator's hold stays until the scan (`connect_by_operator`); while
    // it holds, the account stays `disconnected` (the hold ignores this).
    admin::set_account_status(
        conn,
        account,
        AccountStatus::Connecting,
        Some("waiting for the QR code to be scanned"),
    )
}

pub fn sandbox_pairing(conn: &Conn, account: &str) -> Result<Option<SandboxPairing>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT nonce, started_at FROM sandbox_pairings WHERE account_id = ?1")?
        .query_row([account], |r| {
            Ok(SandboxPairing {
                nonce: r.get(0)?,
                started_at: r.get(1)?,
            })
        })
        .optional()?)
}

/// Account `account`, which must be a sandbox account: only those have a
/// simulated phone.
fn sandbox_account(conn: &Conn, account: &str) -> Result<Account, StoreError> {
    let found = admin::get_account(conn, account)?
        .ok_or_else(|| StoreError::NotFound(format!("unknown account {account}")))?;
    if found.driver != DriverKind::Sandbox {
        return Err(StoreError::Invalid(format!(
            "account {account} is a {} account; only sandbox accounts have a simulated phone",
            found.driver.as_str()
        )));
    }
    Ok(found)
}

/// The simulated phone scans the QR code shown for `account`: the account
/// is connected. Refused when no code is shown.
pub fn scan_sandbox(conn: &Conn, account: &str) -> Result<Account, StoreError> {
    sandbox_account(conn, account)?;
    let removed = conn
        .prepare_cached("DELETE FROM sandbox_pairings WHERE account_id = ?1")?
        .execute([account])?;
    if removed == 0 {
        return Err(StoreError::Invalid(format!(
            "no QR code is shown for account {account}: open its Link page in the dashboard first"
        )));
    }
    admin::connect_by_operator(conn, account, Some("linked by scanning the QR code"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Conn {
        crate::store::test_db(
            "INSERT INTO workspaces (id, name, created_at) VALUES ('w1', 'one', 0);
             INSERT INTO users (id, workspace_id, name, role, created_at) VALUES
               ('owner', 'w1', 'o', 'owner', 0), ('member', 'w1', 'm', 'member', 1);
             INSERT INTO accounts (id, workspace_id, user_id, phone, driver, status, status_changed_at, created_at) VALUES
               ('a1', 'w1', 'member', '+917000000002', 'sandbox', 'connected', 0, 2);",
        )
    }

    #[test]
    fn a_login_link_signs_in_once_and_only_before_it_expires() {
        let conn = db();
        create_login_link(&conn, "member", &[1; 32], 1_000, 0).unwrap();
        create_login_link(&conn, "member", &[2; 32], 1_000, 0).unwrap();
        assert_eq!(
            spend_login_link(&conn, &[1; 32], 999).unwrap().as_deref(),
            Some("member")
        );
        assert_eq!(spend_login_link(&conn, &[1; 32], 999).unwrap(), None);
        assert_eq!(spend_login_link(&conn, &[2; 32], 1_000).unwrap(), None);
        assert_eq!(spend_login_link(&conn, &[2; 32], 0).unwrap(), None);
        assert!(create_login_link(&conn, "nobody", &[3; 32], 1_000, 0).is_err());
    }

    #[test]
    fn sessions_end_when_idle_signed_out_or_the_user_is_removed() {
        let conn = db();
        create_session(&conn, &[1; 32], "member", "csrf", 0).unwrap();
        let s = session(&conn, &[1; 32], SESSION_IDLE_MS - 1)
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.user.id.as_str(), s.csrf_token.as_str()),
            ("member", "csrf")
        );
        assert!(session(&conn, &[1; 32], SESSION_IDLE_MS).unwrap().is_none());
        touch_session(&conn, &[1; 32], SESSION_IDLE_MS).unwrap();
        assert!(session(&conn, &[1; 32], SESSION_IDLE_MS).unwrap().is_some());
        end_session(&conn, &[1; 32]).unwrap();
        assert!(session(&conn, &[1; 32], 1).unwrap().is_none());

        create_session(&conn, &[2; 32], "member", "csrf", 0).unwrap();
        create_login_link(&conn, "member", &[3; 32], 1_000, 0).unwrap();
        remove_user(&conn, "member", 5).unwrap();
        assert!(session(&conn, &[2; 32], 6).unwrap().is_none());
        assert_eq!(spend_login_link(&conn, &[3; 32], 6).unwrap(), None);
        assert_eq!(
            team(&conn, "w1")
                .unwrap()
                .iter()
                .map(|u| u.id.as_str())
                .collect::<Vec<_>>(),
            ["owner"]
        );
        assert!(remove_user(&conn, "member", 7).is_err());
    }

    #[test]
    fn a_sandbox_scan_connects_only_an_account_whose_code_is_shown() {
        let conn = db();
        let err = scan_sandbox(&conn, "a1").unwrap_err();
        assert!(err.to_string().contains("no QR code"), "{err}");
        let waiting = start_sandbox_pairing(&conn, "a1", "n1", 10).unwrap();
        assert_eq!(waiting.status, AccountStatus::Connecting);
        assert_eq!(sandbox_pairing(&conn, "a1").unwrap().unwrap().nonce, "n1");
        let linked = scan_sandbox(&conn, "a1").unwrap();
        assert_eq!(linked.status, AccountStatus::Connected);
        assert!(sandbox_pairing(&conn, "a1").unwrap().is_none());
        assert!(scan_sandbox(&conn, "a1").is_err());
    }
}
