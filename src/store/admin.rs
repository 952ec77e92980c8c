//! Workspaces, users, accounts and tokens: what the admin CLI manages and
//! what authentication reads.

use super::db::{params, OptionalExtension, Row};
use super::Conn;
use serde::Serialize;

use super::{new_id, StoreError};
use crate::clock::now_ms;
use crate::domain::token::{NewToken, TokenKind};
use crate::domain::{AccountStatus, DriverKind, Role};

#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: String,
    pub workspace: String,
    pub name: String,
    pub role: Role,
}

#[derive(Clone, Serialize)]
pub struct Account {
    pub id: String,
    pub workspace: String,
    pub user: String,
    pub phone: String,
    pub driver: DriverKind,
    pub status: AccountStatus,
    #[serde(rename = "statusChangedAt")]
    pub status_changed_at: i64,
    #[serde(rename = "statusDetail")]
    pub status_detail: Option<String>,
    /// Driver settings; may hold secrets, so never serialised or printed.
    #[serde(skip)]
    pub settings: serde_json::Value,
    #[serde(skip)]
    pub next_send_at: i64,
    /// Disconnected by an operator (`account disconnect`): stays offline
    /// whatever its driver reports, until `account connect`.
    #[serde(rename = "heldByOperator")]
    pub held_by_operator: bool,
    /// When the account last left `connected`; `None` while connected.
    #[serde(skip)]
    pub offline_since: Option<i64>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("phone", &self.phone)
            .field("driver", &self.driver)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Account {
    pub fn status(&self) -> AccountStatus {
        self.status
    }

    pub fn driver_kind(&self) -> DriverKind {
        self.driver
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub kind: String,
    pub name: Option<String>,
    pub hint: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "expiresAt")]
    pub expires_at: Option<String>,
    pub revoked: bool,
}

/// Who a valid bearer token speaks for.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub secret_hash: Vec<u8>,
    pub user_id: String,
    pub workspace_id: String,
    pub role: Role,
    pub kind: TokenKind,
    pub expires_at: Option<i64>,
    pub revoked: bool,
}

impl Principal {
    /// What a Send API token of this user would be (the dashboard shows a
    /// signed-in user what their token could read, through the same rules).
    pub fn of_user(user_id: &str, workspace_id: &str, role: Role) -> Principal {
        Principal {
            token_id: String::new(),
            secret_hash: Vec::new(),
            user_id: user_id.to_string(),
            workspace_id: workspace_id.to_string(),
            role,
            kind: TokenKind::Send,
            expires_at: None,
            revoked: false,
        }
    }
}

