//! `user add|list`: the people of a workspace and their role, which decides
//! what their tokens may send from.

use serde_json::json;

use super::{to_json, CliError, Context, Output, UserCmd};
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
