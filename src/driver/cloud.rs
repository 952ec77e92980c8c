//! The Cloud API driver: Meta's official WhatsApp Business Platform, reached
//! over the Graph API (`POST /{version}/{phone-number-id}/messages`). People
//! pay Meta for every message sent this way, so this module's first job is to
//! never send one message twice and to report every outcome honestly.
//!
//! Why it looks the way it does:
//!
//! - **No idempotency key.** The Cloud API has none, so a request that may
//!   have reached Meta is never repeated. A request that certainly did not
//!   (the TCP connection was never made, or Meta answered with a rate-limit
//!   or "temporarily unavailable" error) comes back as
//!   [`SendError::RetryLater`] with an exponential backoff, and the engine
//!   moves the account's next pacing slot. A request whose outcome is unknown
//!   (timeout or reset after it was written, a 5xx that is not Meta's own
//!   "unavailable" error) fails with `send_failed` saying so, and a hand-off
//!   flagged [`OutgoingMessage::redelivery`] (the process stopped before the
//!   previous hand-off's result was recorded) is not sent again at all.
//! - **Media is uploaded, not linked.** The engine fetches the media through
//!   whatan's pinned, SSRF-safe fetcher ([`MediaDelivery::Bytes`], the
//!   default) and this driver uploads those exact bytes with
//!   `POST /{version}/{phone-number-id}/media`, then sends by media id. With
//!   a link, Meta would fetch the URL later from its own network: what it
//!   gets may differ from what whatan validated, the URL may have expired by
//!   the time the pacer sends, and a bad file would only surface as an
//!   asynchronous webhook failure after the message was already "accepted".
//!   Uploading costs whatan's bandwidth, and in exchange a bad file is
//!   refused synchronously with Meta's own error.
//! - **Message ids.** whatan picks an id before the hand-off
//!   (`whatan-<uuid>`, see [`PLACEHOLDER_PREFIX`]); Meta assigns the real
//!   `wamid` on acceptance, which replaces it. The placeholder travels as
//!   `biz_opaque_callback_data`, so a status webhook that overtakes the send's
//!   own answer can still be matched to its attempt.
//! - **Errors are mapped, not swallowed** (see [`Refusal`] and the table in
//!   `docs/cloud-api.md`); Meta's code and message stay in `errorMessage`.
//! - **Secrets.** The access token is only ever put in an `Authorization`
//!   header (marked sensitive); it is never logged, never part of an error
//!   message, and [`CloudSettings`]' `Debug` redacts it and the app secret.
//!
//! Status webhooks come in over HTTP (`api::webhooks`); the Meta-specific
//! parts of that (signature check, payload shape, error mapping) live here
//! too, so everything that knows Meta's formats is in one file.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{
    phone_jid, Accepted, MediaDelivery, MediaPayload, OutgoingContent, OutgoingMessage, SendError,
    WhatsAppDriver,
};
use crate::config::{format_duration, CloudConfig};
use crate::domain::error_codes::{RECIPIENT_NOT_FOUND, SEND_FAILED};
use crate::domain::{AttemptStatus, DriverKind};
use crate::store::admin::Account;

/// Prefix of the ids whatan gives messages before Meta assigns a `wamid`.
pub const PLACEHOLDER_PREFIX: &str = "whatan-";

/// First retry delay after a rate limit or a transient refusal; doubles per
/// retry of the same message up to [`MAX_BACKOFF`]. The engine gives up
/// after 12 tries, which this spreads over roughly 20 minutes.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A `Retry-After` from the Graph API is honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Graph API answers are small JSON documents; anything bigger is cut off.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Longest Meta error text kept in an attempt's `errorMessage`.
const MAX_ERROR_CHARS: usize = 600;
/// Retry counters older than this are dropped (the engine gave up or the
/// message was sent by a later hand-off that this process did not see).
const RETRY_MEMORY: Duration = Duration::from_secs(3600);

/// Codes with which Meta refuses a call because of a rate limit: the message
/// was not taken and may be sent again later. 4/17/32/613 are Graph API call
/// limits, 80007 the WhatsApp Business Account limit, 130429 Cloud API
/// throughput, 131048 the spam rate limit, 131056 the business/consumer pair
/// rate limit.
const RATE_LIMIT_CODES: &[i64] = &[4, 17, 32, 613, 80007, 130429, 131048, 131056];
/// "Temporarily unavailable" codes: 2 (API service), 131016 (service
/// unavailable), 133004 (server temporarily unavailable). Meta answered and
/// said it did not process the call.
const UNAVAILABLE_CODES: &[i64] = &[2, 131016, 133004];
/// Message undeliverable: not on WhatsApp (or an app too old, terms not
/// accepted): `recipient_not_found`.
const UNDELIVERABLE: i64 = 131026;
/// Re-engagement message: outside the 24-hour customer service window.
const RE_ENGAGEMENT: i64 = 131047;
/// Account not registered with the Cloud API.
const NOT_REGISTERED: i64 = 133010;

