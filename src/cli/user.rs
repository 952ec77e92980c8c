//! `user add|list|login-link`: the people of a workspace, their role (which
//! decides what their tokens may send from), and their dashboard sign-in.

use serde_json::json;

use super::{to_json, CliError, Context, Output, UserCmd};
use crate::clock::now_ms;
use crate::domain::Role;
use crate::store::admin;

pub fn run(ctx: &Context, cmd: UserCmd) -> Result<Output, CliError> {
    match cmd {
        UserCmd::Add {
            workspace,
            name,
            role,
        } => add(ctx, workspace, name, &role),
        UserCmd::List => list(ctx),
        UserCmd::LoginLink { user, expires_in } => login_link(ctx, user, &expires_in),
    }
}

fn add(ctx: &Context, workspace: String, name: String, role: &str) -> Result<Output, CliError> {
    let role = Role::parse(role)
        .ok_or_else(|| CliError(format!("bad role {role:?}: use owner, admin or member")))?;
    let user = ctx
        .store
        .write_blocking(move |c| admin::add_user(c, &workspace, &name, role))?;
    Ok(Output::new(
        json!({"id": user.id, "workspace": user.workspace, "name": user.name, "role": user.role}),
        format!(
            "created {} {} ({}) in {}",
            user.role, user.id, user.name, user.workspace
        ),
    ))
}

fn list(ctx: &Context) -> Result<Output, CliError> {
    let all = ctx.store.read_blocking(admin::list_users)?;
    Ok(Output::list(&all, to_json, |u| {
        format!("{}  {}  {}  {}", u.id, u.workspace, u.role, u.name)
    }))
}

fn login_link(ctx: &Context, user: String, expires_in: &str) -> Result<Output, CliError> {
    let ttl = crate::config::parse_duration(expires_in)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            CliError(format!(
                "bad --expires-in {expires_in:?}: use a duration such as 15m, 1h or 7d"
            ))
        })?;
    let link = crate::dashboard::session::LoginLink::new(ttl);
    let (hash, expires_at) = (link.hash, link.expires_at);
    ctx.store.write_blocking(move |c| {
        crate::store::dashboard::create_login_link(c, &user, &hash, expires_at, now_ms())
    })?;
    let url = link.url(&ctx.config.public_url());
    let expires = crate::clock::rfc3339_ms(expires_at);
    Ok(Output::new(
        json!({"url": url, "expiresAt": expires}),
        format!("{url}\n(one use; works until {expires})"),
    ))
}