pub fn create_workspace(conn: &Conn, name: &str) -> Result<Workspace, StoreError> {
    let name = non_empty(name, "workspace name")?;
    let id = new_id("ws");
    conn.prepare_cached("INSERT INTO workspaces (id, name, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![id, name, now_ms()])?;
    Ok(Workspace { id, name })
}

pub fn list_workspaces(conn: &Conn) -> Result<Vec<Workspace>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT id, name FROM workspaces ORDER BY created_at, id")?;
    let rows = stmt.query_map((), |r| {
        Ok(Workspace {
            id: r.get(0)?,
            name: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn workspace_exists(conn: &Conn, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM workspaces WHERE id = ?1")?
        .exists([id])?)
}

pub fn add_user(conn: &Conn, workspace: &str, name: &str, role: Role) -> Result<User, StoreError> {
    let name = non_empty(name, "user name")?;
    if !workspace_exists(conn, workspace)? {
        return Err(StoreError::NotFound(format!(
            "unknown workspace {workspace}"
        )));
    }
    let id = new_id("usr");
    conn.prepare_cached(
        "INSERT INTO users (id, workspace_id, name, role, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, workspace, name, role.as_str(), now_ms()])?;
    Ok(User {
        id,
        workspace: workspace.to_string(),
        name,
        role,
    })
}

pub(super) const USER_COLUMNS: &str = "id, workspace_id, name, role";

pub(super) fn user_from_row(r: &Row<'_>) -> super::db::Result<User> {
    Ok(User {
        id: r.get(0)?,
        workspace: r.get(1)?,
        name: r.get(2)?,
        role: r.get(3)?,
    })
}

pub fn list_users(conn: &Conn) -> Result<Vec<User>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map((), user_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get_user(conn: &Conn, id: &str) -> Result<Option<User>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?
        .query_row([id], user_from_row)
        .optional()?)
}

/// `phone` must already be E.164 (parsed by the caller).
pub fn add_account(
    conn: &Conn,
    workspace: &str,
    user: &str,
    phone: &str,
    driver: DriverKind,
    settings: &serde_json::Value,
) -> Result<Account, StoreError> {
    if !workspace_exists(conn, workspace)? {
        return Err(StoreError::NotFound(format!(
            "unknown workspace {workspace}"
        )));
    }
    let owner = get_user(conn, user)?
        .ok_or_else(|| StoreError::NotFound(format!("unknown user {user}")))?;
    if owner.workspace != workspace {
        return Err(StoreError::Invalid(format!(
            "user {user} belongs to workspace {}, not {workspace}",
            owner.workspace
        )));
    }
    let id = new_id("acc");
    let now = now_ms();
    // A sandbox phone is "on" as soon as it exists; real drivers start
    // disconnected until `account connect` pairs or verifies them.
    let status = match driver {
        DriverKind::Sandbox => AccountStatus::Connected,
        DriverKind::Cloud | DriverKind::Web => AccountStatus::Disconnected,
    };
    let inserted = conn
        .prepare_cached(
            "INSERT INTO accounts (id, workspace_id, user_id, phone, driver, status, status_changed_at, settings, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7)",
        )?
        .execute(params![id, workspace, user, phone, driver.as_str(), status.as_str(), now, settings.to_string()]);
    match inserted {
        Ok(_) => {}
        Err(e) if e.is_unique_violation() => {
            let msg = if e.names_constraint("accounts", "phone") {
                format!("phone {phone} is already an account")
            } else {
                format!("user {user} already has an account attached")
            };
            return Err(StoreError::Conflict(msg));
        }
        Err(e) => return Err(e.into()),
    }
    get_account(conn, &id)?.ok_or_else(|| StoreError::Internal("account vanished".into()))
}

pub(super) const ACCOUNT_COLUMNS: &str = "id, workspace_id, user_id, phone, driver, status, status_changed_at, status_detail, settings, next_send_at, held_by_operator, offline_since";

pub(super) fn account_from_row(r: &Row<'_>) -> super::db::Result<Account> {
    let settings: String = r.get(8)?;
    Ok(Account {
        id: r.get(0)?,
        workspace: r.get(1)?,
        user: r.get(2)?,
        phone: r.get(3)?,
        driver: r.get(4)?,
        status: r.get(5)?,
        status_changed_at: r.get(6)?,
        status_detail: r.get(7)?,
        settings: serde_json::from_str(&settings).unwrap_or(serde_json::Value::Null),
        next_send_at: r.get(9)?,
        held_by_operator: r.get::<_, i64>(10)? != 0,
        offline_since: r.get(11)?,
    })
}

pub fn get_account(conn: &Conn, id: &str) -> Result<Option<Account>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"
        ))?
        .query_row([id], account_from_row)
        .optional()?)
}

pub fn account_by_phone_in_workspace(
    conn: &Conn,
    workspace: &str,
    phone: &str,
) -> Result<Option<Account>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE phone = ?1 AND workspace_id = ?2"
        ))?
        .query_row([phone, workspace], account_from_row)
        .optional()?)
}

pub fn account_of_user(conn: &Conn, user: &str) -> Result<Option<Account>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE user_id = ?1"
        ))?
        .query_row([user], account_from_row)
        .optional()?)
}

