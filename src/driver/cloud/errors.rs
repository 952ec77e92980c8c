//! What Meta's error answers mean for a message.
//!
//! Pure functions over Graph API error bodies and the `errors` of `failed`
//! status webhooks, apart from the HTTP client so that every code Meta
//! documents can be checked by a table test, with no server. The mapping is
//! the one README.md documents under "How Meta's answers map"; a change here
//! changes that table too.

use std::time::Duration;

use serde_json::Value;

use crate::domain::error_codes::{RECIPIENT_NOT_FOUND, SEND_FAILED};

/// Longest Meta error text kept in an attempt's `errorMessage`.
pub(super) const MAX_ERROR_CHARS: usize = 600;

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
    pub(super) fn describe_as(&self, label: &str) -> String {
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

/// `text` cut to `max_chars` characters, with `…` where it was cut: Meta's
/// texts end up in `errorMessage` and in logs, which want a bound.
pub(super) fn truncate(mut text: String, max_chars: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(max_chars) {
        text.truncate(at);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
}
