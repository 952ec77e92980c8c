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
//! - **Errors are mapped, not swallowed** (see [`Refusal`] and the table
//!   under "How Meta's answers map" in README.md); Meta's code and message
//!   stay in `errorMessage`.
//! - **Secrets.** The access token is only ever put in an `Authorization`
//!   header (marked sensitive); it is never logged, never part of an error
//!   message, and [`CloudSettings`]' `Debug` redacts it and the app secret.
//!
//! Status webhooks come in over HTTP (`api::webhooks`); the Meta-specific
//! parts of that (signature check, payload shape, error mapping) live here
//! too, so everything that knows Meta's formats is in one module:
//!
//! - `graph`: the Graph API client and the multipart upload body;
//! - `errors`: what Meta's error answers mean, pure and table-tested;
//! - `webhook`: the status webhook's signature and payload;
//! - `verify`: the credentials check of `whatan account connect`;
//! - this file: the driver, which decides what each outcome means for a
//!   message that must not be sent twice.

mod errors;
mod graph;
mod verify;
mod webhook;

pub use errors::{classify_refusal, failure_from_status_errors, GraphError, Refusal};
pub use verify::{verify_credentials, verify_credentials_blocking};
pub use webhook::{secrets_equal, signature_is_valid, status_updates, StatusUpdate};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::{
    phone_jid, Accepted, MediaDelivery, MediaPayload, OutgoingContent, OutgoingMessage, SendError,
    WhatsAppDriver,
};
use crate::config::CloudConfig;
use crate::domain::error_codes::SEND_FAILED;
use crate::domain::DriverKind;
use crate::store::admin::Account;
use errors::{truncate, MAX_ERROR_CHARS};
use graph::{multipart_body, Exchange, Graph};

/// Prefix of the ids whatan gives messages before Meta assigns a `wamid`.
pub const PLACEHOLDER_PREFIX: &str = "whatan-";

/// First retry delay after a rate limit or a transient refusal; doubles per
/// retry of the same message up to [`MAX_BACKOFF`]. The engine gives up
/// after 12 tries, which this spreads over roughly 20 minutes.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A `Retry-After` from the Graph API is honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Retry counters older than this are dropped (the engine gave up or the
/// message was sent by a later hand-off that this process did not see).
const RETRY_MEMORY: Duration = Duration::from_secs(3600);

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
            // Uploaded by `prepare`, before the attempt was claimed.
            MediaPayload::Uploaded { id } => {
                object.insert("id".into(), Value::String(id.clone()));
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

    /// Uploads the media before the attempt is claimed: an upload sends no
    /// message, so a stop or a failure here must not count as a hand-off.
    async fn prepare(
        &self,
        account: &Account,
        attempt_id: &str,
        content: OutgoingContent,
    ) -> Result<OutgoingContent, SendError> {
        let (media, file_name) = match &content {
            OutgoingContent::Text { .. } => return Ok(content),
            OutgoingContent::Image { media, .. } => (media, None),
            OutgoingContent::Document {
                media, file_name, ..
            } => (media, file_name.as_deref()),
        };
        let MediaPayload::Bytes { bytes, mimetype } = media else {
            return Ok(content);
        };
        let settings =
            CloudSettings::from_json(&account.settings).map_err(SendError::NotConnected)?;
        let id = self
            .upload(&settings, attempt_id, bytes, mimetype, file_name)
            .await?;
        let uploaded = MediaPayload::Uploaded { id };
        Ok(match content {
            OutgoingContent::Image { caption, .. } => OutgoingContent::Image {
                media: uploaded,
                caption,
            },
            OutgoingContent::Document {
                file_name, caption, ..
            } => OutgoingContent::Document {
                media: uploaded,
                file_name,
                caption,
            },
            text => text,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