pub fn list_accounts(conn: &Conn) -> Result<Vec<Account>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map((), account_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Accounts whose status changed at or after `since_ms` (the server's
/// watcher uses this to notice `account connect/disconnect` from the CLI).
pub fn accounts_changed_since(conn: &Conn, since_ms: i64) -> Result<Vec<Account>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE status_changed_at >= ?1"
    ))?;
    let rows = stmt.query_map([since_ms], account_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Record the state a driver (or the engine) reports for an account.
///
/// An account held by its operator (`account disconnect`) keeps its
/// operator's `disconnected` and detail: a report of `connected`,
/// `connecting` or `disconnected` is ignored, so a linked device that comes
/// back cannot undo the operator's decision; only [`connect_by_operator`]
/// does. Reports that the session ended (`logged_out`) or that WhatsApp
/// banned the account are still recorded. Returns the account as stored.
pub fn set_account_status(
    conn: &Conn,
    id: &str,
    status: AccountStatus,
    detail: Option<&str>,
) -> Result<Account, StoreError> {
    set_account_status_at(conn, id, status, detail, now_ms())
}

/// [`set_account_status`] at the caller's clock reading `now`. Leaving
/// `connected` stamps `offline_since`, which later offline states keep (the
/// offline grace counts from it); `connected` clears it.
pub fn set_account_status_at(
    conn: &Conn,
    id: &str,
    status: AccountStatus,
    detail: Option<&str>,
    now: i64,
) -> Result<Account, StoreError> {
    let before: Option<AccountStatus> = conn
        .prepare_cached("SELECT status FROM accounts WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    conn.prepare_cached(
        "UPDATE accounts SET status = ?2, status_detail = ?3,
             status_changed_at = CASE WHEN status = ?2 THEN status_changed_at ELSE ?4 END,
             offline_since = CASE WHEN ?2 = 'connected' THEN NULL
                                  ELSE COALESCE(offline_since, ?4) END
         WHERE id = ?1 AND (held_by_operator = 0 OR ?2 IN ('logged_out', 'banned'))",
    )?
    .execute(params![
        id,
        status.as_str(),
        detail.map(super::storable_text).as_deref(),
        now
    ])?;
    let account = get_account(conn, id)?
        .ok_or_else(|| StoreError::NotFound(format!("unknown account {id}")))?;
    if before != Some(account.status) {
        emit_account_state(conn, &account, now)?;
    }
    Ok(account)
}

/// `account.<state>` for an account that just entered a state webhooks
/// report (`connecting` is not one), in the same transaction.
fn emit_account_state(conn: &Conn, account: &Account, now: i64) -> Result<(), StoreError> {
    let event = match account.status {
        AccountStatus::Connected => "account.connected",
        AccountStatus::Disconnected => "account.disconnected",
        AccountStatus::LoggedOut => "account.logged_out",
        AccountStatus::Banned => "account.banned",
        AccountStatus::Connecting => return Ok(()),
    };
    // Only a state other than the last one reported: a reconnect that
    // fails (disconnected, connecting, disconnected) is no news.
    let changed = conn
        .prepare_cached(
            "UPDATE accounts SET reported_status = ?2
             WHERE id = ?1 AND reported_status IS DISTINCT FROM ?2",
        )?
        .execute(params![account.id, account.status.as_str()])?;
    if changed == 0 {
        return Ok(());
    }
    super::webhooks::emit(conn, &account.workspace, event, now, || {
        serde_json::json!({
            "accountId": account.id,
            "phone": account.phone,
            "driver": account.driver.as_str(),
            "status": account.status.as_str(),
            "statusDetail": account.status_detail,
            "workspaceId": account.workspace,
        })
    })?;
    Ok(())
}

/// `account disconnect`: mark the account offline and hold it there until
/// [`connect_by_operator`], whatever its driver reports meanwhile.
pub fn disconnect_by_operator(conn: &Conn, id: &str) -> Result<Account, StoreError> {
    // Recorded before the hold, which would refuse it.
    let detail = format!(
        "disconnected by an administrator; `whatan account connect {id}` connects it again"
    );
    set_account_status(conn, id, AccountStatus::Disconnected, Some(&detail))?;
    conn.prepare_cached("UPDATE accounts SET held_by_operator = 1 WHERE id = ?1")?
        .execute([id])?;
    get_account(conn, id)?.ok_or_else(|| StoreError::Internal("account vanished".into()))
}

/// `account connect` (once the driver's own checks passed): release an
/// operator's hold and mark the account connected.
pub fn connect_by_operator(
    conn: &Conn,
    id: &str,
    detail: Option<&str>,
) -> Result<Account, StoreError> {
    conn.prepare_cached("UPDATE accounts SET held_by_operator = 0 WHERE id = ?1")?
        .execute([id])?;
    set_account_status(conn, id, AccountStatus::Connected, detail)
}

/// The accounts of `driver` that their operator holds offline (the
/// linked-device driver stops their devices).
pub fn held_account_ids(conn: &Conn, driver: DriverKind) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM accounts WHERE held_by_operator = 1 AND driver = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([driver.as_str()], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn set_account_settings(
    conn: &Conn,
    id: &str,
    settings: &serde_json::Value,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE accounts SET settings = ?2 WHERE id = ?1")?
        .execute(params![id, settings.to_string()])?;
    Ok(())
}

pub fn create_token(
    conn: &Conn,
    user: &str,
    kind: TokenKind,
    name: Option<&str>,
    expires_at: Option<i64>,
    token: &NewToken,
) -> Result<String, StoreError> {
    let Some(holder) = get_user(conn, user)? else {
        return Err(StoreError::NotFound(format!("unknown user {user}")));
    };
    if kind == TokenKind::Metrics && holder.role != Role::Owner {
        return Err(StoreError::Invalid(format!(
            "only owners may hold a metrics token; {user} is {}",
            holder.role
        )));
    }
    let name = match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) if n.chars().any(char::is_control) || n.chars().count() > 100 => {
            return Err(StoreError::Invalid(
                "token name must be at most 100 characters with no control characters".into(),
            ))
        }
        other => other,
    };
    let id = new_id("tok");
    conn.prepare_cached(
        "INSERT INTO tokens (id, user_id, kind, name, secret_hash, hint, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        id,
        user,
        kind.as_str(),
        name,
        &token.hash[..],
        token.hint,
        now_ms(),
        expires_at
    ])?;
    Ok(id)
}

