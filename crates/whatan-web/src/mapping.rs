//! Pure decisions on what the WhatsApp Web library reports, kept apart from
//! the sockets so they are unit-tested: which events change the connection
//! state, what to do once a connection has ended, what a server ack means for
//! a message, which receipts count as delivered or read.
//!
//! A fact about `whatsapp-rust` 0.7.0 shapes this module: a send that returns
//! `Ok` has only been written to the socket. Whether WhatsApp took the message
//! is known from the server's `<ack>` for the message id (an `error`
//! attribute is a refusal), so acceptance and refusal both come from
//! [`ack_result`].

use std::time::{Duration, SystemTime};

use whatsapp_rust::types::events::{ConnectFailureReason, Event, LoggedOut, TempBanReason};
use whatsapp_rust::types::presence::ReceiptType;
use whatsapp_rust::Jid;

use crate::{WebError, WebEvent};

/// How far a message got, from a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    Delivered,
    Read,
}

/// A change of the connection as the library reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionChange {
    Connected,
    /// Dropped; the library reconnects by itself.
    Disconnected {
        reason: String,
    },
    /// WhatsApp refused the connection and the library stopped trying.
    Failed {
        reason: String,
    },
    /// Another client took this session over; the library stopped.
    Replaced,
    /// The session ended for good.
    LoggedOut {
        reason: String,
    },
    /// Temporarily banned until `expires_at`; the library stopped.
    Banned {
        expires_at: SystemTime,
        reason: String,
    },
}

/// The connection change an event stands for, if any. `now` dates a ban's
/// end (the server sends its length, not its end).
pub fn connection_change(event: &Event, now: SystemTime) -> Option<ConnectionChange> {
    Some(match event {
        Event::Connected(_) => ConnectionChange::Connected,
        Event::Disconnected(d) => ConnectionChange::Disconnected {
            reason: format!("connection lost ({})", d.reason),
        },
        Event::LoggedOut(l) => ConnectionChange::LoggedOut {
            reason: logged_out_reason(l),
        },
        Event::StreamReplaced(_) => ConnectionChange::Replaced,
        Event::TemporaryBan(b) => ConnectionChange::Banned {
            expires_at: ban_expiry(now, b.expire),
            reason: ban_reason(&b.code, b.message.as_deref()),
        },
        Event::ConnectFailure(f) => {
            let reason = format!(
                "WhatsApp refused the connection ({}{})",
                connect_failure_text(f.reason),
                f.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            if f.reason.should_reconnect() {
                ConnectionChange::Disconnected { reason }
            } else {
                ConnectionChange::Failed { reason }
            }
        }
        Event::ClientOutdated(_) => ConnectionChange::Failed {
            reason: "WhatsApp refused this client version as outdated".into(),
        },
        _ => return None,
    })
}

/// What whatan is told about a connection change.
pub fn web_event(change: &ConnectionChange) -> WebEvent {
    match change {
        ConnectionChange::Connected => WebEvent::Connected,
        ConnectionChange::Disconnected { reason } | ConnectionChange::Failed { reason } => {
            WebEvent::Disconnected {
                reason: reason.clone(),
            }
        }
        ConnectionChange::Replaced => WebEvent::Disconnected {
            reason: "another WhatsApp Web client took over this linked session \
                     (is this account connected twice?); restart `whatan serve` to take it back"
                .into(),
        },
        ConnectionChange::LoggedOut { reason } => WebEvent::LoggedOut {
            reason: reason.clone(),
        },
        ConnectionChange::Banned { expires_at, reason } => WebEvent::TemporaryBan {
            expires_at: *expires_at,
            reason: reason.clone(),
        },
    }
}

/// What the supervisor of a linked device does once the library's run loop
/// has ended (it only ends when the library gave up reconnecting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterRun {
    /// Stop for good; remove the session file when it can never work again.
    Stop { remove_session: bool },
    /// Start again at this time (a ban's end).
    RestartAt(SystemTime),
    /// Start again after this pause.
    RestartAfter(Duration),
}

/// Pauses between restarts after failures: 30 s doubling up to 15 minutes.
pub fn restart_backoff(failures: u32) -> Duration {
    let secs = 30u64.saturating_mul(1u64 << failures.min(5));
    Duration::from_secs(secs.min(15 * 60))
}

