//! `webhook add|list|remove|rotate-secret|deliveries|redeliver`: a
//! workspace's status webhooks (webhooks.md). The rules are
//! `webhooks::manage`'s, shared with `/api/v1/webhooks`; a secret is shown
//! only by `add` and `rotate-secret`.

use serde_json::json;

use super::{to_json, CliError, Context, Output, WebhookCmd};
use crate::clock::now_ms;
use crate::store::webhooks as events;
use crate::webhooks::manage::{self, ManageError};

pub fn run(ctx: &Context, cmd: WebhookCmd) -> Result<Output, CliError> {
    match cmd {
        WebhookCmd::Add {
            workspace,
            url,
            events,
            description,
        } => add(ctx, workspace, url, events, description),
        WebhookCmd::List { workspace } => list(ctx, workspace),
        WebhookCmd::Remove { id } => remove(ctx, id),
        WebhookCmd::RotateSecret { id } => rotate(ctx, id),
        WebhookCmd::Deliveries { id, failed } => deliveries(ctx, id, failed),
        WebhookCmd::Redeliver { id } => redeliver(ctx, id),
    }
}

impl From<ManageError> for CliError {
    fn from(e: ManageError) -> Self {
        match e {
            ManageError::Invalid(field, message) => CliError(format!("{field}: {message}")),
            ManageError::NotFound => CliError("no such webhook endpoint".into()),
            ManageError::Store(e) => e.into(),
        }
    }
}

/// The async rules (DNS for the URL check) on a small runtime of their own.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> Result<T, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError(format!("cannot start a runtime: {e}")))?;
    Ok(runtime.block_on(future))
}

fn add(
    ctx: &Context,
    workspace: String,
    url: String,
    names: Option<String>,
    description: Option<String>,
) -> Result<Output, CliError> {
    let names = names.map(|n| n.split(',').map(str::to_string).collect());
    let events = manage::parse_events(names)?;
    let urls =
        crate::webhooks::url_guard(&ctx.config.media, &ctx.config.webhooks).map_err(CliError)?;
    let (endpoint, secret) = block_on(manage::add(
        &ctx.store,
        &urls,
        &workspace,
        &url,
        events,
        description,
        now_ms(),
    ))??;
    Ok(Output::new(
        manage::added_json(&endpoint, &secret),
        format!(
            "added webhook {} for {}. Its signing secret, shown only now:\n{secret}",
            endpoint.id, endpoint.url
        ),
    ))
}

fn list(ctx: &Context, workspace: Option<String>) -> Result<Output, CliError> {
    let all = ctx
        .store
        .read_blocking(move |c| events::list_endpoints(c, workspace.as_deref()))?;
    Ok(Output::list(&all, to_json, |e| {
        format!("{}  {}  {}  {}", e.id, e.status, e.url, e.events.join(","))
    }))
}

fn remove(ctx: &Context, id: String) -> Result<Output, CliError> {
    let i = id.clone();
    if !ctx
        .store
        .write_blocking(move |c| events::remove_endpoint(c, &i))?
    {
        return Err(ManageError::NotFound.into());
    }
    Ok(Output::new(
        json!({"id": id, "removed": true}),
        format!("removed webhook {id}"),
    ))
}

fn rotate(ctx: &Context, id: String) -> Result<Output, CliError> {
    let secret = block_on(manage::rotate(&ctx.store, &id, now_ms()))??;
    Ok(Output::new(
        json!({"id": id, "secret": secret}),
        format!(
            "new signing secret for {id}, shown only now (the old one signs too for 24 hours):\n{secret}"
        ),
    ))
}

fn deliveries(ctx: &Context, id: String, failed: bool) -> Result<Output, CliError> {
    let i = id.clone();
    if ctx
        .store
        .read_blocking(move |c| events::get_endpoint(c, &i))?
        .is_none()
    {
        return Err(ManageError::NotFound.into());
    }
    let list = ctx.store.read_blocking({
        let id = id.clone();
        move |c| events::deliveries(c, &id, failed, events::RECENT_DELIVERIES)
    })?;
    Ok(Output::list(&list, to_json, |d| {
        format!(
            "{}  {}  {}  {} tries{}",
            d.id,
            d.event_type,
            d.status,
            d.attempts,
            d.last_error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        )
    }))
}

fn redeliver(ctx: &Context, id: String) -> Result<Output, CliError> {
    let i = id.clone();
    let delivery = ctx
        .store
        .write_blocking(move |c| events::redeliver(c, &i, None, now_ms()))?
        .ok_or_else(|| CliError(format!("no webhook delivery {id}")))?;
    Ok(Output::new(
        to_json(&delivery),
        format!(
            "queued {} again as {} (same webhook-id {})",
            id, delivery.id, delivery.event_id
        ),
    ))
}
