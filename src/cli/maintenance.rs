//! `backup FILE` and `prune --older-than D`: what an operator runs beside a
//! serving whatan to keep a copy and to drop old history.

use std::path::Path;

use serde_json::json;

use super::{CliError, Context, Output};
use crate::store::backup;

pub fn backup(ctx: &Context, file: &Path) -> Result<Output, CliError> {
    let bytes = backup::backup_to(&ctx.store, file)?;
    let path = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    Ok(Output::new(
        json!({"path": path.display().to_string(), "bytes": bytes}),
        format!(
            "backed up the database to {} ({bytes} bytes)",
            path.display()
        ),
    ))
}
