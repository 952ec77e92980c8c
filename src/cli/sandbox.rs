//! `sandbox outbox|scan`: what the simulated WhatsApp network "delivered",
//! so a first-time user (and the tests) can see a send arrive without a
//! phone; and the simulated phone that scans the dashboard's QR code.

use super::{to_json, CliError, Context, Output, SandboxCmd};
use crate::store::outbox;

pub fn run(ctx: &Context, cmd: SandboxCmd) -> Result<Output, CliError> {
    match cmd {
        SandboxCmd::Outbox => list_outbox(ctx),
        SandboxCmd::Scan { account } => scan(ctx, account),
    }
}

fn list_outbox(ctx: &Context) -> Result<Output, CliError> {
    let all = ctx.store.read_blocking(outbox::list)?;
    Ok(Output::list(&all, to_json, |e| {
        format!(
            "{}  {}  {} -> {}  {}  {}",
            e.delivered_at, e.message_id, e.from, e.to, e.type_name, e.body
        )
    }))
}

fn scan(ctx: &Context, account: String) -> Result<Output, CliError> {
    let linked = ctx
        .store
        .write_blocking(move |c| crate::store::dashboard::scan_sandbox(c, &account))?;
    Ok(Output::new(
        serde_json::json!({"id": linked.id, "status": linked.status}),
        format!(
            "account {} ({}) is {}",
            linked.id,
            linked.phone,
            linked.status.as_str()
        ),
    ))
}
