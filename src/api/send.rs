//! `POST /api/v1/messages/send`, checks in the contract's order: auth, body
//! shape, phone numbers, sender selection, media URL, idempotency,
//! connection state, daily limit. The last three are one atomic write.

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Request, Response, StatusCode};
use serde::Serialize;

use crate::store::Conn;

use super::{auth, json_response, read_body, ApiError, AppState, Body};
use crate::clock::seconds_until_next_utc_midnight;
use crate::domain::{ErrorCode, SendRequest, SenderMode};
use crate::store::admin::{self, Account, Principal};
use crate::store::attempts::{self, EnqueueOutcome, NewAttempt, Replay};
use crate::store::StoreError;

/// The page's "Queued response", fields in the page's order.
#[derive(Serialize)]
struct QueuedResponse<'a> {
    accepted: bool,
    #[serde(rename = "sendAttemptId")]
    send_attempt_id: &'a str,
    #[serde(rename = "messageId")]
    message_id: Option<&'a str>,
    #[serde(rename = "remoteJid")]
    remote_jid: Option<&'a str>,
    from: &'a str,
    to: &'a str,
    #[serde(rename = "normalizedPhone")]
    normalized_phone: &'a str,
    status: &'a str,
}

/// What the Send API answers to an accepted or replayed send: the MCP tool
/// `send_message` returns the same body.
pub(crate) struct Submitted {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// Answered from an earlier request with the same `Idempotency-Key`.
    pub replayed: bool,
}

pub async fn handle(state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    // What needs no database is worked out first; its errors are reported
    // after authentication, keeping the contract's order of checks.
    let (parts, body) = req.into_parts();
    let parsed = async {
        let key = idempotency_key(&parts.headers)?;
        let body = read_body(body, super::MAX_BODY_BYTES).await?;
        let request = SendRequest::parse(&body).map_err(ApiError::from)?;
        Ok::<_, ApiError>((key, request))
    }
    .await;

    // The sender's account is read in the same trip to the database as the
    // token.
    let from = match &parsed {
        Ok((_, request)) => request.from.as_ref().map(|p| p.e164().to_string()),
        Err(_) => None,
    };
    let (principal, sender) =
        auth::authenticate_with(state, &parts.headers, sender_account(from)).await?;
    let (key, request) = parsed?;
    let submitted = submit(state, &principal, sender, key, request).await?;
    let mut response = json_response(submitted.status, submitted.body);
    if submitted.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The read that finds a send's account: the `from` number's account for
/// owners and admins (none for anyone else, who may not choose), else the
/// account attached to the token's user.
pub(crate) fn sender_account(
    from: Option<String>,
) -> impl FnOnce(&Conn, &Principal) -> Result<Option<Account>, StoreError> + Send + 'static {
    move |c, p| match from {
        Some(phone) if p.role.may_choose_sender() => {
            admin::account_by_phone_in_workspace(c, &p.workspace_id, &phone)
        }
        Some(_) => Ok(None),
        None => admin::account_of_user(c, &p.user_id),
    }
}

