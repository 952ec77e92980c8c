//! `POST /api/v1/messages/{sendAttemptId}/cancel`: a send that has not been
//! handed to WhatsApp yet (`queued`) is failed with `errorCode`
//! `cancelled` and never handed off. The read rules are the status
//! endpoint's (unreadable is 404, like unknown); `sending` or later is 409
//! `not_cancellable`. The state change is `store::attempts::cancel`, one
//! write job ordered against the pacer's claim by the single writer.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{json_response, status, ApiError, AppState, Body};
use crate::domain::error_codes::CANCELLED;
use crate::domain::{AttemptStatus, ErrorCode};
use crate::store::attempts::{self, CancelOutcome};

pub async fn handle(
    state: &AppState,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    // Who may read an attempt never changes, so checking it before the
    // write is as good as checking it inside.
    let (_, attempt) = status::readable_attempt(state, req.headers(), id).await?;
    let id = attempt.id;
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
