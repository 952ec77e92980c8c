//! `workspace create|list`: the top of the tenancy tree, which users,
//! accounts and tokens belong to.

use serde_json::json;

use super::{to_json, CliError, Context, Output, WorkspaceCmd};
use crate::store::admin;

pub fn run(ctx: &Context, cmd: WorkspaceCmd) -> Result<Output, CliError> {
    match cmd {
        WorkspaceCmd::Create { name } => create(ctx, name),
        WorkspaceCmd::List => list(ctx),
    }
}

fn create(ctx: &Context, name: String) -> Result<Output, CliError> {
    let ws = ctx
        .store
        .write_blocking(move |c| admin::create_workspace(c, &name))?;
    Ok(Output::new(
        json!({"id": ws.id, "name": ws.name}),
        format!("created workspace {} ({})", ws.id, ws.name),
    ))
}

fn list(ctx: &Context) -> Result<Output, CliError> {
    let all = ctx.store.read_blocking(admin::list_workspaces)?;
    Ok(Output::list(&all, to_json, |w| {
        format!("{}  {}", w.id, w.name)
    }))
}