/// What `errorMessage` says when the 24-hour window is closed.
const TEMPLATE_REQUIRED: &str = "the recipient is outside the 24-hour customer service window \
    (they have not messaged this number in the last 24 hours), and WhatsApp requires an approved \
    template message to start the conversation; the Send API does not send templates";

/// What `errorMessage` says for a hand-off that may already have reached Meta.
const REDELIVERY_REFUSED: &str = "outcome unknown: whatan stopped while handing this message to \
    the Cloud API, so Meta may or may not have taken it; it was not re-sent to avoid a duplicate \
    (the Cloud API has no idempotency key). Check the conversation before sending it again";

/// The settings `whatan account add --driver cloud` stores with an account.
#[derive(Clone)]
pub struct CloudSettings {
    pub phone_number_id: String,
    pub access_token: String,
    pub app_secret: String,
    pub verify_token: String,
}

impl std::fmt::Debug for CloudSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudSettings")
            .field("phone_number_id", &self.phone_number_id)
            .field("access_token", &"<redacted>")
            .field("app_secret", &"<redacted>")
            .field("verify_token", &"<redacted>")
            .finish()
    }
}

impl CloudSettings {
    /// Read and check an account's settings. The error names what is wrong
    /// (never a secret's value).
    pub fn from_json(settings: &Value) -> Result<CloudSettings, String> {
        let get = |key: &str| {
            settings
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| format!("the account's Cloud API settings have no {key}"))
        };
        let parsed = CloudSettings {
            phone_number_id: get("phone_number_id")?,
            access_token: get("access_token")?,
            app_secret: get("app_secret")?,
            verify_token: get("verify_token")?,
        };
        // The id goes into a URL path: Graph ids are decimal numbers.
        let id = &parsed.phone_number_id;
        if id.len() > 32 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "phone number id {id:?} is not a Graph API id (digits only, as shown in Meta's \
                 WhatsApp Manager under API Setup)"
            ));
        }
        if !parsed.access_token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the access token has characters an HTTP header cannot carry; paste it again"
                    .into(),
            );
        }
        Ok(parsed)
    }
}

/// The `error` object of a Graph API error answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphError {
    pub code: Option<i64>,
    pub subcode: Option<i64>,
    /// `type`, e.g. `OAuthException`.
    pub kind: String,
    pub message: String,
    /// `error_data.details`: Meta's longer explanation.
    pub details: String,
    pub fbtrace_id: Option<String>,
}

