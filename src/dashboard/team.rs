//! Team (owners and admins): members and roles, invites (a new member and
//! their one-time sign-in link), a fresh sign-in link for a member, and
//! removing a member, whose tokens stop working at once.

use std::time::Duration;

use hyper::StatusCode;
use maud::html;

use super::flash::OneTime;
use super::layout::{self, action_button, badge, csrf, secret_once};
use super::session::{LoginLink, SignedIn};
use super::{field, html, Form, PageError, PageResult};
use crate::api::AppState;
use crate::domain::Role;
use crate::store::{admin, dashboard as store, StoreError};

/// How long an invite or a sign-in link made here works.
const INVITE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The page element that shows a new sign-in link once.
const NEW_LINK: &str = "invite-link";

/// The roles `who` may give: owners any, admins admin or member.
fn grantable(who: &SignedIn) -> &'static [Role] {
    if who.user.role == Role::Owner {
        &[Role::Member, Role::Admin, Role::Owner]
    } else {
        &[Role::Member, Role::Admin]
    }
}

pub async fn list(state: &AppState, who: &SignedIn) -> PageResult {
    who.require_manager("manage the team")?;
    let made = state.flashes.take(who.session_key(), NEW_LINK);
    let workspace = who.user.workspace.clone();
    let team = state
        .store
        .read(move |c| store::team(c, &workspace))
        .await?;
    let body = html! {
        h1 { "Team" }
        p.lead { "The people of your workspace. Members send from their own number; owners and admins also from the workspace's." }
        @if let Some(made) = &made {
            (secret_once(made.element, &made.label, &made.secret))
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
                        td { (badge(user.role.as_str())) }
                        td { code { (user.id) } }
                        td {
                            @if user.id != who.user.id && may_act_for(who.user.role, user.role) {
                                (action_button(who, &format!("/team/{}/link", user.id), "Sign-in link", None, "secondary"))
                                " "
                                (action_button(who, &format!("/team/{}/remove", user.id), "Remove",
                                    Some("Remove this member? Their tokens and sessions stop working at once."), "danger"))
                            }
                        }
                    }
                }
            }
        } }
    };
    Ok(html(StatusCode::OK, layout::page(Some(who), "Team", body)))
}

/// Whether `who` may make a sign-in link for, or remove, a member with
/// `role`: owners anyone, admins only members (a link is that member's key,
/// so an admin must not hold an admin's or an owner's).
fn may_act_for(actor: Role, target: Role) -> bool {
    actor == Role::Owner || target == Role::Member
}

pub async fn invite(state: &AppState, who: &SignedIn, form: &Form) -> PageResult {
    who.require_manager("manage the team")?;
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
    who.require_manager("manage the team")?;
    let (workspace, id, actor) = (who.user.workspace.clone(), id.to_string(), who.user.role);
    with_sign_in_link(state, who, move |c| {
        let member = member_of(c, &workspace, &id)?;
        if !may_act_for(actor, member.role) {
            return Err(StoreError::Invalid(
                "Only an owner makes a sign-in link for an admin or an owner.".into(),
            ));
        }
        Ok(member.id)
    })
    .await
}

/// Member `id` of the workspace, or not found.
fn member_of(
    c: &crate::store::Conn,
    workspace: &str,
    id: &str,
) -> Result<crate::store::admin::User, StoreError> {
    store::team_member(c, workspace, id)?
        .ok_or_else(|| StoreError::NotFound(format!("unknown user {id}")))
}

/// In one write: the user `whom` names (an existing member, or one it
/// creates) and a sign-in link for them; then to the Team page, which
/// shows it once.
async fn with_sign_in_link(
    state: &AppState,
    who: &SignedIn,
    whom: impl FnOnce(&crate::store::Conn) -> Result<String, StoreError> + Send + 'static,
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
    state.flashes.put(
        who.session_key(),
        OneTime {
            element: NEW_LINK,
            label: format!("Sign-in link for {} (works once, for 7 days)", user.name),
            secret: link.url(&state.config.public_url()),
        },
    );
    Ok(super::redirect("/team"))
}

pub async fn remove(state: &AppState, who: &SignedIn, id: &str) -> PageResult {
    who.require_manager("manage the team")?;
    if id == who.user.id {
        return Err(PageError::bad_request("You cannot remove yourself."));
    }
    let (workspace, id, now, actor) = (
        who.user.workspace.clone(),
        id.to_string(),
        state.clock.now_ms(),
        who.user.role,
    );
    state
        .store
        .write(move |c| {
            let member = member_of(c, &workspace, &id)?;
            if !may_act_for(actor, member.role) {
                return Err(StoreError::Invalid(
                    "Only an owner removes an admin or an owner.".into(),
                ));
            }
            store::remove_user(c, &id, now)
        })
        .await?;
    Ok(super::redirect("/team"))
}
