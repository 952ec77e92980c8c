//! Meta's status webhooks, the parts that know Meta's formats: the
//! signature over the raw body and the shape of a notification.
//!
//! `api::webhooks` does the HTTP and the store; what is here is pure, so it
//! can be tested against payloads as Meta documents them. A `failed`
//! status's errors are mapped by `errors`, the same way as a refused send.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::errors::failure_from_status_errors;
use super::PLACEHOLDER_PREFIX;
use crate::domain::AttemptStatus;

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::error_codes::RECIPIENT_NOT_FOUND;

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
}
