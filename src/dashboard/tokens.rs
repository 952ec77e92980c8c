//! Tokens: the user's own (owners and admins: the workspace's), creating
//! one (its secret shown once) and revoking.

use hyper::StatusCode;
use maud::html;

use super::flash::OneTime;
use super::layout::{self, action_button, badge, csrf, secret_once};
use super::session::SignedIn;
use super::{field, html, redirect, Form, PageError, PageResult};
use crate::api::AppState;
use crate::domain::token::{self, TokenKind};
use crate::domain::Role;
use crate::store::{admin, dashboard as store};

/// The page element that shows a new token once.
const NEW_TOKEN: &str = "new-token";

pub async fn list(state: &AppState, who: &SignedIn) -> PageResult {
    let created = state.flashes.take(who.session_key(), NEW_TOKEN);
    let workspace = who.user.workspace.clone();
    let only = (!who.manages_workspace()).then(|| who.user.id.clone());
    let tokens = state
        .store
        .read(move |c| store::tokens(c, &workspace, only.as_deref()))
        .await?;
    let kinds: &[TokenKind] = if who.user.role == Role::Owner {
        &[TokenKind::Send, TokenKind::Mcp, TokenKind::Metrics]
    } else {
        &[TokenKind::Send, TokenKind::Mcp]
    };
    let base = state.config.public_url();
    let body = html! {
        h1 { "Tokens" }
        p.lead {
            @if who.manages_workspace() { "Your workspace's tokens. " } @else { "Your tokens. " }
            "A " code { "send" } " token calls the Send API (" code { (base) "/api/v1/messages/send" } "), an "
            code { "mcp" } " token the MCP endpoint (" code { (base) "/mcp" } ")."
        }
        @if let Some(created) = &created {
            (secret_once(created.element, &created.label, &created.secret))
        }
        section.card {
            h2 { "Create a token" }
            form.filters method="post" action="/tokens" {
                (csrf(who))
                label { "Kind" select name="kind" { @for kind in kinds { option value=(kind.as_str()) { (kind.as_str()) } } } }
                label { "Name" input type="text" name="name" maxlength="100" placeholder="What uses it, e.g. HubSpot workflow"; }
                button type="submit" { "Create token" }
            }
        }
        @if tokens.is_empty() {
            (layout::empty("No tokens yet."))
        } @else {
            div.tablewrap { table {
                thead { tr { th { "Token" } th { "Kind" } th { "Name" } @if who.manages_workspace() { th { "Holder" } } th { "Created" } th { "Status" } th {} } }
                tbody {
                    @for (t, holder) in &tokens {
                        tr data-token=(t.id) {
                            td { code { (t.hint) } }
                            td { (t.kind) }
                            td { (t.name.clone().unwrap_or_default()) }
                            @if who.manages_workspace() { td { (holder) } }
                            td { (t.created_at.get(..10).unwrap_or(&t.created_at)) }
                            td { @if t.revoked { (badge("revoked")) } @else { (badge("active")) } }
                            td { @if !t.revoked {
                                (action_button(who, &format!("/tokens/{}/revoke", t.id), "Revoke",
                                    Some("Revoke this token? Whatever uses it stops working at once."), "danger"))
                            } }
                        }
                    }
                }
            } }
        }
    };
    Ok(html(
        StatusCode::OK,
        layout::page(Some(who), "Tokens", body),
    ))
}

/// Create a token for the signed-in user, then show its secret once on the
/// Tokens page (a reload shows nothing and creates nothing).
pub async fn create(state: &AppState, who: &SignedIn, form: &Form) -> PageResult {
    let kind = field(form, "kind")
        .and_then(TokenKind::parse)
        .ok_or_else(|| PageError::bad_request("Choose the token's kind: send or mcp."))?;
    let name = field(form, "name").map(|n| n.chars().take(100).collect::<String>());
    let new = token::generate(kind);
    let secret = new.secret.clone();
    let user = who.user.id.clone();
    state
        .store
        .write(move |c| admin::create_token(c, &user, kind, name.as_deref(), None, &new))
        .await?;
    state.flashes.put(
        who.session_key(),
        OneTime {
            element: NEW_TOKEN,
            label: format!("Your new {} token", kind.as_str()),
            secret,
        },
    );
    Ok(redirect("/tokens"))
}

/// Revoke a token of the user's own, or (owners and admins) any of the
/// workspace's; anything else is 404.
pub async fn revoke(state: &AppState, who: &SignedIn, id: &str) -> PageResult {
    let id = id.to_string();
    let (workspace, user, manages) = (
        who.user.workspace.clone(),
        who.user.id.clone(),
        who.manages_workspace(),
    );
    state
        .store
        .write(move |c| match store::token_holder(c, &id)? {
            Some(holder) if holder.workspace == workspace && (manages || holder.id == user) => {
                admin::revoke_token(c, &id)
            }
            _ => Err(crate::store::StoreError::NotFound(format!(
                "unknown token {id}"
            ))),
        })
        .await?;
    Ok(redirect("/tokens"))
}
