//! `GET /api/v1/messages/{sendAttemptId}`. Read rules: a token's user reads
//! its own attempts; owners and admins also read workspace-sender-mode
//! attempts of their workspace. Everything else is 404, never 403, so the
//! existence of an attempt is not revealed.

use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};

use super::{auth, json_response, ApiError, AppState, Body};
use crate::domain::{AttemptStatus, SenderMode};
use crate::store::admin::Principal;
use crate::store::attempts::{self, AttemptRow};
use crate::store::listing::Readable;

pub async fn handle(
    state: &AppState,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let (_, attempt) = readable_attempt(state, req.headers(), id).await?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&attempt.status_body()).unwrap_or_default(),
    ))
}

/// Authenticate, then read attempt `id` under the read rules, in the same
/// trip to a reader thread: 401 before anything else, then 404 for a
/// malformed id, an unknown attempt, or one this token may not read.
pub(crate) async fn readable_attempt(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Principal, AttemptRow), ApiError> {
    let Some(id) = attempt_id(id) else {
        // Authentication still comes first: a bad token is 401, not 404.
        auth::authenticate(state, headers).await?;
        return Err(ApiError::not_found());
    };
    let (principal, attempt) =
        auth::authenticate_with(state, headers, move |c, _| attempts::get_attempt(c, &id)).await?;
    match attempt {
        Some(attempt) if visible(&principal, &attempt) => Ok((principal, attempt)),
        _ => Err(ApiError::not_found()),
    }
}

/// A `sendAttemptId` as stored (a hyphenated UUID, whatever case or form
/// the caller wrote it in), or `None` for what cannot be one.
pub(crate) fn attempt_id(raw: &str) -> Option<String> {
    uuid::Uuid::parse_str(raw)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// A `status` filter (`GET /api/v1/messages`, the MCP tool
/// `list_recent_messages`): one of the attempt statuses, or
/// `invalid_request` naming them.
pub(crate) fn status_filter(value: &str) -> Result<AttemptStatus, ApiError> {
    AttemptStatus::parse(value).ok_or_else(|| {
        let names: Vec<&str> = AttemptStatus::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::invalid_field(
            "status",
            format!("status must be one of {}", names.join(", ")),
        )
    })
}

/// The read rule: a token's user reads its own attempts; owners and admins
/// also read workspace-sender-mode attempts of their workspace.
pub(crate) fn visible(principal: &Principal, attempt: &AttemptRow) -> bool {
    let own = attempt.user_id == principal.user_id;
    let workspace_view = principal.role.may_choose_sender()
        && attempt.mode == SenderMode::Workspace
        && attempt.workspace_id == principal.workspace_id;
    own || workspace_view
}

/// The same rule as a listing's scope (`GET /api/v1/messages`, the MCP
/// tool `list_recent_messages`).
pub(crate) fn readable(principal: &Principal) -> Readable<'_> {
    Readable {
        user_id: &principal.user_id,
        workspace_view: principal
            .role
            .may_choose_sender()
            .then_some(principal.workspace_id.as_str()),
    }
}
