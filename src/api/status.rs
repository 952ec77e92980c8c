//! `GET /api/v1/messages/{sendAttemptId}`. Read rules: a token's user reads
//! its own attempts; owners and admins also read workspace-sender-mode
//! attempts of their workspace. Everything else is 404, never 403, so the
//! existence of an attempt is not revealed.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::{auth, json_response, ApiError, AppState, Body};
use crate::clock::rfc3339_ms;
use crate::domain::SenderMode;
use crate::store::admin::Principal;
use crate::store::attempts::{self, AttemptRow};
use crate::store::listing::Readable;

/// The page's status body, with whatan's added fields.
#[derive(Serialize)]
pub(crate) struct StatusResponse<'a> {
    #[serde(rename = "sendAttemptId")]
    send_attempt_id: &'a str,
    status: &'a str,
    #[serde(rename = "messageId")]
    message_id: Option<&'a str>,
    #[serde(rename = "remoteJid")]
    remote_jid: Option<&'a str>,
    #[serde(rename = "errorCode")]
    error_code: Option<&'a str>,
    #[serde(rename = "errorMessage")]
    error_message: Option<&'a str>,
    #[serde(rename = "createdAt")]
    created_at: String,
    #[serde(rename = "updatedAt")]
    updated_at: String,
    // Additions to the page's body (the contract allows added fields).
    from: &'a str,
    to: &'a str,
    #[serde(rename = "type")]
    type_name: &'a str,
    /// When whatan last handed the message to WhatsApp.
    #[serde(rename = "sentAt")]
    sent_at: Option<String>,
}

pub async fn handle(
    state: &AppState,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let Ok(uuid) = uuid::Uuid::parse_str(id) else {
        // Authentication still comes first: a bad token is 401, not 404.
        auth::authenticate(state, req.headers()).await?;
        return Err(ApiError::not_found());
    };
    // The attempt is read in the same trip to a reader thread as the token.
    let id = uuid.hyphenated().to_string();
    let (principal, attempt) = auth::authenticate_with(state, req.headers(), move |c, _| {
        attempts::get_attempt(c, &id)
    })
    .await?;
    match attempt {
        Some(attempt) if visible(&principal, &attempt) => Ok(json_response(
            StatusCode::OK,
            serde_json::to_vec(&view(&attempt)).unwrap_or_default(),
        )),
        _ => Err(ApiError::not_found()),
    }
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

pub(crate) fn view(a: &AttemptRow) -> StatusResponse<'_> {
    StatusResponse {
        send_attempt_id: &a.id,
        status: a.status.as_str(),
        message_id: a.message_id.as_deref(),
        remote_jid: a.remote_jid.as_deref(),
        error_code: a.error_code.as_deref(),
        error_message: a.error_message.as_deref(),
        created_at: rfc3339_ms(a.created_at),
        updated_at: rfc3339_ms(a.updated_at),
        from: &a.from_phone,
        to: &a.to_phone,
        type_name: &a.type_name,
        sent_at: a.handed_off_at.map(rfc3339_ms),
    }
}