impl GraphError {
    /// The `error` object of an answer body, if it has one.
    pub fn parse(body: &[u8]) -> Option<GraphError> {
        let value: Value = serde_json::from_slice(body).ok()?;
        let error = value.get("error")?;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").trim().to_string();
        Some(GraphError {
            code: error.get("code").and_then(Value::as_i64),
            subcode: error.get("error_subcode").and_then(Value::as_i64),
            kind: text(error.get("type")),
            message: text(error.get("message")),
            details: text(error.get("error_data").and_then(|d| d.get("details"))),
            fbtrace_id: error
                .get("fbtrace_id")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// `Meta error 131026: (#131026) Message undeliverable (details)`.
    pub fn describe(&self) -> String {
        self.describe_as("Meta error")
    }

    /// Like [`GraphError::describe`] with another label (`OAuthException`).
    fn describe_as(&self, label: &str) -> String {
        let code = self
            .code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "?".into());
        let mut text = format!("{label} {code}");
        if let Some(sub) = self.subcode {
            text.push_str(&format!("/{sub}"));
        }
        if !self.message.is_empty() {
            text.push_str(&format!(": {}", self.message));
        }
        if !self.details.is_empty() && self.details != self.message {
            text.push_str(&format!(" ({})", self.details));
        }
        truncate(text, MAX_ERROR_CHARS)
    }

    fn is_credentials_error(&self) -> bool {
        match self.code {
            // 190 invalid or expired token, 102 session invalid, 10 and
            // 200-299 missing permissions: the token cannot send any more.
            Some(190 | 102 | 10 | 200..=299) => true,
            // The phone number id is unknown to this token, or deleted.
            Some(33) => true,
            Some(100) => self.subcode == Some(33),
            _ => false,
        }
    }
}

/// What a refused Graph API call means for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The recipient cannot get WhatsApp messages: `recipient_not_found`.
    NotOnWhatsApp(String),
    /// The account cannot send (token, permissions, registration): the
    /// engine marks it disconnected and keeps the send queued.
    AccountUnusable(String),
    /// Meta did not take the call and said to come back later.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Meta refused the message for good: `send_failed` with this text.
    Final(String),
    /// The answer does not say whether the call was carried out.
    Ambiguous(String),
}

/// Map an error answer of the Graph API (any endpoint).
pub fn classify_refusal(status: u16, body: &[u8], retry_after: Option<Duration>) -> Refusal {
    let Some(error) = GraphError::parse(body).filter(|e| e.code.is_some()) else {
        let snippet = truncate(String::from_utf8_lossy(body).trim().to_string(), 200);
        let what = if snippet.is_empty() {
            format!("the Graph API answered HTTP {status} with no error body")
        } else {
            format!("the Graph API answered HTTP {status}: {snippet}")
        };
        return match status {
            401 | 403 => Refusal::AccountUnusable(what),
            // 429 and 503 mean the request was not processed.
            429 | 503 => Refusal::Transient {
                reason: what,
                retry_after,
            },
            // A 5xx from something in between (a proxy, a load balancer)
            // may come after Meta carried the call out.
            500..=599 => Refusal::Ambiguous(what),
            _ => Refusal::Final(what),
        };
    };
    let code = error.code.unwrap_or_default();
    if code == UNDELIVERABLE {
        return Refusal::NotOnWhatsApp(format!(
            "WhatsApp cannot deliver to this number: it is not on WhatsApp, or its app is too old \
             or has not accepted WhatsApp's terms ({})",
            error.describe()
        ));
    }
    if code == RE_ENGAGEMENT {
        return Refusal::Final(format!("{TEMPLATE_REQUIRED} ({})", error.describe()));
    }
    if code == NOT_REGISTERED {
        return Refusal::AccountUnusable(format!(
            "the phone number is not registered with the Cloud API; register it in Meta's \
             WhatsApp Manager, then run `whatan account connect` ({})",
            error.describe()
        ));
    }
    if error.is_credentials_error() {
        let label = if error.kind.is_empty() {
            "Meta error"
        } else {
            error.kind.as_str()
        };
        return Refusal::AccountUnusable(format!(
            "the Cloud API refused the access token or its permissions; store a valid token, \
             then run `whatan account connect` ({})",
            error.describe_as(label)
        ));
    }
    if RATE_LIMIT_CODES.contains(&code) {
        return Refusal::Transient {
            reason: format!("rate limited by Meta ({})", error.describe()),
            retry_after,
        };
    }
    if UNAVAILABLE_CODES.contains(&code) {
        return Refusal::Transient {
            reason: format!(
                "the Cloud API is temporarily unavailable ({})",
                error.describe()
            ),
            retry_after,
        };
    }
    Refusal::Final(error.describe())
}

/// `(errorCode, errorMessage)` for a `failed` status webhook with these
/// `errors` entries (Meta's `code`, `title`, `message`, `error_data.details`).
pub fn failure_from_status_errors(errors: &[Value]) -> (&'static str, String) {
    let Some(first) = errors.first() else {
        return (
            SEND_FAILED,
            "Meta reported the message as failed without a reason".into(),
        );
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").trim().to_string();
    let code = first.get("code").and_then(Value::as_i64);
    let title = text(first.get("title"));
    let message = text(first.get("message"));
    let details = text(first.get("error_data").and_then(|d| d.get("details")));
    let mut described = format!(
        "Meta error {}",
        code.map(|c| c.to_string()).unwrap_or_else(|| "?".into())
    );
    let mut said: Vec<&str> = Vec::new();
    for part in [&title, &message, &details] {
        if !part.is_empty() && !said.contains(&part.as_str()) {
            said.push(part);
        }
    }
    if !said.is_empty() {
        described.push_str(": ");
        described.push_str(&said.join(" / "));
    }
    let described = truncate(described, MAX_ERROR_CHARS);
    match code {
        Some(UNDELIVERABLE) => (RECIPIENT_NOT_FOUND, described),
        Some(RE_ENGAGEMENT) => (SEND_FAILED, format!("{TEMPLATE_REQUIRED} ({described})")),
        _ => (SEND_FAILED, described),
    }
}

/// One entry of a status webhook, ready for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    /// Meta's message id (`wamid....`).
    pub wamid: String,
    pub status: AttemptStatus,
    /// `<recipient_id>@s.whatsapp.net`.
    pub remote_jid: Option<String>,
    /// Our placeholder id, from `biz_opaque_callback_data`.
    pub placeholder: Option<String>,
    /// `(errorCode, errorMessage)` of a `failed` status.
    pub failure: Option<(&'static str, String)>,
}

/// The message statuses in a webhook notification
/// (`entry[].changes[].value.statuses[]`). Everything else (incoming
/// messages, other fields, statuses whatan has no use for such as
/// `deleted` or `played`) is skipped, as is any malformed entry.
pub fn status_updates(notification: &Value) -> Vec<StatusUpdate> {
    let list = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
    let mut updates = Vec::new();
    for entry in list(notification.get("entry")) {
        for change in list(entry.get("changes")) {
            for status in list(change.get("value").and_then(|v| v.get("statuses"))) {
                if let Some(update) = status_update(&status) {
                    updates.push(update);
                }
            }
        }
    }
    updates
}

fn status_update(status: &Value) -> Option<StatusUpdate> {
    let wamid = status.get("id").and_then(Value::as_str)?.trim();
    if wamid.is_empty() || wamid.len() > 512 {
        return None;
    }
    let next = match status.get("status").and_then(Value::as_str)? {
        "sent" => AttemptStatus::Accepted,
        "delivered" => AttemptStatus::Delivered,
        "read" => AttemptStatus::Read,
        "failed" => AttemptStatus::Failed,
        _ => return None,
    };
    let remote_jid = status
        .get("recipient_id")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty() && r.len() <= 32 && r.bytes().all(|b| b.is_ascii_digit()))
        .map(|r| format!("{r}@s.whatsapp.net"));
    let placeholder = status
        .get("biz_opaque_callback_data")
        .and_then(Value::as_str)
        .filter(|p| p.starts_with(PLACEHOLDER_PREFIX) && p.len() <= 64)
        .map(str::to_string);
    let failure = (next == AttemptStatus::Failed).then(|| {
        let errors = status
            .get("errors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        failure_from_status_errors(&errors)
    });
    Some(StatusUpdate {
        wamid: wamid.to_string(),
        status: next,
        remote_jid,
        placeholder,
        failure,
    })
}

/// Whether `header` (`X-Hub-Signature-256: sha256=<hex>`) is the
/// HMAC-SHA256 of `body` under `app_secret`. The comparison is constant-time.
pub fn signature_is_valid(app_secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    given.len() == expected.len() && bool::from(expected.as_slice().ct_eq(&given))
}

/// Constant-time comparison of two secrets (verify tokens, app secrets).
pub fn secrets_equal(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// How one HTTP exchange with the Graph API ended.
enum Exchange {
    Answered {
        status: u16,
        retry_after: Option<Duration>,
        body: Vec<u8>,
    },
    /// No connection was made: the request certainly did not reach Meta.
    NotSent(String),
    /// The request may have reached Meta, but no answer came back.
    Unknown(String),
}

/// The HTTP side: one client, built once, no system proxy, no redirects
/// (a redirected POST could be replayed), every call bounded by
/// `cloud.request_timeout`.
struct Graph {
    http: reqwest::Client,
    base_url: String,
    version: String,
    timeout: Duration,
}

impl Graph {
    fn new(config: &CloudConfig) -> Result<Graph, String> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout)
            // Shorter than the whole-call limit, so a slow connect is reported
            // as a connect failure (nothing sent, safe to retry).
            .connect_timeout((config.request_timeout / 2).min(Duration::from_secs(10)))
            // Reusing a connection the server is closing can fail a POST after
            // it was written, which whatan must then report as "outcome
            // unknown"; idle connections are dropped early to make that rare.
            .pool_idle_timeout(Duration::from_secs(20))
            .user_agent(concat!("whatan/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the Graph API client: {}", error_chain(&e)))?;
        Ok(Graph {
            http,
            base_url: config.graph_base_url.trim_end_matches('/').to_string(),
            version: config.graph_version.clone(),
            timeout: config.request_timeout,
        })
    }

    fn url(&self, phone_number_id: &str, edge: &str) -> String {
        let mut url = format!("{}/{}/{phone_number_id}", self.base_url, self.version);
        if !edge.is_empty() {
            url.push('/');
            url.push_str(edge);
        }
        url
    }

    async fn exchange(&self, request: reqwest::RequestBuilder) -> Exchange {
        let response = match request.send().await {
            Ok(response) => response,
            // Connecting (DNS, TCP, TLS) failed or timed out: nothing was written.
            Err(e) if e.is_connect() => return Exchange::NotSent(error_chain(&e)),
            Err(e) if e.is_timeout() => {
                return Exchange::Unknown(format!(
                    "no answer within {}",
                    format_duration(self.timeout)
                ))
            }
            Err(e) => return Exchange::Unknown(error_chain(&e)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        let body = match read_capped(response).await {
            Ok(body) => body,
            Err(e) => {
                // The status line arrived, so Meta did answer; only the body
                // is lost. Callers decide from the status alone.
                tracing::warn!(status, error = %e, "could not read a Graph API answer body");
                Vec::new()
            }
        };
        Exchange::Answered {
            status,
            retry_after,
            body,
        }
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(body)
}

/// The driver. Holds no per-account state: credentials are read from the
/// account on every send, so `account connect` after a token change takes
/// effect without a restart.
pub struct CloudDriver {
    graph: Graph,
    /// Rate-limit retries per message id, for the exponential backoff.
    retries: Mutex<HashMap<String, (u32, Instant)>>,
}

impl CloudDriver {
    /// Fails only if the HTTP client cannot be built (TLS set-up).
    pub fn new(config: &CloudConfig) -> Result<CloudDriver, String> {
        Ok(CloudDriver {
            graph: Graph::new(config)?,
            retries: Mutex::new(HashMap::new()),
        })
    }

    fn retry_counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.retries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The delay before the next try of `message_id`, counting this retry.
    fn backoff_for(&self, message_id: &str, retry_after: Option<Duration>) -> Duration {
        let now = Instant::now();
        let mut counts = self.retry_counts();
        if counts.len() >= 1024 {
            counts.retain(|_, (_, at)| now.duration_since(*at) < RETRY_MEMORY);
        }
        let entry = counts.entry(message_id.to_string()).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        backoff(entry.0, retry_after, jitter)
    }

    fn retry_later(&self, message_id: &str, reason: String, hint: Option<Duration>) -> SendError {
        SendError::RetryLater {
            after: self.backoff_for(message_id, hint),
            reason,
        }
    }

    /// Upload fetched media; `{"id": ...}` to send it by.
    async fn upload(
        &self,
        settings: &CloudSettings,
        message_id: &str,
        bytes: &[u8],
        mimetype: &str,
        file_name: Option<&str>,
    ) -> Result<String, SendError> {
        let boundary = format!("whatan-{}", uuid::Uuid::new_v4().simple());
        let body = multipart_body(&boundary, bytes, mimetype, file_name);
        let request = self
            .graph
            .http
            .post(self.graph.url(&settings.phone_number_id, "media"))
            .bearer_auth(&settings.access_token)
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        // An upload sends no message, so every doubt is safe to retry.
        let (status, retry_after, body) = match self.graph.exchange(request).await {
            Exchange::Answered {
                status,
                retry_after,
                body,
            } => (status, retry_after, body),
            Exchange::NotSent(e) => {
                let reason = format!("could not reach the Graph API to upload media: {e}");
                return Err(self.retry_later(message_id, reason, None));
            }
            Exchange::Unknown(e) => {
                let reason = format!("media upload got no answer: {e}");
                return Err(self.retry_later(message_id, reason, None));
            }
        };
        if (200..300).contains(&status) {
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
                .filter(|id| !id.is_empty());
            return id.ok_or_else(|| {
                self.retry_later(
                    message_id,
                    format!("the media upload answered HTTP {status} without a media id"),
                    None,
                )
            });
        }
        Err(match classify_refusal(status, &body, retry_after) {
            Refusal::AccountUnusable(m) => SendError::NotConnected(m),
            Refusal::Transient {
                reason,
                retry_after,
            } => self.retry_later(message_id, reason, retry_after),
            Refusal::Ambiguous(m) => self.retry_later(message_id, m, None),
            Refusal::NotOnWhatsApp(m) | Refusal::Final(m) => SendError::Failed {
                code: SEND_FAILED,
                message: format!("Meta refused the media upload: {m}"),
            },
        })
    }

    /// The `image` / `document` object of the messages request.
    async fn media_object(
        &self,
        settings: &CloudSettings,
        message_id: &str,
        media: &MediaPayload,
        file_name: Option<&str>,
    ) -> Result<Map<String, Value>, SendError> {
        let mut object = Map::new();
        match media {
            MediaPayload::Bytes { bytes, mimetype } => {
                let id = self
                    .upload(settings, message_id, bytes, mimetype, file_name)
                    .await?;
                object.insert("id".into(), Value::String(id));
            }
            // Only if the engine was asked for links, which this driver
            // does not do; kept so the mapping is total.
            MediaPayload::Link { url, .. } => {
                object.insert("link".into(), Value::String(url.clone()));
            }
        }
        Ok(object)
    }

    async fn send_once(
        &self,
        settings: &CloudSettings,
        message: &OutgoingMessage,
    ) -> Result<Accepted, SendError> {
        let request_body = self.messages_request(settings, message).await?;
        let request = self
            .graph
            .http
            .post(self.graph.url(&settings.phone_number_id, "messages"))
            .bearer_auth(&settings.access_token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request_body.to_string());
        match self.graph.exchange(request).await {
            Exchange::NotSent(e) => {
                let reason = format!("could not reach the Graph API: {e}");
                Err(self.retry_later(&message.message_id, reason, None))
            }
            Exchange::Unknown(e) => Err(outcome_unknown(&e)),
            Exchange::Answered { status, body, .. } if (200..300).contains(&status) => {
                Ok(accepted_from(&body, message))
            }
            Exchange::Answered {
                status,
                retry_after,
                body,
            } => Err(match classify_refusal(status, &body, retry_after) {
                Refusal::NotOnWhatsApp(m) => SendError::NotOnWhatsApp(m),
                Refusal::AccountUnusable(m) => SendError::NotConnected(m),
                Refusal::Transient {
                    reason,
                    retry_after,
                } => self.retry_later(&message.message_id, reason, retry_after),
                Refusal::Final(m) => SendError::Failed {
                    code: SEND_FAILED,
                    message: m,
                },
                Refusal::Ambiguous(m) => outcome_unknown(&m),
            }),
        }
    }

    /// Meta's documented `messages` request for this message.
    async fn messages_request(
        &self,
        settings: &CloudSettings,
        message: &OutgoingMessage,
    ) -> Result<Value, SendError> {
        let (kind, object) = match &message.content {
            OutgoingContent::Text { body } => {
                let mut object = Map::new();
                object.insert("body".into(), Value::String(body.clone()));
                ("text", object)
            }
            OutgoingContent::Image { media, caption } => {
                let mut object = self
                    .media_object(settings, &message.message_id, media, None)
                    .await?;
                if let Some(caption) = caption {
                    object.insert("caption".into(), Value::String(caption.clone()));
                }
                ("image", object)
            }
            OutgoingContent::Document {
                media,
                file_name,
                caption,
            } => {
                let mut object = self
                    .media_object(settings, &message.message_id, media, file_name.as_deref())
                    .await?;
                if let Some(caption) = caption {
                    object.insert("caption".into(), Value::String(caption.clone()));
                }
                if let Some(file_name) = file_name {
                    object.insert("filename".into(), Value::String(file_name.clone()));
                }
                ("document", object)
            }
        };
        let mut request = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.to.trim_start_matches('+'),
            "type": kind,
            "biz_opaque_callback_data": message.message_id,
        });
        if let Some(fields) = request.as_object_mut() {
            fields.insert(kind.into(), Value::Object(object));
        }
        Ok(request)
    }

    fn forget(&self, message_id: &str) {
        self.retry_counts().remove(message_id);
    }
}

/// `RetryLater` delay for the `retry`-th retry (1-based): doubling from
/// [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`], times `jitter`, and never less
/// than a `Retry-After` Meta sent.
pub fn backoff(retry: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let doublings = retry.saturating_sub(1).min(16);
    let exponential = FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
        .mul_f64(jitter.clamp(0.5, 2.0));
    match retry_after {
        Some(hint) => exponential.max(hint.min(MAX_RETRY_AFTER)),
        None => exponential,
    }
}

fn outcome_unknown(what: &str) -> SendError {
    SendError::Failed {
        code: SEND_FAILED,
        message: truncate(
            format!(
                "outcome unknown: the Cloud API did not confirm whether it took the message \
                 ({what}); it was not re-sent, to avoid a duplicate. Check the conversation before \
                 sending it again"
            ),
            MAX_ERROR_CHARS + 200,
        ),
    }
}

/// A 2xx answer: Meta took the message. Its `wamid` becomes the message id
/// and `wa_id` the remote JID. A 2xx without a readable id is still an
/// acceptance; the placeholder id stays and webhooks find the attempt by
/// `biz_opaque_callback_data`.
fn accepted_from(body: &[u8], message: &OutgoingMessage) -> Accepted {
    let answer: Value = serde_json::from_slice(body).unwrap_or_default();
    let wamid = answer
        .pointer("/messages/0/id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string);
    let wa_id = answer
        .pointer("/contacts/0/wa_id")
        .and_then(Value::as_str)
        .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()));
    if wamid.is_none() {
        tracing::warn!(
            message_id = %message.message_id,
            "the Cloud API accepted a message without returning its id"
        );
    }
    Accepted {
        message_id: wamid.unwrap_or_else(|| message.message_id.clone()),
        remote_jid: match wa_id {
            Some(wa_id) => format!("{wa_id}@s.whatsapp.net"),
            None => phone_jid(&message.to),
        },
    }
}

/// A `multipart/form-data` body with Meta's three upload fields:
/// `messaging_product`, `type` (the MIME type) and `file`. Built by hand
/// because it is three parts; reqwest's `multipart` feature would add a
/// dependency for this alone. The boundary is random (122 bits), so it
/// cannot occur in the file by accident.
fn multipart_body(
    boundary: &str,
    bytes: &[u8],
    mimetype: &str,
    file_name: Option<&str>,
) -> Vec<u8> {
    let mimetype = header_safe_mimetype(mimetype);
    let file_name = file_name
        .map(|name| {
            name.chars()
                .map(|c| {
                    if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(200)
                .collect::<String>()
        })
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "upload".into());
    let mut body = Vec::with_capacity(bytes.len() + 512);
    for (name, value) in [
        ("messaging_product", "whatsapp"),
        ("type", mimetype.as_str()),
    ] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: {mimetype}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// The MIME type without parameters, if it is a plain `type/subtype` token;
/// `application/octet-stream` otherwise (it goes into part headers).
fn header_safe_mimetype(mimetype: &str) -> String {
    let essence = mimetype.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) => essence.to_ascii_lowercase(),
        _ => "application/octet-stream".into(),
    }
}

fn truncate(mut text: String, max_chars: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(max_chars) {
        text.truncate(at);
        text.push('…');
    }
    text
}

/// An error and its sources on one line (reqwest's `Display` stops at the
/// top level: "error sending request for url (...)").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait]
impl WhatsAppDriver for CloudDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Cloud
    }

    fn new_message_id(&self) -> String {
        format!("{PLACEHOLDER_PREFIX}{}", uuid::Uuid::new_v4())
    }

    fn media_delivery(&self, _account: &Account) -> MediaDelivery {
        MediaDelivery::Bytes
    }

    async fn send(
        &self,
        account: &Account,
        message: &OutgoingMessage,
    ) -> Result<Accepted, SendError> {
        // Checked first: any other answer (even "not connected") would let
        // the engine hand this message over again later.
        if message.redelivery {
            self.forget(&message.message_id);
            return Err(SendError::Failed {
                code: SEND_FAILED,
                message: REDELIVERY_REFUSED.into(),
            });
        }
        let settings =
            CloudSettings::from_json(&account.settings).map_err(SendError::NotConnected)?;
        let result = self.send_once(&settings, message).await;
        match &result {
            Err(SendError::RetryLater { reason, after }) => {
                tracing::info!(account = %account.id, retry_in = ?after, %reason, "Cloud API send deferred");
            }
            Err(SendError::Failed { message: text, .. }) => {
                tracing::warn!(account = %account.id, error = %text, "Cloud API send failed");
                self.forget(&message.message_id);
            }
            _ => self.forget(&message.message_id),
        }
        result
    }
}

