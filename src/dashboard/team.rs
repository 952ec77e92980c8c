//! Team (owners and admins): members and roles, invites (a new member and
//! their one-time sign-in link), a fresh sign-in link for a member, and
//! removing a member, whose tokens stop working at once.

use std::time::Duration;

use hyper::StatusCode;
use maud::html;

use super::layout::{self, action_button, badge, csrf, secret_once};
use super::session::{LoginLink, SignedIn};
use super::{field, html, Form, PageError, PageResult};
use crate::api::AppState;
use crate::domain::Role;
use crate::store::{admin, dashboard as store, StoreError};

/// How long an invite or a sign-in link made here works.
const INVITE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A sign-in link just made, for `name`: shown once.
pub struct Made {
    name: String,
    url: String,
}

fn require_manager(who: &SignedIn) -> Result<(), PageError> {
    if who.manages_workspace() {
        Ok(())
    } else {
        Err(PageError::forbidden(
            "Only owners and admins manage the team.",
        ))
    }
}

/// The roles `who` may give: owners any, admins admin or member.
fn grantable(who: &SignedIn) -> &'static [Role] {
    if who.role == Role::Owner {
        &[Role::Member, Role::Admin, Role::Owner]
    } else {
        &[Role::Member, Role::Admin]
    }
}

pub async fn list(state: &AppState, who: &SignedIn, made: Option<Made>) -> PageResult {
    require_manager(who)?;
    let workspace = who.user.workspace.clone();
    let team = state
        .store
        .read(move |c| store::team(c, &workspace))
        .await?;
    let body = html! {
        h1 { "Team" }
        p.lead { "The people of your workspace. Members send from their own number; owners and admins also from the workspace's." }
        @if let Some(made) = &made {
            (secret_once("invite-link", &format!("Sign-in link for {} (works once, for 7 days)", made.name), &made.url))
        }
        section.card {
            h2 { "Invite someone" }
            form.filters method="post" action="/team/invite" {
                (csrf(who))
                label { "Name" input type="text" name="name" required maxlength="100"; }
                label { "Role" select name="role" { @for role in grantable(who) { option value=(role.as_str()) { (role.as_str()) } } } }
                button type="submit" { "Create invite link" }
            }
        }
        div.tablewrap { table {
            thead { tr { th { "Name" } th { "Role" } th { "User id" } th {} } }
            tbody {
                @for user in &team {
                    tr data-user=(user.id) {
                        td { (user.name) @if user.id == who.user.id { " (you)" } }
                        td { (badge(&user.role)) }
                        td { code { (user.id) } }
                        td {
                            @if user.id != who.user.id {
                                (action_button(who, &format!("/team/{}/link", user.id), "Sign-in link", None, "secondary"))
                                " "
                                @if may_remove(who, &user.role) {
                                    (action_button(who, &format!("/team/{}/remove", user.id), "Remove",
                                        Some("Remove this member? Their tokens and sessions stop working at once."), "danger"))
                                }
                            }
                        }
                    }
                }
            }
        } }
    };
    Ok(html(StatusCode::OK, layout::page(Some(who), "Team", body)))
}

fn may_remove(who: &SignedIn, role: &str) -> bool {
    who.role == Role::Owner || role != Role::Owner.as_str()
}

pub async fn invite(state: &AppState, who: &SignedIn, form: &Form) -> PageResult {
    require_manager(who)?;
    let name = field(form, "name")
        .ok_or_else(|| PageError::bad_request("Enter the new member's name."))?
        .chars()
        .take(100)
        .collect::<String>();
    let role = field(form, "role")
        .and_then(Role::parse)
        .filter(|r| grantable(who).contains(r))
        .ok_or_else(|| PageError::bad_request("Choose a role you may give."))?;
    let workspace = who.user.workspace.clone();
    with_sign_in_link(state, who, move |c| {
        Ok(admin::add_user(c, &workspace, &name, role)?.id)
    })
    .await
}

pub async fn sign_in_link(state: &AppState, who: &SignedIn, id: &str) -> PageResult {
    require_manager(who)?;
    let (workspace, id) = (who.user.workspace.clone(), id.to_string());
    with_sign_in_link(state, who, move |c| {
        if !store::team(c, &workspace)?.iter().any(|u| u.id == id) {
            return Err(StoreError::NotFound(format!("unknown user {id}")));
        }
        Ok(id)
    })
    .await
}

/// In one write: the user `whom` names (an existing member, or one it
/// creates) and a sign-in link for them; then the Team page showing it once.
async fn with_sign_in_link(
    state: &AppState,
    who: &SignedIn,
    whom: impl FnOnce(&rusqlite::Connection) -> Result<String, StoreError> + Send + 'static,
) -> PageResult {
    let link = LoginLink::new(INVITE_TTL);
    let (hash, expires_at, now) = (link.hash, link.expires_at, state.clock.now_ms());
    let user = state
        .store
        .write(move |c| {
            let user = whom(c)?;
            store::create_login_link(c, &user, &hash, expires_at, now)
        })
        .await?;
    let made = Made {
        name: user.name,
        url: link.url(&state.config.public_url()),
    };
    list(state, who, Some(made)).await
}

pub async fn remove(state: &AppState, who: &SignedIn, id: &str) -> PageResult {
    require_manager(who)?;
    if id == who.user.id {
        return Err(PageError::bad_request("You cannot remove yourself."));
    }
    let (workspace, id, now, owner) = (
        who.user.workspace.clone(),
        id.to_string(),
        state.clock.now_ms(),
        who.role == Role::Owner,
    );
    state
        .store
        .write(move |c| {
            let member = store::team(c, &workspace)?
                .into_iter()
                .find(|u| u.id == id)
                .ok_or_else(|| StoreError::NotFound(format!("unknown user {id}")))?;
            if !owner && member.role == Role::Owner.as_str() {
                return Err(StoreError::Invalid(
                    "Only an owner removes an owner.".into(),
                ));
            }
            store::remove_user(c, &id, now)
        })
        .await?;
    Ok(super::redirect("/team"))
}