/// Everything after authentication and parsing, for both surfaces (the Send
/// API and the MCP tool): sender rules, media URL, then the one atomic write
/// of idempotency claim, connection check, daily limit and insert. `sender`
/// is what [`sender_account`] read for this request.
pub(crate) async fn submit(
    state: &AppState,
    principal: &Principal,
    sender: Option<Account>,
    key: Option<String>,
    request: SendRequest,
) -> Result<Submitted, ApiError> {
    // Sender selection.
    let (mode, account) = match &request.from {
        Some(from) => {
            if !principal.role.may_choose_sender() {
                return Err(ApiError::new(
                    ErrorCode::SenderSelectionForbidden,
                    "only workspace owners and admins may choose the sender with from; omit from to send from your own account",
                ));
            }
            let account = sender.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::SenderNotAllowed,
                    format!(
                        "{} is not a connected sender in this workspace",
                        from.e164()
                    ),
                )
            })?;
            (SenderMode::Workspace, Some(account))
        }
        None => (SenderMode::Personal, sender),
    };

    if let Some(url) = request.message.media_url() {
        state.media.validate(url).await.map_err(|e| {
            let mut err = ApiError::new(ErrorCode::InvalidMediaUrl, e.to_string());
            err.field = Some(format!("{}.url", request.message.type_name()));
            err
        })?;
    }

    let Some(account) = account else {
        return Err(not_connected(
            "no WhatsApp account is attached to this token's user",
        ));
    };

    let now = state.clock.now_ms();
    // Time-ordered: each insert lands at the end of the `send_attempts.id`
    // index.
    let id = crate::store::time_ordered_uuid(now).to_string();
    let response_body = queued_body(&id, &account.phone, request.to.e164())?;
    let new = NewAttempt {
        id,
        workspace_id: account.workspace.clone(),
        account_id: account.id.clone(),
        user_id: principal.user_id.clone(),
        mode,
        from_phone: account.phone.clone(),
        to_phone: request.to.e164().to_string(),
        type_name: request.message.type_name(),
        payload: request.message.payload_json().to_string(),
        idempotency: key.map(|k| (k, request.fingerprint())),
        daily_limit: state.config.pacing.daily_limit,
        now,
    };
    // Its only effects are its SQL: it may run twice in a batch.
    let outcome = state
        .store
        .write_repeatable(move |c| attempts::enqueue(c, &new))
        .await;
    match outcome {
        Ok(EnqueueOutcome::Queued) => {
            crate::metrics::attempt_accepted(&account.id);
            state.engine.wake_for_send(&account.id);
            Ok(Submitted {
                status: StatusCode::ACCEPTED,
                body: response_body,
                replayed: false,
            })
        }
        Ok(EnqueueOutcome::Replayed(Replay::Stored { http_status, body })) => Ok(Submitted {
            status: StatusCode::from_u16(http_status).unwrap_or(StatusCode::ACCEPTED),
            body,
            replayed: true,
        }),
        Ok(EnqueueOutcome::Replayed(Replay::Accepted {
            attempt_id,
            from_phone,
            to_phone,
        })) => Ok(Submitted {
            status: StatusCode::ACCEPTED,
            body: queued_body(&attempt_id, &from_phone, &to_phone)?,
            replayed: true,
        }),
        Ok(EnqueueOutcome::KeyConflict) | Err(StoreError::Conflict(_)) => Err(ApiError::new(
            ErrorCode::IdempotencyConflict,
            "this Idempotency-Key was already used with a different request",
        )),
        Ok(EnqueueOutcome::NotConnected) => Err(not_connected(&format!(
            "the WhatsApp account {} is not connected",
            account.phone
        ))),
        Ok(EnqueueOutcome::RateLimited) => {
            let mut err = ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "the WhatsApp account {} reached its limit of {} API sends for this UTC day",
                    account.phone, state.config.pacing.daily_limit
                ),
            );
            // From the instant the count was taken, not a later reading.
            err.retry_after = Some(seconds_until_next_utc_midnight(now));
            Err(err)
        }
        Err(e) => Err(e.into()),
    }
}

/// The 202 body of attempt `id` from `from` to `to` (E.164): built here
/// for the first answer and again, byte for byte, for a replay.
fn queued_body(id: &str, from: &str, to: &str) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(&QueuedResponse {
        accepted: true,
        send_attempt_id: id,
        message_id: None,
        remote_jid: None,
        from,
        to,
        normalized_phone: to.strip_prefix('+').unwrap_or(to),
        status: "queued",
    })
    .map_err(|e| ApiError::from(StoreError::Internal(e.to_string())))
}

fn not_connected(message: &str) -> ApiError {
    ApiError::new(ErrorCode::WhatsappNotConnected, message)
}

/// `Idempotency-Key`: optional; 1-255 printable ASCII (0x21-0x7E), or the
/// quoted form `"abc"` meaning `abc`; anything else, or two headers, is
/// `invalid_request`.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad_key("Idempotency-Key", "must be sent once"));
    }
    check_idempotency_key(value.as_bytes(), "Idempotency-Key").map(Some)
}

/// One idempotency key's syntax, reported against `field` (the header, or
/// the MCP tool's `idempotencyKey` argument).
pub(crate) fn check_idempotency_key(raw: &[u8], field: &str) -> Result<String, ApiError> {
    let inner = match raw {
        [b'"', inner @ .., b'"'] => inner,
        _ => raw,
    };
    if inner.is_empty() || inner.len() > 255 {
        return Err(bad_key(field, "must be 1 to 255 characters"));
    }
    if !inner.iter().all(|b| (0x21..=0x7e).contains(b)) || (inner.contains(&b'"')) {
        return Err(bad_key(
            field,
            "must be printable ASCII without spaces or quotes",
        ));
    }
    Ok(String::from_utf8_lossy(inner).into_owned())
}

fn bad_key(field: &str, why: &str) -> ApiError {
    ApiError::invalid_field(field, format!("{field} {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(values: &[&[u8]]) -> Result<Option<String>, String> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("idempotency-key", HeaderValue::from_bytes(v).unwrap());
        }
        idempotency_key(&h).map_err(|e| e.message)
    }

    #[test]
    fn idempotency_key_syntax() {
        assert_eq!(key(&[]), Ok(None));
        assert_eq!(
            key(&[b"attio-workflow-123"]),
            Ok(Some("attio-workflow-123".into()))
        );
        assert_eq!(key(&[b"\"abc\""]), Ok(Some("abc".into())));
        assert_eq!(key(&[&[b'a'; 255]]), Ok(Some("a".repeat(255))));
        assert!(key(&[&[b'a'; 256]]).is_err());
        assert!(key(&[b"\"\""]).is_err());
        assert!(key(&[b"a b"]).is_err());
        assert!(key(&[b"a\"b"]).is_err());
        assert!(key(&[b"\"abc"]).is_err());
        assert!(key(&[b"caf\xc3\xa9"]).is_err());
        assert!(key(&[b"a", b"b"]).is_err());
    }
}
