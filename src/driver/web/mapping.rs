//! Pure mapping of what a linked device reports onto whatan's terms: its
//! errors onto what the engine does with a send, its events onto
//! [`DriverEvent`]s. Kept apart from the driver's sockets and locks so every
//! decision is unit-tested.

use std::time::{Duration, SystemTime};

use whatan_web::{ReceiptKind, WebError, WebEvent};

use crate::domain::error_codes::{RECIPIENT_NOT_FOUND, SEND_FAILED};
use crate::domain::AccountStatus;
use crate::driver::{DriverEvent, SendError};

/// What the engine should do with a linked-device failure.
pub fn send_error(error: WebError) -> SendError {
    match error {
        WebError::NotOnWhatsApp(m) => SendError::NotOnWhatsApp(m),
        WebError::NotLinked(m) | WebError::NotConnected(m) | WebError::Unreachable(m) => {
            SendError::NotConnected(m)
        }
        WebError::RetryLater(reason) => SendError::RetryLater {
            after: Duration::from_secs(30),
            reason,
        },
        e @ (WebError::Rejected { .. } | WebError::Invalid(_)) => SendError::Failed {
            code: SEND_FAILED,
            message: e.to_string(),
        },
        // Session store trouble: nothing was sent; try again.
        e @ (WebError::Store(_) | WebError::PairingTimedOut(_) | WebError::PairingFailed(_)) => {
            SendError::RetryLater {
                after: Duration::from_secs(60),
                reason: e.to_string(),
            }
        }
    }
}

/// The engine's events for what a linked device of `account_id` reported.
pub fn driver_events(account_id: &str, event: WebEvent) -> Vec<DriverEvent> {
    let connection = |status, detail: Option<String>| {
        vec![DriverEvent::Connection {
            account_id: account_id.to_string(),
            status,
            detail,
        }]
    };
    match event {
        WebEvent::Connecting => connection(
            AccountStatus::Connecting,
            Some("connecting the linked device".into()),
        ),
        WebEvent::Connected => connection(AccountStatus::Connected, None),
        WebEvent::Disconnected { reason } => {
            connection(AccountStatus::Disconnected, Some(reason))
        }
        WebEvent::LoggedOut { reason } => connection(
            AccountStatus::LoggedOut,
            Some(format!(
                "{reason}; the session was removed, link again with `whatan account connect {account_id}`"
            )),
        ),
        WebEvent::TemporaryBan { expires_at, reason } => connection(
            AccountStatus::Banned,
            Some(format!(
                "temporarily banned by WhatsApp until {}: {reason}; sends are held until then",
                crate::clock::rfc3339_ms(epoch_ms(expires_at))
            )),
        ),
        WebEvent::ServerAck {
            message_id,
            error: None,
        } => vec![DriverEvent::Accepted {
            account_id: account_id.to_string(),
            message_id,
            remote_jid: None,
        }],
        WebEvent::ServerAck {
            message_id,
            error: Some(code),
        } => match whatan_web::mapping::ack_result(Some(&code)) {
            Err(WebError::NotOnWhatsApp(message)) => vec![DriverEvent::Failed {
                account_id: account_id.to_string(),
                message_id,
                code: RECIPIENT_NOT_FOUND,
                message,
            }],
            Err(e @ WebError::Rejected { .. }) => vec![DriverEvent::Failed {
                account_id: account_id.to_string(),
                message_id,
                code: SEND_FAILED,
                message: e.to_string(),
            }],
            // "Try later": the send already reported a retry (its ack wait
            // timed out), so the engine sends it again with the same id.
            _ => vec![],
        },
        WebEvent::Receipt { message_ids, kind } => message_ids
            .into_iter()
            .map(|message_id| match kind {
                ReceiptKind::Delivered => DriverEvent::Delivered {
                    account_id: account_id.to_string(),
                    message_id,
                },
                ReceiptKind::Read => DriverEvent::Read {
                    account_id: account_id.to_string(),
                    message_id,
                },
            })
            .collect(),
    }
}

