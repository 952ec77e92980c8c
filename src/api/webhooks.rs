//! `GET|POST /webhooks/cloud/{accountId}`: Meta's webhooks for a Cloud API
//! account, the URL pasted into the Meta app's dashboard.
//!
//! - `GET` is Meta's verification handshake: `hub.mode=subscribe`, the
//!   account's verify token (compared in constant time) and a
//!   `hub.challenge` that is echoed back as plain text.
//! - `POST` carries notifications. Nothing in the body is looked at before
//!   its `X-Hub-Signature-256` (HMAC-SHA256 of the raw bytes under the
//!   account's app secret) checks out; unsigned or badly signed bodies get
//!   401 and change nothing. Message statuses (`sent`, `delivered`, `read`,
//!   `failed`) then move their attempts forward through
//!   [`attempts::transition`], which never moves one backwards, so Meta's
//!   duplicate and out-of-order deliveries are harmless. A correctly signed
//!   body always gets 200, even if nothing in it is known: anything else
//!   would make Meta retry it for days.
//!
//! A status only touches attempts of accounts that share this account's app
//! secret: Meta sends every number of one app to the app's one webhook URL,
//! and a tenant holding one app's secret must not be able to move another
//! app's messages.
//!
//! Meta's payload shapes and error codes are read by `driver::cloud`; this
//! module is the HTTP and store side.

use std::collections::HashMap;

use crate::store::Conn;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{json_response, ApiError, AppState, Body};
use crate::domain::{AttemptStatus, DriverKind, ErrorCode};
use crate::driver::cloud::{self, CloudSettings, StatusUpdate};
use crate::store::admin;
use crate::store::attempts::{self, AttemptKey, TransitionFields};
use crate::store::StoreError;

/// The route's prefix; the rest of the path is the account id.
pub const PATH_PREFIX: &str = "/webhooks/cloud/";

/// Meta batches notifications, so bodies are bigger than Send API requests.
const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

/// Longest `hub.challenge` echoed back (Meta sends a short number).
const MAX_CHALLENGE_CHARS: usize = 256;

pub async fn handle(
    state: &AppState,
    req: Request<Incoming>,
    account_id: &str,
) -> Result<Response<Body>, ApiError> {
    let settings = cloud_settings_of(state, account_id).await?;
    if req.method() == Method::GET {
        handshake(&req, &settings)
    } else {
        notification(state, req, account_id, &settings).await
    }
}

/// The settings of the cloud account `account_id`; 404 for anything else,
/// so the URL tells nothing about accounts of other drivers.
async fn cloud_settings_of(state: &AppState, account_id: &str) -> Result<CloudSettings, ApiError> {
    let no_webhook = || {
        ApiError::new(
            ErrorCode::NotFound,
            "no Cloud API account receives webhooks at this URL",
        )
    };
    if account_id.is_empty() || account_id.len() > 100 || account_id.contains('/') {
        return Err(no_webhook());
    }
    let id = account_id.to_string();
    let account = state
        .store
        .read(move |c| admin::get_account(c, &id))
        .await?
        .filter(|a| a.driver_kind() == DriverKind::Cloud)
        .ok_or_else(no_webhook)?;
    CloudSettings::from_json(&account.settings).map_err(|reason| {
        tracing::warn!(account = %account.id, %reason, "webhook for a cloud account with unusable settings");
        no_webhook()
    })
}