pub fn revoke_token(conn: &Conn, id: &str) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached("UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1")?
        .execute(params![id, now_ms()])?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("unknown token {id}")));
    }
    Ok(())
}

/// The columns of a [`TokenInfo`], as `t.`-qualified names.
pub(super) const TOKEN_COLUMNS: &str =
    "t.id, t.user_id, t.kind, t.name, t.hint, t.created_at, t.expires_at, t.revoked_at";

pub(super) fn token_from_row(r: &Row<'_>) -> super::db::Result<TokenInfo> {
    Ok(TokenInfo {
        id: r.get(0)?,
        user: r.get(1)?,
        kind: r.get(2)?,
        name: r.get(3)?,
        hint: r.get(4)?,
        created_at: crate::clock::rfc3339_ms(r.get(5)?),
        expires_at: r.get::<_, Option<i64>>(6)?.map(crate::clock::rfc3339_ms),
        revoked: r.get::<_, Option<i64>>(7)?.is_some(),
    })
}

pub fn list_tokens(conn: &Conn) -> Result<Vec<TokenInfo>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens t ORDER BY t.created_at, t.id"
    ))?;
    let rows = stmt.query_map((), token_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The token with this secret hash, with its user; `None` if unknown.
pub fn principal_by_hash(conn: &Conn, hash: &[u8]) -> Result<Option<Principal>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT t.id, t.secret_hash, t.user_id, u.workspace_id, u.role, t.kind, t.expires_at, t.revoked_at
             FROM tokens t JOIN users u ON u.id = t.user_id
             WHERE t.secret_hash = ?1 AND u.removed_at IS NULL",
        )?
        .query_row([hash], |r| {
            let role: String = r.get(4)?;
            let kind: String = r.get(5)?;
            Ok(Principal {
                token_id: r.get(0)?,
                secret_hash: r.get(1)?,
                user_id: r.get(2)?,
                workspace_id: r.get(3)?,
                role: Role::parse(&role).unwrap_or(Role::Member),
                kind: TokenKind::parse(&kind).unwrap_or(TokenKind::Mcp),
                expires_at: r.get(6)?,
                revoked: r.get::<_, Option<i64>>(7)?.is_some(),
            })
        })
        .optional()?)
}

