//! `token create|revoke|list`: bearer tokens for the Send API. The secret
//! exists in clear only in `create`'s output; the store keeps its hash.

use serde_json::json;

use super::{to_json, CliError, Context, Output, TokenCmd};
use crate::clock::now_ms;
use crate::config::parse_duration;
use crate::domain::token::{self, TokenKind};
use crate::store::admin;

pub fn run(ctx: &Context, cmd: TokenCmd) -> Result<Output, CliError> {
    match cmd {
        TokenCmd::Create {
            user,
            name,
            expires_in,
            kind,
        } => create(ctx, user, name, expires_in.as_deref(), &kind),
        TokenCmd::Revoke { id } => revoke(ctx, id),
        TokenCmd::List => list(ctx),
    }
}

fn create(
    ctx: &Context,
    user: String,
    name: Option<String>,
    expires_in: Option<&str>,
    kind: &str,
) -> Result<Output, CliError> {
    let kind = TokenKind::parse(kind)
        .ok_or_else(|| CliError(format!("bad token kind {kind:?}: use send, mcp or metrics")))?;
    let expires_at = match expires_in {
        None => None,
        Some(s) => {
            let d = parse_duration(s).filter(|d| !d.is_zero()).ok_or_else(|| {
                CliError(format!(
                    "--expires-in: invalid duration {s:?} (e.g. 90d, 12h)"
                ))
            })?;
            Some(now_ms().saturating_add(d.as_millis().min(i64::MAX as u128) as i64))
        }
    };
    let new = token::generate(kind);
    let secret = new.secret.clone();
    let u = user.clone();
    let id = ctx.store.write_blocking(move |c| {
        admin::create_token(c, &u, kind, name.as_deref(), expires_at, &new)
    })?;
    Ok(Output::new(
        json!({"id": id, "token": secret, "user": user, "kind": kind.as_str(),
               "expiresAt": expires_at.map(crate::clock::rfc3339_ms)}),
        format!("created token {id} for {user}. Copy it now, it is not shown again:\n{secret}"),
    ))
}

fn revoke(ctx: &Context, id: String) -> Result<Output, CliError> {
    let i = id.clone();
    ctx.store
        .write_blocking(move |c| admin::revoke_token(c, &i))?;
    Ok(Output::new(
        json!({"id": id, "revoked": true}),
        format!("revoked token {id}"),
    ))
}

fn list(ctx: &Context) -> Result<Output, CliError> {
    let all = ctx.store.read_blocking(admin::list_tokens)?;
    Ok(Output::list(&all, to_json, |t| {
        format!(
            "{}  {}  {}  {}{}",
            t.id,
            t.user,
            t.kind,
            t.hint,
            if t.revoked { "  (revoked)" } else { "" }
        )
    }))
}
