//! `POST /api/v1/messages/{sendAttemptId}/cancel`: a send that has not been
//! handed to WhatsApp yet (`queued`) is failed with `errorCode`
//! `cancelled` and never handed off. The read rules are the status
//! endpoint's (unreadable is 404, like unknown); `sending` or later is 409
//! `not_cancellable`. The state change is `store::attempts::cancel`, one
//! write job ordered against the pacer's claim by the single writer.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{auth, json_response, status, ApiError, AppState, Body};
use crate::domain::error_codes::CANCELLED;
use crate::domain::{AttemptStatus, ErrorCode};
use crate::store::attempts::{self, CancelOutcome};

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
    let id = uuid.hyphenated().to_string();
    let lookup = id.clone();
    let (principal, attempt) = auth::authenticate_with(state, req.headers(), move |c, _| {
        attempts::get_attempt(c, &lookup)
    })
    .await?;
    // Who may read an attempt never changes, so checking it before the
    // write is as good as checking it inside.
    if !attempt.is_some_and(|a| status::visible(&principal, &a)) {
        return Err(ApiError::not_found());
    }
    let now = state.clock.now_ms();
    let outcome = state
        .store
        .write(move |c| attempts::cancel(c, &id, now))
        .await?;
    match outcome {
        CancelOutcome::Cancelled(attempt) => {
            crate::metrics::attempts_finished(
                &attempt.account_id,
                AttemptStatus::Failed,
                Some(CANCELLED),
                1,
            );
            tracing::info!(attempt = %attempt.id, account = %attempt.account_id, "send cancelled");
            Ok(json_response(
                StatusCode::OK,
                serde_json::to_vec(&attempt.status_body()).unwrap_or_default(),
            ))
        }
        CancelOutcome::NotCancellable(attempt) => Err(ApiError::new(
            ErrorCode::NotCancellable,
            format!(
                "the send is already {}; only a queued send can be cancelled",
                attempt.status
            ),
        )),
        // Removed between the read and the write (retention).
        CancelOutcome::NotFound => Err(ApiError::not_found()),
    }
}
