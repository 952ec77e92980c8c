//! `GET /readyz`: whether this process can take sends now, for load
//! balancers and orchestrators. Ready when the database takes writes (the
//! writer committed within the last few seconds and has not failed since,
//! or commits a probe now) and the delivery engine runs. No auth; the body
//! names reasons, never secrets or paths.

use std::time::Duration;

use hyper::{Response, StatusCode};
use serde_json::json;

use super::{json_response, AppState, Body};
use crate::store::StoreError;

/// A commit this recent (and no failure after it) is proof enough that the
/// database takes writes; older, a probe is committed.
const RECENT_COMMIT_MS: i64 = 5_000;
/// How long the probe may take before the database counts as not writable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn handle(state: &AppState) -> Response<Body> {
    let mut reasons = Vec::new();
    if let Err(reason) = database_writable(state).await {
        reasons.push(reason);
    }
    if !state.engine.is_running() {
        reasons.push("delivery engine stopped: the server is shutting down".to_string());
    }
    if reasons.is_empty() {
        return json_response(StatusCode::OK, br#"{"status":"ready"}"#.to_vec());
    }
    let body = json!({"status": "not_ready", "reasons": reasons});
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        body.to_string().into_bytes(),
    )
}

async fn database_writable(state: &AppState) -> Result<(), String> {
    let writer = state.store.writer();
    let now = crate::clock::now_ms();
    let recent = writer
        .last_commit_ms()
        .filter(|at| now.saturating_sub(*at) <= RECENT_COMMIT_MS);
    if let Some(at) = recent {
        if writer.last_failure_ms().is_none_or(|failed| failed < at) {
            return Ok(());
        }
    }
    // What every write job gets: BEGIN IMMEDIATE (the write lock), a
    // statement, COMMIT. A read-only or locked database fails it; the
    // statement is a write that changes nothing, which a read-only
    // PostgreSQL session (a standby, `default_transaction_read_only`)
    // refuses.
    let probe = state.store.write(|c| {
        c.execute("UPDATE workspaces SET name = name WHERE 1 = 0", ())?;
        Ok(())
    });
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("database not writable: {}", describe(&e))),
        Err(_) => Err(format!(
            "database not writable: no commit within {} ms",
            PROBE_TIMEOUT.as_millis()
        )),
    }
}

/// SQLite's own words, without the store's prefix.
fn describe(error: &StoreError) -> String {
    match error {
        StoreError::Unavailable(m) => m.clone(),
        other => other.to_string(),
    }
}
