//! Accounts and linking a phone: the numbers a user may send from (the
//! MCP tool `list_senders`'s rule), their live state, today's usage and
//! queue depth; adding a number; the Link page with its QR code.

use hyper::StatusCode;
use maud::{html, Markup};
use serde_json::json;

use super::layout::{self, action_button, badge, csrf};
use super::link::{self, LinkState};
use super::session::SignedIn;
use super::{field, html, qr, redirect, Form, PageError, PageResult};
use crate::api::status::readable;
use crate::api::AppState;
use crate::domain::{AccountStatus, DriverKind, Phone};
use crate::store::admin::{self, Account, User};
use crate::store::{attempts, dashboard as store, gauges, listing, StoreError};

/// An account as the Accounts page shows it.
struct Row {
    account: Account,
    sent_today: i64,
    waiting: i64,
}

pub async fn list(state: &AppState, who: &SignedIn) -> PageResult {
    let principal = who.principal();
    let day = crate::clock::utc_day(state.clock.now_ms());
    let (rows, team) = state
        .store
        .read(move |c| {
            let rows = listing::senders(c, &readable(&principal))?
                .into_iter()
                .map(|account| {
                    Ok(Row {
                        sent_today: attempts::sent_on_day(c, &account.id, day)?,
                        waiting: gauges::waiting(c, &account.id)?,
                        account,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok((rows, store::team(c, &principal.workspace_id)?))
        })
        .await?;
    let limit = state.config.pacing.daily_limit;
    let has_own = rows.iter().any(|r| r.account.user == who.user.id);
    let can_add = who.manages_workspace() || !has_own;
    let body = html! {
        div.row.heading {
            h1 { "Accounts" }
        }
        p.lead { "The WhatsApp numbers you can send from. States update by themselves." }
        @if can_add {
            p { a.button href="/accounts/new" { (if who.manages_workspace() { "Add a number" } else { "Link your phone" }) } }
        }
        div #accounts data-live {
            @if rows.is_empty() {
                (layout::empty("No numbers yet. Add one to start sending."))
            } @else {
                div.grid {
                    @for row in &rows {
                        (account_card(who, row, limit, &team))
                    }
                }
            }
        }
    };
    Ok(html(
        StatusCode::OK,
        layout::page(Some(who), "Accounts", body),
    ))
}

fn account_card(who: &SignedIn, row: &Row, limit: i64, team: &[User]) -> Markup {
    let a = &row.account;
    let holder = team
        .iter()
        .find(|u| u.id == a.user)
        .map(|u| u.name.as_str())
        .unwrap_or(a.user.as_str());
    html! {
        article.card.account data-account=(a.id) {
            div.row {
                h3 { (a.phone) }
                (badge(a.status.as_str()))
            }
            p.muted {
                (a.driver.as_str()) " · "
                @if a.user == who.user.id { "your number" } @else { "attached to " (holder) }
            }
            @if let Some(detail) = &a.status_detail {
                p.detail { (detail) }
            }
            dl.facts {
                dt { "Sent today" }
                dd {
                    span.sent { (row.sent_today) } " of " (limit)
                    progress.meter value=(row.sent_today.min(limit)) max=(limit.max(1)) {}
                }
                dt { "Waiting" }
                dd.waiting { (row.waiting) }
            }
            div.actions {
                @if a.status != AccountStatus::Connected && may_link(who, a) {
                    a.button href={ "/accounts/" (a.id) "/link" } { "Link phone" }
                }
                @if a.status == AccountStatus::Connected && who.manages_workspace() {
                    (action_button(who, &format!("/accounts/{}/disconnect", a.id), "Disconnect",
                        Some("Disconnect this number? Queued messages wait until it is linked again."), "secondary"))
                }
            }
        }
    }
}

/// Whether `who` may see and act on `account`: their own number, or any
/// of the workspace's for owners and admins.
fn may_manage(who: &SignedIn, account: &Account) -> bool {
    account.workspace == who.user.workspace
        && (account.user == who.user.id || who.manages_workspace())
}

/// Whether `who` may link `account` (again): a member their own number,
/// unless an owner or admin disconnected it (only they undo that, as only
/// `account connect` undoes `account disconnect`).
fn may_link(who: &SignedIn, account: &Account) -> bool {
    may_manage(who, account) && (who.manages_workspace() || !account.held_by_operator)
}

/// Refuse what only an owner or admin may do to a held account.
fn require_link(who: &SignedIn, account: &Account) -> Result<(), PageError> {
    if may_link(who, account) {
        Ok(())
    } else {
        Err(PageError::forbidden(
            "An owner or admin disconnected this number; ask them to link it again.",
        ))
    }
}

/// The account `id` if `who` may manage it; 404 otherwise, as the API
/// answers for what a token may not see.
async fn managed_account(state: &AppState, who: &SignedIn, id: &str) -> Result<Account, PageError> {
    managed_account_with(state, who, id, |_, _| Ok(()))
        .await
        .map(|(account, ())| account)
}

/// [`managed_account`], and in the same trip to the store `then`'s read of
/// it (whose answer is dropped when `who` may not see the account).
async fn managed_account_with<T, F>(
    state: &AppState,
    who: &SignedIn,
    id: &str,
    then: F,
) -> Result<(Account, T), PageError>
where
    T: Send + 'static,
    F: FnOnce(&crate::store::Conn, &Account) -> Result<T, StoreError> + Send + 'static,
{
    let id = id.to_string();
    let found = state
        .store
        .read(move |c| match admin::get_account(c, &id)? {
            Some(account) => {
                let extra = then(c, &account)?;
                Ok(Some((account, extra)))
            }
            None => Ok(None),
        })
        .await?;
    match found {
        Some((account, extra)) if may_manage(who, &account) => Ok((account, extra)),
        _ => Err(PageError::not_found()),
    }
}

pub async fn new_form(state: &AppState, who: &SignedIn, error: Option<&str>) -> PageResult {
    let workspace = who.user.workspace.clone();
    let team = state
        .store
        .read(move |c| store::team(c, &workspace))
        .await?;
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let body = html! {
        section.card.narrow {
            h1 { (if who.manages_workspace() { "Add a number" } else { "Link your phone" }) }
            p.lead { "Add the WhatsApp number, then link it by scanning a QR code with the phone." }
            @if let Some(error) = error {
                p.notice.bad { (error) }
            }
            form.stack method="post" action="/accounts/new" {
                (csrf(who))
                label {
                    "Phone number"
                    span.hint { "International format, with the country code: +917000000001" }
                    input type="tel" name="phone" required autocomplete="off" placeholder="+917000000001";
                }
                label {
                    "Connection"
                    select name="driver" {
                        @if cfg!(feature = "web") {
                            option value="web" { "WhatsApp on a phone (linked device)" }
                        }
                        option value="sandbox" { "Sandbox (simulated phone, for trying whatan)" }
                    }
                    span.hint { "Cloud API numbers are added by an operator: whatan account add --driver cloud." }
                }
                @if who.manages_workspace() {
                    label {
                        "Attached to"
                        span.hint { "Personal sends of this person go out from this number. A shared workspace number gets a user of its own (Team page)." }
                        select name="user" {
                            @for user in &team {
                                option value=(user.id) selected[user.id == who.user.id] { (user.name) " (" (user.role) ")" }
                            }
                        }
                    }
                }
                div.actions { button type="submit" { "Add and link" } }
            }
        }
    };
    Ok(html(status, layout::page(Some(who), "Add a number", body)))
}

pub async fn add(state: &AppState, who: &SignedIn, form: &Form) -> PageResult {
    let phone = match field(form, "phone").map(Phone::parse) {
        None => return new_form(state, who, Some("Enter the phone number.")).await,
        Some(Err(e)) => {
            return new_form(
                state,
                who,
                Some(&format!("That phone number is not valid: {e}.")),
            )
            .await
        }
        Some(Ok(phone)) => phone.e164().to_string(),
    };
    let driver = match field(form, "driver").and_then(DriverKind::parse) {
        Some(DriverKind::Sandbox) => DriverKind::Sandbox,
        Some(DriverKind::Web) if cfg!(feature = "web") => DriverKind::Web,
        _ => return new_form(state, who, Some("Choose how the number connects.")).await,
    };
    // Members add their own number; owners and admins any team member's.
    let user = match field(form, "user") {
        Some(user) if who.manages_workspace() => user.to_string(),
        _ => who.user.id.clone(),
    };
    let workspace = who.user.workspace.clone();
    let nonce = super::session::new_secret();
    let now = state.clock.now_ms();
    let added = state
        .store
        .write(move |c| {
            if store::team_member(c, &workspace, &user)?.is_none() {
                return Err(StoreError::NotFound(format!("unknown user {user}")));
            }
            let account = admin::add_account(c, &workspace, &user, &phone, driver, &json!({}))?;
            if driver == DriverKind::Sandbox {
                return store::start_sandbox_pairing(c, &account.id, &nonce, now);
            }
            Ok(account)
        })
        .await;
    let account = match added {
        Ok(account) => account,
        Err(StoreError::Conflict(why) | StoreError::Invalid(why)) => {
            return new_form(state, who, Some(&why)).await
        }
        Err(e) => return Err(e.into()),
    };
    if account.driver == DriverKind::Web {
        link::start_web(state, account.clone(), false);
    }
    Ok(redirect(&format!("/accounts/{}/link", account.id)))
}

/// `GET`: the Link page. `POST`: show a new code (`mode=pair_code` for a
/// pair code instead of a QR code), then the page.
pub async fn link(state: &AppState, who: &SignedIn, id: &str, form: Option<&Form>) -> PageResult {
    // The page refreshes itself every 2 s: the account and its sandbox
    // pairing come in one trip.
    let (account, pairing) =
        managed_account_with(state, who, id, |c, a| store::sandbox_pairing(c, &a.id)).await?;
    if let Some(form) = form {
        require_link(who, &account)?;
        match account.driver {
            DriverKind::Sandbox => {
                let (id, nonce, now) = (account.id.clone(), super::session::new_secret(), state.clock.now_ms());
                state
                    .store
                    .write(move |c| store::start_sandbox_pairing(c, &id, &nonce, now))
                    .await?;
            }
            DriverKind::Web => {
                link::start_web(state, account.clone(), field(form, "mode") == Some("pair_code"))
            }
            DriverKind::Cloud => {
                return Err(PageError::bad_request(
                    "A Cloud API number is connected by checking its credentials: whatan account connect ID.",
                ))
            }
        }
        return Ok(redirect(&format!("/accounts/{}/link", account.id)));
    }
    let now = state.clock.now_ms();
    // A pairing that linked says so only while the account is connected:
    // a phone that unlinked itself since is linked again from scratch.
    let web_link = state.links.get(&account.id).filter(|s| {
        !matches!(s, LinkState::Linked(_)) || account.status == AccountStatus::Connected
    });
    let body = html! {
        h1 { "Link " (account.phone) }
        p.lead { "On the phone: WhatsApp › Settings › Linked devices › Link a device, then scan the code." }
        section.card {
            div #link-state data-live {
                (link_state(who, &account, web_link, pairing.as_ref(), now))
            }
        }
        p { a href="/accounts" { "Back to accounts" } }
    };
    Ok(html(
        StatusCode::OK,
        layout::page(Some(who), "Link a phone", body),
    ))
}

/// The live part of the Link page.
fn link_state(
    who: &SignedIn,
    account: &Account,
    web: Option<LinkState>,
    sandbox: Option<&store::SandboxPairing>,
    now: i64,
) -> Markup {
    let start_form = |label: &str, mode: &str| {
        html! {
            form.inline method="post" action={ "/accounts/" (account.id) "/link" } {
                (csrf(who))
                input type="hidden" name="mode" value=(mode);
                button type="submit" class=(if mode == "qr" { "" } else { "secondary" }) { (label) }
            }
        }
    };
    if !may_link(who, account) && account.status != AccountStatus::Connected {
        return html! {
            p.notice.bad.linkstatus { "An owner or admin disconnected this number; ask them to link it again." }
        };
    }
    if account.status == AccountStatus::Connected {
        return html! {
            p.notice.good.linkstatus { strong { "Connected." } " " (account.status_detail.clone().unwrap_or_default()) }
            p { "Messages sent from " (account.phone) " now go out. " a href="/accounts" { "Back to accounts" } }
        };
    }
    match (account.driver, sandbox, web) {
        (DriverKind::Sandbox, Some(pairing), _) => {
            let payload =
                link::sandbox_qr_payload(&account.id, &pairing.nonce, pairing.started_at, now);
            html! {
                div.link-panel {
                    div.qr { (qr_markup(&payload)) }
                    div {
                        p.linkstatus { (badge("connecting")) " Waiting for the phone to scan this code." }
                        p.muted { "This is a sandbox number: a simulated phone scans the code. On the server run" }
                        pre { code { "whatan sandbox scan " (account.id) } }
                        (action_button(who, &format!("/accounts/{}/scan", account.id), "Scan with the simulated phone", None, ""))
                    }
                }
            }
        }
        (DriverKind::Sandbox, None, _) => html! {
            p.linkstatus { (badge(account.status.as_str())) " " (account.status_detail.clone().unwrap_or_default()) }
            div.actions { (start_form("Show the QR code", "qr")) }
        },
        (
            _,
            _,
            Some(LinkState::Qr {
                payload,
                valid_for_secs,
            }),
        ) => html! {
            div.link-panel {
                div.qr { (qr_markup(&payload)) }
                div {
                    p.linkstatus { (badge("connecting")) " Scan this code with the phone of " (account.phone) "." }
                    p.muted { "WhatsApp replaces the code about every " (valid_for_secs) " seconds; this page redraws it." }
                }
            }
        },
        (_, _, Some(LinkState::PairCode { code })) => html! {
            p.linkstatus { (badge("connecting")) " On the phone: Link a device › Link with phone number instead, and type:" }
            p.paircode { (code) }
        },
        (_, _, Some(LinkState::Starting)) => html! {
            p.linkstatus { (badge("connecting")) " Asking WhatsApp for a code…" }
        },
        (_, _, Some(LinkState::Renewing)) => html! {
            p.linkstatus { (badge("connecting")) " The codes expired; asking WhatsApp for new ones…" }
        },
        (_, _, Some(LinkState::Linked(detail))) => html! {
            p.notice.good.linkstatus { strong { "Connected." } " " (detail) }
        },
        (_, _, Some(LinkState::Failed(reason))) => html! {
            p.notice.bad.linkstatus { strong { "Linking failed: " } (reason) }
            div.actions { (start_form("Try again with a QR code", "qr")) (start_form("Use a pair code", "pair_code")) }
        },
        (_, _, None) => html! {
            p.linkstatus { (badge(account.status.as_str())) " " (account.status_detail.clone().unwrap_or_default()) }
            div.actions { (start_form("Show the QR code", "qr")) (start_form("Use a pair code", "pair_code")) }
        },
    }
}

fn qr_markup(payload: &str) -> Markup {
    match qr::svg(payload) {
        Some(svg) => layout::trusted_svg(svg),
        None => html! { p.notice.bad { "This code is too long to draw." } },
    }
}

/// The simulated phone scans the sandbox account's code (the page's button;
/// `whatan sandbox scan` does the same).
pub async fn scan(state: &AppState, who: &SignedIn, id: &str) -> PageResult {
    let account = managed_account(state, who, id).await?;
    require_link(who, &account)?;
    let id = account.id.clone();
    state
        .store
        .write(move |c| store::scan_sandbox(c, &id))
        .await?;
    Ok(redirect(&format!("/accounts/{}/link", account.id)))
}

/// Owners and admins take a number offline, held until one of them links
/// it again (dashboard.md gives disconnecting to them).
pub async fn disconnect(state: &AppState, who: &SignedIn, id: &str) -> PageResult {
    let account = managed_account(state, who, id).await?;
    who.require_manager("disconnect numbers")?;
    let id = account.id.clone();
    state
        .store
        .write(move |c| admin::disconnect_by_operator(c, &id))
        .await?;
    state.links.forget(&account.id);
    Ok(redirect("/accounts"))
}
