//! whatan's linked device: a WhatsApp account linked like WhatsApp Web (a
//! "companion device" of the phone), driven by the `whatsapp-rust` crate.
//!
//! This crate exists so that whatan's own code rebuilds in seconds: the
//! WhatsApp client behind it is large, and it only recompiles when this
//! crate's dependencies change. It knows nothing of whatan (no dependency on
//! the main crate); whatan's `driver::web` turns what it reports into driver
//! events and account states.
//!
//! Code map:
//! - [`session`]: where a linked session lives ([`Session`]: one SQLite file
//!   per account, or rows in the caller's database) and how it is removed.
//! - [`rows`]: a session as keyed rows ([`SessionRows`], implemented by the
//!   caller); `backend` the library's storage backend over them
//!   ([`RowBackend`]); `conformance` the tests both backends pass; `copy`
//!   a session file moved into rows ([`copy_file_session`]).
//! - [`render`]: the pairing QR code as terminal text, the pair code as shown.
//! - [`mapping`]: pure decisions on the library's events: connection changes,
//!   what to do after a connection ends, server acks, receipts.
//! - [`pairing`]: linking a phone by QR code or pair code ([`pair`]).
//! - [`device`]: a linked session kept connected ([`LinkedDevice`]): sends,
//!   acks, receipts, `is_on_whatsapp`.
//! - `router`: the library's events routed to waiting sends or reported.
//! - [`Net`]: the network pieces the library uses (WhatsApp's servers,
//!   another server for tests, or offline in this crate's tests).
//! - `reach`: connection failures, classified (DNS, TLS, refused, timed out)
//!   so that pairing and devices report why WhatsApp cannot be reached.
//!
//! Invariant: nothing here decides whatan policy (pacing, retries, statuses);
//! every result is reported in this crate's own small types ([`WebEvent`],
//! [`WebError`]) and the caller decides.

mod backend;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod copy;
pub mod device;
pub mod mapping;
mod net;
pub mod pairing;
mod reach;
pub mod render;
mod router;
pub mod rows;
pub mod session;

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

pub use backend::RowBackend;
pub use copy::copy_file_session;
pub use device::{Ack, LinkedDevice};
pub use mapping::ReceiptKind;
pub use net::Net;
pub use pairing::{linked_phone, pair, Linked, PairMode, PairingPrompt};
pub use render::{format_pair_code, render_qr, QrStyle};
pub use rows::{Kind, Op, Row, SessionRows};
pub use session::{remove_session, session_exists, session_path, sessions_dir, Session};

/// What a linked device reports while it runs, in whatan's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebEvent {
    /// (Re)connecting from a stopped state: at start, after a ban lifted,
    /// after a failure backoff. Library-internal reconnects after a dropped
    /// connection are not reported again: the device stays `Disconnected`
    /// until `Connected`.
    Connecting,
    /// Logged in and ready to send.
    Connected,
    /// Offline for now; the device reconnects by itself.
    Disconnected { reason: String },
    /// The phone unlinked this device (or WhatsApp ended the session): the
    /// session is gone for good and has been removed; pair again.
    LoggedOut { reason: String },
    /// WhatsApp temporarily banned the account; the device reconnects at
    /// `expires_at`.
    TemporaryBan {
        expires_at: SystemTime,
        reason: String,
    },
    /// A server ack for a message nobody was waiting for any more (it came
    /// after the send's ack timeout). `error` is the nack code, if refused.
    ServerAck {
        message_id: String,
        error: Option<String>,
    },
    /// Delivery or read receipts for messages this device sent, by our
    /// message ids (receipts may come from a LID address rather than the
    /// phone number the message went to: ids are what match).
    Receipt {
        message_ids: Vec<String>,
        kind: ReceiptKind,
    },
}

/// Everything that can go wrong, classified by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebError {
    /// No linked session here: never paired, pairing unfinished, or logged
    /// out. Pair again.
    NotLinked(String),
    /// Linked, but not connected to WhatsApp right now.
    NotConnected(String),
    /// WhatsApp cannot be reached from here; the one-line reason names the
    /// cause (DNS, TLS, refused, timed out).
    Unreachable(String),
    /// The recipient number has no WhatsApp account. Final.
    NotOnWhatsApp(String),
    /// WhatsApp refused the message (a server nack). Final.
    Rejected { code: String, reason: String },
    /// The message certainly did not reach WhatsApp, or resending it with the
    /// same message id is harmless: try again later.
    RetryLater(String),
    /// The request cannot be sent as it is (a malformed number, ...). Final.
    Invalid(String),
    /// Pairing did not finish within the given time.
    PairingTimedOut(Duration),
    /// Pairing failed (code refused, wrong phone, session refused...).
    PairingFailed(String),
    /// The session store could not be opened, read or removed.
    Store(String),
}

impl fmt::Display for WebError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebError::NotLinked(m)
            | WebError::NotConnected(m)
            | WebError::Unreachable(m)
            | WebError::NotOnWhatsApp(m)
            | WebError::RetryLater(m)
            | WebError::Invalid(m)
            | WebError::PairingFailed(m) => f.write_str(m),
            WebError::Rejected { code, reason } => {
                write!(f, "WhatsApp refused the message (error {code}): {reason}")
            }
            WebError::PairingTimedOut(d) => write!(
                f,
                "the phone was not linked within {}s; run the command again to get a new code",
                d.as_secs()
            ),
            WebError::Store(m) => write!(f, "linked-device session store: {m}"),
        }
    }
}

impl std::error::Error for WebError {}

/// A fresh message id as WhatsApp Web clients make them, from the library's
/// own generator: `3EB0` followed by 18 upper-case hex digits.
pub fn new_message_id() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    whatsapp_rust::wacore::request::RequestUtils::message_id_at(None, now)
}

/// The phone-number part of a WhatsApp address for an E.164 number
/// (`+917999709798` -> `917999709798`).
pub fn phone_user(e164: &str) -> Result<String, WebError> {
    let digits = e164.strip_prefix('+').unwrap_or(e164);
    if (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits.to_string())
    } else {
        Err(WebError::Invalid(format!(
            "{e164:?} is not an international phone number"
        )))
    }
}

/// A poisoned lock still holds consistent data here (every critical section
/// is a plain read or replace), so it is used as is.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_come_from_the_library_generator_in_whatsapp_web_style() {
        let id = new_message_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(id.starts_with("3EB0"), "{id}");
        assert!(id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
        assert_ne!(id, new_message_id());
    }

    #[test]
    fn phone_user_is_the_digits_of_an_e164_number() {
        assert_eq!(phone_user("+917999709798").unwrap(), "917999709798");
        assert_eq!(phone_user("917999709798").unwrap(), "917999709798");
        for bad in [
            "",
            "+",
            "+91 7999",
            "+12",
            "+1234567890123456",
            "+91abc99709798",
        ] {
            assert!(
                matches!(phone_user(bad), Err(WebError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_read_as_one_line_for_the_cli() {
        let e = WebError::Rejected {
            code: "479".into(),
            reason: "malformed".into(),
        };
        assert_eq!(
            e.to_string(),
            "WhatsApp refused the message (error 479): malformed"
        );
        let t = WebError::PairingTimedOut(Duration::from_secs(300)).to_string();
        assert!(t.contains("300s") && !t.contains('\n'), "{t}");
    }
}