fn epoch_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACC: &str = "acc_1";

    fn connection(events: Vec<DriverEvent>) -> (AccountStatus, Option<String>) {
        match events.as_slice() {
            [DriverEvent::Connection {
                account_id,
                status,
                detail,
            }] => {
                assert_eq!(account_id, ACC);
                (*status, detail.clone())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connection_events_become_account_states() {
        assert_eq!(
            connection(driver_events(ACC, WebEvent::Connected)),
            (AccountStatus::Connected, None)
        );
        assert_eq!(
            connection(driver_events(ACC, WebEvent::Connecting)).0,
            AccountStatus::Connecting
        );
        assert_eq!(
            connection(driver_events(
                ACC,
                WebEvent::Disconnected {
                    reason: "connection lost".into()
                }
            )),
            (AccountStatus::Disconnected, Some("connection lost".into()))
        );
        let (status, detail) = connection(driver_events(
            ACC,
            WebEvent::LoggedOut {
                reason: "the phone unlinked this device".into(),
            },
        ));
        assert_eq!(status, AccountStatus::LoggedOut);
        let detail = detail.unwrap();
        assert!(
            detail.starts_with("the phone unlinked this device"),
            "{detail}"
        );
        assert!(detail.contains("whatan account connect acc_1"), "{detail}");
    }

    #[test]
    fn a_temporary_ban_holds_the_account_with_its_expiry() {
        let expires_at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_778_752_804_000);
        let (status, detail) = connection(driver_events(
            ACC,
            WebEvent::TemporaryBan {
                expires_at,
                reason: "101: you sent too many messages".into(),
            },
        ));
        assert_eq!(status, AccountStatus::Banned);
        assert_eq!(
            detail.unwrap(),
            "temporarily banned by WhatsApp until 2026-05-14T10:00:04.000Z: \
             101: you sent too many messages; sends are held until then"
        );
    }

    #[test]
    fn late_server_acks_accept_or_fail_the_message_of_the_reporting_account() {
        assert_eq!(
            driver_events(
                ACC,
                WebEvent::ServerAck {
                    message_id: "3EB0A".into(),
                    error: None
                }
            ),
            vec![DriverEvent::Accepted {
                account_id: ACC.into(),
                message_id: "3EB0A".into(),
                remote_jid: None
            }]
        );
        match driver_events(
            ACC,
            WebEvent::ServerAck {
                message_id: "3EB0B".into(),
                error: Some("479".into()),
            },
        )
        .as_slice()
        {
            [DriverEvent::Failed {
                account_id,
                message_id,
                code,
                message,
            }] => {
                assert_eq!(account_id, ACC);
                assert_eq!(message_id, "3EB0B");
                assert_eq!(*code, SEND_FAILED);
                assert!(message.contains("479"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            driver_events(ACC, WebEvent::ServerAck { message_id: "3EB0C".into(), error: Some("404".into()) }).as_slice(),
            [DriverEvent::Failed { code, .. }] if *code == RECIPIENT_NOT_FOUND
        ));
        // "Try later" nacks leave the attempt to the engine's retry.
        assert!(driver_events(
            ACC,
            WebEvent::ServerAck {
                message_id: "3EB0D".into(),
                error: Some("503".into())
            }
        )
        .is_empty());
    }

    #[test]
    fn receipts_become_delivered_and_read_by_message_id_of_the_reporting_account() {
        assert_eq!(
            driver_events(
                ACC,
                WebEvent::Receipt {
                    message_ids: vec!["3EB0A".into(), "3EB0B".into()],
                    kind: ReceiptKind::Delivered
                }
            ),
            vec![
                DriverEvent::Delivered {
                    account_id: ACC.into(),
                    message_id: "3EB0A".into()
                },
                DriverEvent::Delivered {
                    account_id: ACC.into(),
                    message_id: "3EB0B".into()
                },
            ]
        );
        assert_eq!(
            driver_events(
                ACC,
                WebEvent::Receipt {
                    message_ids: vec!["3EB0A".into()],
                    kind: ReceiptKind::Read
                }
            ),
            vec![DriverEvent::Read {
                account_id: ACC.into(),
                message_id: "3EB0A".into()
            }]
        );
    }

    #[test]
    fn linked_device_errors_map_to_what_the_engine_does() {
        assert!(matches!(
            send_error(WebError::NotOnWhatsApp("x".into())),
            SendError::NotOnWhatsApp(_)
        ));
        assert!(matches!(
            send_error(WebError::NotConnected("x".into())),
            SendError::NotConnected(_)
        ));
        assert!(matches!(
            send_error(WebError::NotLinked("x".into())),
            SendError::NotConnected(_)
        ));
        assert!(matches!(
            send_error(WebError::RetryLater("x".into())),
            SendError::RetryLater { .. }
        ));
        assert!(matches!(
            send_error(WebError::Store("x".into())),
            SendError::RetryLater { .. }
        ));
        match send_error(WebError::Rejected {
            code: "463".into(),
            reason: "privacy token".into(),
        }) {
            SendError::Failed { code, message } => {
                assert_eq!(code, SEND_FAILED);
                assert!(message.contains("463"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            send_error(WebError::Invalid("x".into())),
            SendError::Failed { code, .. } if code == SEND_FAILED
        ));
    }
}