/// `account connect` for a cloud account: ask the phone number endpoint
/// (`GET /{version}/{phone-number-id}`) with the stored token whether the
/// credentials work and the number is this account's. `Ok` carries a
/// one-line description of the number; `Err` says exactly what is wrong.
pub async fn verify_credentials(config: &CloudConfig, account: &Account) -> Result<String, String> {
    let settings = CloudSettings::from_json(&account.settings)?;
    let graph = Graph::new(config)?;
    let url = format!(
        "{}?fields=display_phone_number,verified_name,quality_rating",
        graph.url(&settings.phone_number_id, "")
    );
    let request = graph.http.get(url).bearer_auth(&settings.access_token);
    let (status, body) = match graph.exchange(request).await {
        Exchange::Answered { status, body, .. } => (status, body),
        Exchange::NotSent(e) => {
            return Err(format!(
                "cannot reach the Graph API at {}: {e}",
                graph.base_url
            ))
        }
        Exchange::Unknown(e) => {
            return Err(format!(
                "the Graph API at {} did not answer: {e}",
                graph.base_url
            ))
        }
    };
    let id = &settings.phone_number_id;
    if !(200..300).contains(&status) {
        let Some(error) = GraphError::parse(&body).filter(|e| e.code.is_some()) else {
            let snippet = truncate(String::from_utf8_lossy(&body).trim().to_string(), 200);
            return Err(format!(
                "the Graph API answered HTTP {status} for phone number id {id}: {snippet}"
            ));
        };
        let label = if error.kind.is_empty() {
            "Meta error"
        } else {
            error.kind.as_str()
        };
        let described = error.describe_as(label);
        return Err(match error.code {
            Some(190 | 102) => format!("the Cloud API refused the access token ({described})"),
            Some(10 | 200..=299) => format!(
                "the access token may not use phone number id {id}: give its system user the \
                 whatsapp_business_messaging and whatsapp_business_management permissions \
                 ({described})"
            ),
            Some(33 | 100 | 803) => format!(
                "phone number id {id} does not exist or this access token cannot see it \
                 ({described})"
            ),
            _ => format!("the Graph API refused the check of phone number id {id} ({described})"),
        });
    }
    #[derive(Deserialize)]
    struct PhoneNumber {
        display_phone_number: Option<String>,
        verified_name: Option<String>,
        quality_rating: Option<String>,
    }
    let number: PhoneNumber = serde_json::from_slice(&body).map_err(|_| {
        format!("the Graph API's answer for phone number id {id} is not the phone number object")
    })?;
    let Some(display) = number.display_phone_number.filter(|d| !d.trim().is_empty()) else {
        return Err(format!(
            "id {id} is not a WhatsApp phone number id (the Graph API returned no \
             display_phone_number); use the id from WhatsApp Manager > API Setup"
        ));
    };
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let name = number.verified_name.unwrap_or_default();
    if digits(&display) != digits(&account.phone) {
        return Err(format!(
            "phone number id {id} belongs to {display}{}, not to this account's {}",
            if name.is_empty() {
                String::new()
            } else {
                format!(" ({name})")
            },
            account.phone
        ));
    }
    let mut summary = format!("Cloud API number {display}");
    if !name.is_empty() {
        summary.push_str(&format!(" ({name})"));
    }
    if let Some(rating) = number.quality_rating.filter(|r| !r.is_empty()) {
        summary.push_str(&format!(", quality {rating}"));
    }
    Ok(summary)
}

