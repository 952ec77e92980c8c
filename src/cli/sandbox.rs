//! `sandbox outbox`: what the simulated WhatsApp network "delivered", so a
//! first-time user (and the tests) can see a send arrive without a phone.

use super::{to_json, CliError, Context, Output, SandboxCmd};
use crate::store::outbox;

pub fn run(ctx: &Context, cmd: SandboxCmd) -> Result<Output, CliError> {
    match cmd {
        SandboxCmd::Outbox => list_outbox(ctx),
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