/// The next step given the last connection change seen before the run loop
/// ended, and how many restarts in a row have failed already.
pub fn after_run(last: Option<&ConnectionChange>, failures: u32) -> AfterRun {
    match last {
        Some(ConnectionChange::LoggedOut { .. }) => AfterRun::Stop {
            remove_session: true,
        },
        // Taking the session back would kick the other client, which would
        // take it back in turn: leave it to a person.
        Some(ConnectionChange::Replaced) => AfterRun::Stop {
            remove_session: false,
        },
        Some(ConnectionChange::Banned { expires_at, .. }) => AfterRun::RestartAt(*expires_at),
        _ => AfterRun::RestartAfter(restart_backoff(failures)),
    }
}

/// When a ban of length `expire` that starts `now` ends.
pub fn ban_expiry(now: SystemTime, expire: whatsapp_rust::chrono::Duration) -> SystemTime {
    now + expire.to_std().unwrap_or(Duration::ZERO)
}

fn ban_reason(code: &TempBanReason, message: Option<&str>) -> String {
    // TempBanReason's Display is "<code>: <explanation>".
    match message {
        Some(m) if !m.trim().is_empty() => format!("{code} ({m})"),
        _ => code.to_string(),
    }
}

fn logged_out_reason(l: &LoggedOut) -> String {
    let base = match l.reason {
        ConnectFailureReason::LoggedOut => "the phone unlinked this device".to_string(),
        ConnectFailureReason::AccountLocked => "WhatsApp locked the account".to_string(),
        other => format!(
            "WhatsApp ended the session ({})",
            connect_failure_text(other)
        ),
    };
    let server_text = l
        .logout_message
        .as_ref()
        .and_then(|m| m.header.clone().or_else(|| m.subtext.clone()));
    match server_text {
        Some(text) if !text.trim().is_empty() => format!("{base}: {text}"),
        _ => base,
    }
}

fn connect_failure_text(reason: ConnectFailureReason) -> String {
    let text = match reason {
        ConnectFailureReason::Generic => "generic failure",
        ConnectFailureReason::LoggedOut => "logged out",
        ConnectFailureReason::TempBanned => "temporarily banned",
        ConnectFailureReason::AccountLocked => "account locked",
        ConnectFailureReason::UnknownLogout => "logged out",
        ConnectFailureReason::ClientOutdated => "client outdated",
        ConnectFailureReason::BadUserAgent => "bad user agent",
        ConnectFailureReason::CatExpired | ConnectFailureReason::CatInvalid => {
            "connection token refused"
        }
        ConnectFailureReason::NotFound => "not found",
        ConnectFailureReason::ClientUnknown => "unknown client",
        ConnectFailureReason::InternalServerError => "server error",
        ConnectFailureReason::Experimental => "experimental",
        ConnectFailureReason::ServiceUnavailable => "service unavailable",
        ConnectFailureReason::Unknown(_) => "unknown reason",
    };
    format!("{} {text}", reason.code())
}

/// Whether a server ack concerns a message (acks also confirm receipts,
/// notifications and calls, whose ids are not message ids).
pub fn is_message_ack(class: Option<&str>) -> bool {
    matches!(class, None | Some("message"))
}

/// What a server ack means for the message it confirms: `Ok` when WhatsApp
/// took it, the refusal otherwise (`error` is the nack code).
pub fn ack_result(error: Option<&str>) -> Result<(), WebError> {
    let Some(code) = error else {
        return Ok(());
    };
    let rejected = |reason: &str| {
        Err(WebError::Rejected {
            code: code.to_string(),
            reason: reason.to_string(),
        })
    };
    match code {
        "404" => Err(WebError::NotOnWhatsApp(
            "WhatsApp found no account for the recipient (error 404)".into(),
        )),
        "408" | "429" | "500" | "503" => Err(WebError::RetryLater(format!(
            "WhatsApp asked to try again later (error {code})"
        ))),
        "400" => rejected("the message was malformed"),
        "463" => rejected(
            "the recipient needs a privacy token this account does not have \
             (WhatsApp may be limiting messages to new contacts from this account)",
        ),
        "479" => rejected("a field of the message had the wrong format"),
        _ => rejected("see WhatsApp's error code"),
    }
}

/// Which receipts move a sent message forward. Receipts about our own other
/// devices (`read-self`, `played-self`), retries, and `sent` (the recipient's
/// device could not take it) move nothing.
pub fn receipt_kind(kind: &ReceiptType) -> Option<ReceiptKind> {
    match kind {
        ReceiptType::Delivered => Some(ReceiptKind::Delivered),
        ReceiptType::Read | ReceiptType::Played => Some(ReceiptKind::Read),
        _ => None,
    }
}

/// The account's own addresses (phone number and LID user parts), to ignore
/// receipts that the account's own phone sends about copies of our messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnIds {
    pub phone_user: Option<String>,
    pub lid_user: Option<String>,
}

