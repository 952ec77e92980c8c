//! Webhooks (owners and admins): the workspace's endpoints, each with its
//! recent deliveries; redelivering one (the API's
//! `POST /api/v1/webhooks/deliveries/{id}/redeliver`), and enabling an
//! endpoint that failing disabled (webhooks.md). Endpoints are added
//! with the API or `whatan webhook add`, which show the secret once.

use hyper::StatusCode;
use maud::html;

use super::layout::{self, action_button, badge};
use super::session::SignedIn;
use super::{html, redirect, PageResult};
use crate::api::AppState;
use crate::store::webhooks as events;
use crate::store::StoreError;

/// Deliveries shown per endpoint.
const SHOWN: usize = 20;

pub async fn list(state: &AppState, who: &SignedIn) -> PageResult {
    who.require_manager("manage webhooks")?;
    let workspace = who.user.workspace.clone();
    let endpoints = state
        .store
        .read(move |c| {
            events::list_endpoints(c, Some(&workspace))?
                .into_iter()
                .map(|e| Ok((events::deliveries(c, &e.id, false, SHOWN)?, e)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await?;
    let body = html! {
        h1 { "Webhooks" }
        p.lead {
            "Status events pushed to your endpoints, signed as Standard Webhooks. Add one with "
            code { "POST /api/v1/webhooks" } " or " code { "whatan webhook add" } "."
        }
        div #webhooks data-live {
            @if endpoints.is_empty() {
                (layout::empty("No endpoints yet."))
            }
            @for (deliveries, e) in &endpoints {
                section.card data-endpoint=(e.id) {
                    div.row {
                        h2 { code { (e.url) } }
                        (badge(&e.status))
                    }
                    @if e.status == "disabled" {
                        p.notice.bad {
                            "Disabled after failing every delivery for " (crate::config::format_duration(state.config.webhooks.disable_after)) ". "
                            (action_button(who, &format!("/webhooks/{}/enable", e.id), "Enable", None, ""))
                        }
                    }
                    p.muted { (e.events.join(", ")) @if let Some(d) = &e.description { " · " (d) } }
                    @if deliveries.is_empty() {
                        p.muted { "No deliveries yet." }
                    } @else {
                        div.tablewrap { table {
                            thead { tr { th { "Event" } th { "Status" } th { "Tries" } th { "Last answer" } th { "Created" } th {} } }
                            tbody { @for d in deliveries {
                                tr {
                                    td { (d.event_type) }
                                    td { (badge(&d.status)) }
                                    td { (d.attempts) }
                                    td { @if let Some(code) = d.last_status_code { "HTTP " (code) } @else { (d.last_error.clone().unwrap_or_default()) } }
                                    td { (layout::stamp(&d.created_at)) }
                                    td { (action_button(who, &format!("/webhooks/deliveries/{}/redeliver", d.id), "Redeliver", None, "secondary")) }
                                }
                            } }
                        } }
                    }
                }
            }
        }
    };
    Ok(html(
        StatusCode::OK,
        layout::page(Some(who), "Webhooks", body),
    ))
}

pub async fn enable(state: &AppState, who: &SignedIn, id: &str) -> PageResult {
    who.require_manager("manage webhooks")?;
    let (id, workspace) = (id.to_string(), who.user.workspace.clone());
    state
        .store
        .write(
            move |c| match events::enable_endpoint(c, &workspace, &id)? {
                true => Ok(()),
                false => Err(StoreError::NotFound(format!("unknown endpoint {id}"))),
            },
        )
        .await?;
    Ok(redirect("/webhooks"))
}

pub async fn redeliver(state: &AppState, who: &SignedIn, id: &str) -> PageResult {
    who.require_manager("manage webhooks")?;
    let (id, workspace, now) = (
        id.to_string(),
        who.user.workspace.clone(),
        state.clock.now_ms(),
    );
    state
        .store
        .write(
            move |c| match events::redeliver(c, &id, Some(&workspace), now)? {
                Some(_) => Ok(()),
                None => Err(StoreError::NotFound(format!("unknown delivery {id}"))),
            },
        )
        .await?;
    Ok(redirect("/webhooks"))
}
