//! `backup FILE` and `prune --older-than D`: what an operator runs beside a
//! serving whatan to keep a copy and to drop old history.

use std::path::Path;

use serde_json::json;

use super::{CliError, Context, Output};
use crate::clock::now_ms;
use crate::config::parse_duration;
use crate::store::{backup, copy, retention};

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

pub fn prune(ctx: &Context, older_than: &str) -> Result<Output, CliError> {
    let age = parse_duration(older_than).ok_or_else(|| {
        CliError(format!(
            "--older-than: invalid duration {older_than:?} (e.g. 30d, 12h)"
        ))
    })?;
    let deleted = retention::prune_all(&ctx.store, age, now_ms())?;
    Ok(Output::new(
        json!({"deleted": deleted}),
        format!("deleted {deleted} attempts final for more than {older_than}"),
    ))
}

/// `migrate [--from-sqlite FILE]`: opening the store already brought its
/// schema up to date (under the advisory lock on PostgreSQL); this reports
/// the version, after copying FILE in if asked.
pub fn migrate(ctx: &Context, from_sqlite: Option<&Path>) -> Result<Output, CliError> {
    let copied = match from_sqlite {
        Some(file) => {
            let (copied, _serving) = copy::from_sqlite_file(&ctx.store, file)?;
            Some((file, copied, copy_linked_sessions(ctx, file)?))
        }
        None => None,
    };
    let version = ctx.store.read_blocking(crate::store::schema_version)?;
    let mut json = json!({ "version": version });
    let mut human = format!("the database schema is at version {version}");
    if let Some((file, copied, sessions)) = copied {
        let rows: u64 = copied.iter().map(|(_, n)| n).sum();
        json["copied"] = copied
            .iter()
            .map(|(table, n)| (table.clone(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        human.push_str(&format!(
            "; copied {rows} rows from {} tables of {}",
            copied.len(),
            file.display()
        ));
        json["sessions"] = sessions
            .iter()
            .map(|(account, n)| (account.clone(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        if !sessions.is_empty() {
            human.push_str(&format!(
                ", and the linked sessions of {} web accounts",
                sessions.len()
            ));
        }
    }
    Ok(Output::new(json, human))
}

/// The linked sessions beside the copied file (`web-sessions/`), moved into
/// the database: entries copied per account.
#[cfg(feature = "web")]
fn copy_linked_sessions(ctx: &Context, file: &Path) -> Result<Vec<(String, u64)>, CliError> {
    crate::driver::web::copy_sessions_blocking(&ctx.store, file).map_err(CliError)
}

/// Without linked-device support there are no sessions to move; a session
/// folder beside the file is left where it is, with a warning.
#[cfg(not(feature = "web"))]
fn copy_linked_sessions(_ctx: &Context, file: &Path) -> Result<Vec<(String, u64)>, CliError> {
    let dir = file.parent().unwrap_or(Path::new(".")).join("web-sessions");
    if dir.is_dir() {
        tracing::warn!(dir = %dir.display(), "linked sessions not copied: this build has no linked-device support");
    }
    Ok(Vec::new())
}