/// Meta's subscription check: echo `hub.challenge` if the verify token is
/// the account's.
fn handshake(
    req: &Request<Incoming>,
    settings: &CloudSettings,
) -> Result<Response<Body>, ApiError> {
    let (mut mode, mut token, mut challenge) = (None, None, None);
    for (key, value) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        let slot = match key.as_ref() {
            "hub.mode" => &mut mode,
            "hub.verify_token" => &mut token,
            "hub.challenge" => &mut challenge,
            _ => continue,
        };
        // A repeated parameter keeps its first value.
        if slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }
    if mode.as_deref() != Some("subscribe") {
        return Err(ApiError::invalid("hub.mode must be \"subscribe\""));
    }
    let given = token.unwrap_or_default();
    if !cloud::secrets_equal(&settings.verify_token, &given) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "hub.verify_token is not this account's verify token",
        ));
    }
    // Echoed into a response body: keep it to the characters Meta uses.
    let challenge = challenge
        .filter(|c| {
            !c.is_empty()
                && c.len() <= MAX_CHALLENGE_CHARS
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .ok_or_else(|| ApiError::invalid("hub.challenge is missing or malformed"))?;
    let mut response = Response::new(Full::new(Bytes::from(challenge)));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// A signed notification from Meta.
async fn notification(
    state: &AppState,
    req: Request<Incoming>,
    account_id: &str,
    settings: &CloudSettings,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let mut signatures = parts.headers.get_all("x-hub-signature-256").iter();
    let signature = match (signatures.next(), signatures.next()) {
        (Some(value), None) => value.to_str().unwrap_or("").to_string(),
        _ => String::new(),
    };
    let body = super::read_body(body, MAX_WEBHOOK_BYTES).await?;
    if signature.is_empty() || !cloud::signature_is_valid(&settings.app_secret, &body, &signature) {
        tracing::warn!(account = %account_id, "refused a Cloud API webhook with a missing or wrong signature");
        return Err(ApiError::unauthorized(
            "X-Hub-Signature-256 is missing or is not the HMAC-SHA256 of this body under the account's app secret",
        ));
    }
    let notification: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        tracing::warn!(account = %account_id, "a signed Cloud API webhook is not JSON; acknowledged and ignored");
        Value::Null
    });
    let updates = cloud::status_updates(&notification);
    let received = updates.len();
    let applied = if updates.is_empty() {
        0
    } else {
        let app_secret = settings.app_secret.clone();
        let now = state.clock.now_ms();
        let moved = state
            .store
            .write(move |c| apply_statuses(c, &updates, &app_secret, now))
            .await?;
        for (account, status, code) in &moved {
            crate::metrics::attempts_finished(account, *status, *code, 1);
        }
        moved.len()
    };
    tracing::debug!(account = %account_id, received, applied, "Cloud API status webhook");
    Ok(json_response(
        StatusCode::OK,
        json!({ "received": received, "applied": applied })
            .to_string()
            .into_bytes(),
    ))
}

/// Whether `account_id` is a cloud account of the Meta app whose secret is
/// `app_secret` (the numbers of one app share one webhook URL).
fn in_same_app(conn: &Conn, account_id: &str, app_secret: &str) -> Result<bool, StoreError> {
    Ok(admin::get_account(conn, account_id)?.is_some_and(|a| {
        a.driver_kind() == DriverKind::Cloud
            && a.settings
                .get("app_secret")
                .and_then(Value::as_str)
                .is_some_and(|secret| cloud::secrets_equal(secret.trim(), app_secret))
    }))
}

/// An attempt a status moved: its account, the status reached, its error code.
type Moved = (String, AttemptStatus, Option<&'static str>);

/// Apply statuses in one write; returns the attempts that moved.
fn apply_statuses(
    conn: &Conn,
    updates: &[StatusUpdate],
    app_secret: &str,
    now: i64,
) -> Result<Vec<Moved>, StoreError> {
    // Accounts already judged, so a batch of statuses reads each account once.
    let mut same_app: HashMap<String, bool> = HashMap::new();
    let mut moved = Vec::new();
    for update in updates {
        // By wamid, or, when the status overtook the send's own answer, by
        // the placeholder id we sent as `biz_opaque_callback_data`.
        let mut target = attempts::attempt_of_message(conn, &update.wamid)?;
        if target.is_none() {
            if let Some(placeholder) = &update.placeholder {
                target = attempts::attempt_of_message(conn, placeholder)?;
            }
        }
        let Some((attempt_id, account_id)) = target else {
            continue;
        };
        let allowed = match same_app.get(&account_id) {
            Some(known) => *known,
            None => {
                let judged = in_same_app(conn, &account_id, app_secret)?;
                same_app.insert(account_id.clone(), judged);
                judged
            }
        };
        if !allowed {
            continue;
        }
        let (error_code, error_message) = match &update.failure {
            Some((code, message)) => (Some(*code), Some(message.as_str())),
            None => (None, None),
        };
        let fields = TransitionFields {
            remote_jid: update.remote_jid.as_deref(),
            message_id: Some(&update.wamid),
            error_code,
            error_message,
        };
        if attempts::transition(
            conn,
            AttemptKey::Id(&attempt_id),
            update.status,
            &fields,
            now,
        )? {
            let code = update.failure.as_ref().map(|(code, _)| *code);
            moved.push((account_id, update.status, code));
        }
    }
    Ok(moved)
}