impl OwnIds {
    pub fn is_own(&self, jid: &Jid) -> bool {
        let user = jid.user.as_str();
        self.phone_user.as_deref() == Some(user) || self.lid_user.as_deref() == Some(user)
    }
}

/// Whether the linked phone is the account's number (E.164 digits).
pub fn is_same_number(linked_user: &str, e164: &str) -> bool {
    !linked_user.is_empty() && e164.strip_prefix('+').unwrap_or(e164) == linked_user
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::chrono;
    use whatsapp_rust::transport::DisconnectReason;
    use whatsapp_rust::types::events::{
        ClientOutdated, ConnectFailure, Connected, Disconnected, LogoutMessage, Receipt,
        StreamError, StreamReplaced, TemporaryBan,
    };

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn connected_and_dropped_connections_map_to_connected_and_disconnected() {
        let now = at(1_000);
        assert_eq!(
            connection_change(&Event::Connected(Connected::builder().build()), now),
            Some(ConnectionChange::Connected)
        );
        let dropped = Event::Disconnected(
            Disconnected::builder()
                .reason(DisconnectReason::StreamEnded)
                .build(),
        );
        assert_eq!(
            connection_change(&dropped, now),
            Some(ConnectionChange::Disconnected {
                reason: "connection lost (stream ended (EOF))".into()
            })
        );
    }

    #[test]
    fn an_unlink_from_the_phone_is_a_logout_that_removes_the_session() {
        let event = Event::LoggedOut(
            LoggedOut::builder()
                .on_connect(false)
                .reason(ConnectFailureReason::LoggedOut)
                .build(),
        );
        let change = connection_change(&event, at(0)).unwrap();
        assert_eq!(
            change,
            ConnectionChange::LoggedOut {
                reason: "the phone unlinked this device".into()
            }
        );
        assert_eq!(
            after_run(Some(&change), 0),
            AfterRun::Stop {
                remove_session: true
            }
        );
        assert!(matches!(web_event(&change), WebEvent::LoggedOut { .. }));
    }

    #[test]
    fn a_locked_account_logout_carries_the_server_text() {
        let event = Event::LoggedOut(
            LoggedOut::builder()
                .on_connect(true)
                .reason(ConnectFailureReason::AccountLocked)
                .logout_message(
                    LogoutMessage::builder()
                        .header("Your account is locked".to_string())
                        .build(),
                )
                .build(),
        );
        assert_eq!(
            connection_change(&event, at(0)),
            Some(ConnectionChange::LoggedOut {
                reason: "WhatsApp locked the account: Your account is locked".into()
            })
        );
    }

    #[test]
    fn a_temporary_ban_holds_until_its_expiry_then_restarts() {
        let event = Event::TemporaryBan(
            TemporaryBan::builder()
                .code(TempBanReason::SentToTooManyPeople)
                .expire(chrono::Duration::seconds(3_600))
                .build(),
        );
        let change = connection_change(&event, at(1_000)).unwrap();
        let ConnectionChange::Banned { expires_at, reason } = &change else {
            panic!("{change:?}");
        };
        assert_eq!(*expires_at, at(4_600));
        assert!(
            reason.starts_with("101: you sent too many messages"),
            "{reason}"
        );
        assert_eq!(after_run(Some(&change), 3), AfterRun::RestartAt(at(4_600)));
        assert_eq!(
            web_event(&change),
            WebEvent::TemporaryBan {
                expires_at: at(4_600),
                reason: reason.clone()
            }
        );
    }

    #[test]
    fn a_ban_of_negative_length_ends_now() {
        assert_eq!(ban_expiry(at(50), chrono::Duration::seconds(-5)), at(50));
    }

    #[test]
    fn a_replaced_stream_stops_without_removing_the_session() {
        let event = Event::StreamReplaced(StreamReplaced::builder().build());
        let change = connection_change(&event, at(0)).unwrap();
        assert_eq!(change, ConnectionChange::Replaced);
        assert_eq!(
            after_run(Some(&change), 0),
            AfterRun::Stop {
                remove_session: false
            }
        );
        assert!(
            matches!(web_event(&change), WebEvent::Disconnected { reason } if reason.contains("took over"))
        );
    }

    #[test]
    fn connect_failures_are_disconnections_retried_with_backoff() {
        let unavailable = Event::ConnectFailure(
            ConnectFailure::builder()
                .reason(ConnectFailureReason::ServiceUnavailable)
                .build(),
        );
        assert!(matches!(
            connection_change(&unavailable, at(0)),
            Some(ConnectionChange::Disconnected { reason }) if reason.contains("503 service unavailable")
        ));
        let refused = Event::ConnectFailure(
            ConnectFailure::builder()
                .reason(ConnectFailureReason::BadUserAgent)
                .message("nope".to_string())
                .build(),
        );
        let change = connection_change(&refused, at(0)).unwrap();
        assert_eq!(
            change,
            ConnectionChange::Failed {
                reason: "WhatsApp refused the connection (409 bad user agent: nope)".into()
            }
        );
        assert_eq!(
            after_run(Some(&change), 0),
            AfterRun::RestartAfter(Duration::from_secs(30))
        );
        let outdated = Event::ClientOutdated(ClientOutdated::builder().build());
        assert!(matches!(
            connection_change(&outdated, at(0)),
            Some(ConnectionChange::Failed { .. })
        ));
        assert_eq!(
            after_run(None, 1),
            AfterRun::RestartAfter(Duration::from_secs(60))
        );
    }

    #[test]
    fn restart_backoff_doubles_up_to_fifteen_minutes() {
        let secs: Vec<u64> = (0..8).map(|n| restart_backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![30, 60, 120, 240, 480, 900, 900, 900]);
        assert_eq!(restart_backoff(u32::MAX), Duration::from_secs(900));
    }

    #[test]
    fn other_events_change_nothing() {
        let informational = Event::StreamError(StreamError::builder().code("ack".into()).build());
        assert_eq!(connection_change(&informational, at(0)), None);
    }

    #[test]
    fn a_plain_server_ack_accepts_and_a_nack_refuses_the_message() {
        assert_eq!(ack_result(None), Ok(()));
        assert!(matches!(
            ack_result(Some("479")),
            Err(WebError::Rejected { code, .. }) if code == "479"
        ));
        assert!(matches!(
            ack_result(Some("463")),
            Err(WebError::Rejected { reason, .. }) if reason.contains("privacy token")
        ));
        assert!(matches!(
            ack_result(Some("421")),
            Err(WebError::Rejected { .. })
        ));
        assert!(matches!(
            ack_result(Some("404")),
            Err(WebError::NotOnWhatsApp(_))
        ));
        for code in ["408", "429", "500", "503"] {
            assert!(
                matches!(ack_result(Some(code)), Err(WebError::RetryLater(_))),
                "{code}"
            );
        }
    }

    #[test]
    fn only_message_acks_concern_messages() {
        assert!(is_message_ack(Some("message")));
        assert!(is_message_ack(None));
        assert!(!is_message_ack(Some("receipt")));
        assert!(!is_message_ack(Some("notification")));
    }

    #[test]
    fn delivery_and_read_receipts_move_messages_others_do_not() {
        assert_eq!(
            receipt_kind(&ReceiptType::Delivered),
            Some(ReceiptKind::Delivered)
        );
        assert_eq!(receipt_kind(&ReceiptType::Read), Some(ReceiptKind::Read));
        assert_eq!(receipt_kind(&ReceiptType::Played), Some(ReceiptKind::Read));
        for other in [
            ReceiptType::Sent,
            ReceiptType::Sender,
            ReceiptType::Retry,
            ReceiptType::ReadSelf,
            ReceiptType::PlayedSelf,
            ReceiptType::ServerError,
            ReceiptType::Inactive,
            ReceiptType::Other("x".into()),
        ] {
            assert_eq!(receipt_kind(&other), None, "{other:?}");
        }
        // A receipt event as the library builds it: from a LID address.
        let receipt = Receipt::builder()
            .message_ids(vec!["3EB0AA".to_string()])
            .source(Default::default())
            .timestamp(chrono::Utc::now())
            .r#type(ReceiptType::parse("read"))
            .offline(false)
            .build();
        assert_eq!(receipt_kind(&receipt.r#type), Some(ReceiptKind::Read));
    }

    #[test]
    fn receipts_from_the_accounts_own_addresses_are_recognised() {
        let own = OwnIds {
            phone_user: Some("917000000001".into()),
            lid_user: Some("123456789012345".into()),
        };
        assert!(own.is_own(&Jid::pn("917000000001")));
        assert!(own.is_own(&Jid::lid("123456789012345")));
        assert!(!own.is_own(&Jid::pn("917999709798")));
        assert!(!own.is_own(&Jid::lid("999")));
        assert!(!OwnIds::default().is_own(&Jid::pn("917000000001")));
    }

    #[test]
    fn the_linked_phone_must_be_the_accounts_number() {
        assert!(is_same_number("917000000001", "+917000000001"));
        assert!(!is_same_number("917000000002", "+917000000001"));
        assert!(!is_same_number("", "+"));
    }
}