/// [`verify_credentials`] for the synchronous CLI, on a small
/// current-thread runtime of its own.
pub fn verify_credentials_blocking(
    config: &CloudConfig,
    account: &Account,
) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for the Graph API check: {e}"))?;
    runtime.block_on(verify_credentials(config, account))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_error(status: u16, code: i64, body_extra: Value) -> Refusal {
        let mut error = json!({
            "message": format!("(#{code}) something"),
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": "more words"},
            "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"
        });
        if let (Some(e), Some(extra)) = (error.as_object_mut(), body_extra.as_object()) {
            e.extend(extra.clone());
        }
        classify_refusal(
            status,
            json!({ "error": error }).to_string().as_bytes(),
            None,
        )
    }

    #[test]
    fn meta_errors_map_to_what_they_mean() {
        assert!(matches!(
            meta_error(400, 131026, json!({})),
            Refusal::NotOnWhatsApp(_)
        ));
        match meta_error(400, 131047, json!({})) {
            Refusal::Final(m) => assert!(m.contains("template") && m.contains("131047"), "{m}"),
            other => panic!("{other:?}"),
        }
        for code in [190, 102, 10, 200, 299, 133010] {
            assert!(
                matches!(
                    meta_error(401, code, json!({})),
                    Refusal::AccountUnusable(_)
                ),
                "{code}"
            );
        }
        assert!(matches!(
            meta_error(400, 100, json!({"error_subcode": 33})),
            Refusal::AccountUnusable(_)
        ));
        for code in [4, 80007, 130429, 131048, 131056, 2, 131016, 133004] {
            assert!(
                matches!(meta_error(400, code, json!({})), Refusal::Transient { .. }),
                "{code}"
            );
        }
        for code in [100, 131000, 131051, 368, 131031] {
            match meta_error(400, code, json!({})) {
                Refusal::Final(m) => assert!(m.contains(&format!("Meta error {code}")), "{m}"),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn answers_without_a_meta_error_map_by_status() {
        assert!(matches!(
            classify_refusal(429, b"", None),
            Refusal::Transient { .. }
        ));
        assert!(matches!(
            classify_refusal(503, b"busy", None),
            Refusal::Transient { .. }
        ));
        assert!(matches!(
            classify_refusal(502, b"<html>", None),
            Refusal::Ambiguous(_)
        ));
        assert!(matches!(
            classify_refusal(500, b"{}", None),
            Refusal::Ambiguous(_)
        ));
        assert!(matches!(
            classify_refusal(401, b"", None),
            Refusal::AccountUnusable(_)
        ));
        assert!(matches!(
            classify_refusal(404, b"nope", None),
            Refusal::Final(_)
        ));
    }

    #[test]
    fn backoff_doubles_up_to_a_cap_and_honours_retry_after() {
        assert_eq!(backoff(1, None, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, None, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(4, None, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, None, 1.0), MAX_BACKOFF);
        assert_eq!(
            backoff(1, Some(Duration::from_secs(60)), 1.0),
            Duration::from_secs(60)
        );
        assert_eq!(
            backoff(1, Some(Duration::from_secs(86_400)), 1.0),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn signatures_are_checked_against_the_raw_body() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_is_valid("s3cret", body, &good));
        assert!(signature_is_valid(
            "s3cret",
            body,
            &good.to_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!signature_is_valid("other", body, &good));
        assert!(!signature_is_valid("s3cret", b"{}", &good));
        assert!(!signature_is_valid(
            "s3cret",
            body,
            good.trim_start_matches("sha256=")
        ));
        assert!(!signature_is_valid("s3cret", body, "sha256=zz"));
        assert!(!signature_is_valid("s3cret", body, "sha256="));
        assert!(!signature_is_valid("s3cret", body, &good[..good.len() - 2]));
    }

    #[test]
    fn webhook_statuses_are_read_leniently() {
        let notification = json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [
                {"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": [
                    {"id": "wamid.A", "status": "sent", "recipient_id": "917999709798",
                     "biz_opaque_callback_data": "whatan-123"},
                    {"id": "wamid.B", "status": "failed", "recipient_id": "917999709798",
                     "errors": [{"code": 131026, "title": "Message undeliverable",
                                 "message": "Message undeliverable",
                                 "error_data": {"details": "not a WhatsApp user"}}]},
                    {"id": "wamid.C", "status": "played"},
                    {"status": "read"},
                    "nonsense"
                ]}},
                {"field": "messages", "value": {"messages": [{"id": "wamid.in"}]}}
            ]}, {"changes": "nope"}]
        });
        let updates = status_updates(&notification);
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].status, AttemptStatus::Accepted);
        assert_eq!(
            updates[0].remote_jid.as_deref(),
            Some("917999709798@s.whatsapp.net")
        );
        assert_eq!(updates[0].placeholder.as_deref(), Some("whatan-123"));
        let (code, message) = updates[1].failure.clone().unwrap();
        assert_eq!(code, RECIPIENT_NOT_FOUND);
        assert_eq!(
            message,
            "Meta error 131026: Message undeliverable / not a WhatsApp user"
        );
        assert!(status_updates(&json!("x")).is_empty());
    }

    #[test]
    fn settings_are_checked_and_redacted() {
        let settings = json!({"phone_number_id": "106540352242922", "access_token": "EAAG-secret",
                              "app_secret": "app-secret", "verify_token": "vt"});
        let parsed = CloudSettings::from_json(&settings).unwrap();
        let debug = format!("{parsed:?}");
        assert!(
            !debug.contains("EAAG-secret") && !debug.contains("app-secret"),
            "{debug}"
        );
        let bad_id = json!({"phone_number_id": "../x", "access_token": "t", "app_secret": "s", "verify_token": "v"});
        assert!(CloudSettings::from_json(&bad_id)
            .unwrap_err()
            .contains("not a Graph API id"));
        let missing = json!({"phone_number_id": "1", "access_token": " "});
        assert!(CloudSettings::from_json(&missing)
            .unwrap_err()
            .contains("access_token"));
    }

    #[test]
    fn multipart_body_has_the_three_fields() {
        let body = multipart_body("B", b"\x89PNG", "image/png; x=y", Some("a\"b\r\n.pdf"));
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(
            "--B\r\nContent-Disposition: form-data; name=\"messaging_product\"\r\n\r\nwhatsapp\r\n"
        ));
        assert!(text.contains("name=\"type\"\r\n\r\nimage/png\r\n"));
        assert!(text
            .contains("name=\"file\"; filename=\"a_b__.pdf\"\r\nContent-Type: image/png\r\n\r\n"));
        assert!(text.ends_with("\r\n--B--\r\n"));
        assert_eq!(
            header_safe_mimetype("text/html\r\nX: y"),
            "application/octet-stream"
        );
    }
}