pub fn is_empty(conn: &Conn) -> Result<bool, StoreError> {
    Ok(!conn
        .prepare_cached("SELECT 1 FROM workspaces LIMIT 1")?
        .exists(())?)
}

fn non_empty(s: &str, what: &str) -> Result<String, StoreError> {
    let t = s.trim();
    if t.is_empty() || t.chars().any(char::is_control) || t.chars().count() > 200 {
        return Err(StoreError::Invalid(format!(
            "{what} must be 1 to 200 characters with no control characters"
        )));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web_account(conn: &mut Conn) -> Account {
        crate::store::migrate(conn).unwrap();
        let ws = create_workspace(conn, "Acme").unwrap();
        let user = add_user(conn, &ws.id, "Ana", Role::Owner).unwrap();
        let account = add_account(
            conn,
            &ws.id,
            &user.id,
            "+917000000001",
            DriverKind::Web,
            &serde_json::json!({}),
        )
        .unwrap();
        set_account_status(conn, &account.id, AccountStatus::Connected, None).unwrap()
    }

    #[test]
    fn offline_since_is_when_the_account_left_connected_whatever_flaps_after() {
        use AccountStatus::*;
        let mut conn = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        let id = web_account(&mut conn).id;
        let at = |status, now| set_account_status_at(&conn, &id, status, None, now).unwrap();
        assert_eq!(at(Connected, 1_000).offline_since, None);
        assert_eq!(at(Disconnected, 2_000).offline_since, Some(2_000));
        let flapped = at(Connecting, 3_000);
        assert_eq!(
            (flapped.status_changed_at, flapped.offline_since),
            (3_000, Some(2_000))
        );
        assert_eq!(at(Disconnected, 4_000).offline_since, Some(2_000));
        assert_eq!(at(Connected, 5_000).offline_since, None);
        assert_eq!(at(Connecting, 6_000).offline_since, Some(6_000));
    }

    #[test]
    fn a_driver_cannot_bring_back_an_account_its_operator_disconnected() {
        let mut conn = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        let account = web_account(&mut conn);
        assert_eq!(account.status(), AccountStatus::Connected);

        let held = disconnect_by_operator(&conn, &account.id).unwrap();
        assert_eq!(held.status(), AccountStatus::Disconnected);
        assert!(held.held_by_operator);
        assert_eq!(
            held_account_ids(&conn, DriverKind::Web).unwrap(),
            std::slice::from_ref(&account.id)
        );
        assert!(held_account_ids(&conn, DriverKind::Sandbox)
            .unwrap()
            .is_empty());

        // The linked device reconnects and says so: ignored, detail kept.
        for status in [
            AccountStatus::Connecting,
            AccountStatus::Connected,
            AccountStatus::Disconnected,
        ] {
            let after = set_account_status(&conn, &account.id, status, Some("device")).unwrap();
            assert_eq!(after.status(), AccountStatus::Disconnected, "{status:?}");
            assert_eq!(after.status_detail, held.status_detail);
            assert!(after.held_by_operator);
        }

        // `account connect` releases the hold.
        let back = connect_by_operator(&conn, &account.id, Some("linked")).unwrap();
        assert_eq!(back.status(), AccountStatus::Connected);
        assert!(!back.held_by_operator);
        assert!(held_account_ids(&conn, DriverKind::Web).unwrap().is_empty());
        let dropped = set_account_status(&conn, &account.id, AccountStatus::Disconnected, None);
        assert_eq!(dropped.unwrap().status(), AccountStatus::Disconnected);
    }

    #[test]
    fn a_held_account_still_records_that_its_session_ended() {
        let mut conn = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        let account = web_account(&mut conn);
        disconnect_by_operator(&conn, &account.id).unwrap();
        let after = set_account_status(
            &conn,
            &account.id,
            AccountStatus::LoggedOut,
            Some("unlinked"),
        )
        .unwrap();
        assert_eq!(after.status(), AccountStatus::LoggedOut);
        assert!(after.held_by_operator);
        assert!(matches!(
            set_account_status(&conn, "acc_nope", AccountStatus::Connected, None),
            Err(StoreError::NotFound(_))
        ));
    }
}
