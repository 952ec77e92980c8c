//! What a driver's answer means for the attempt: a pure decision, unit-tested
//! without a driver or a database, as `schedule::decide` is for pacing. The
//! engine only carries the [`Settlement`] out.

use std::time::Duration;

use crate::domain::error_codes::{RECIPIENT_NOT_FOUND, SEND_FAILED};
use crate::driver::{Accepted, SendError};

/// After this many hand-offs that asked to be retried, an attempt fails.
pub const MAX_TRIES: i64 = 12;

/// The transition one hand-off leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// WhatsApp took the message: `accepted`, with WhatsApp's id and address.
    Accepted {
        message_id: String,
        remote_jid: String,
    },
    /// Final failure with the code reported on the attempt.
    Failed { code: &'static str, message: String },
    /// The account cannot send now and the message certainly did not go:
    /// keep it queued (same message id), mark the account disconnected.
    Offline { reason: String },
    /// Certainly not sent; hand it off again at `at` (ms since the epoch).
    RetryAt { at: i64, reason: String },
}

/// Settle the hand-off of an attempt that had `tries` hand-offs (this one
/// included), answered with `result` at `now`.
pub fn settle(tries: i64, result: Result<Accepted, SendError>, now: i64) -> Settlement {
    match result {
        Ok(accepted) => Settlement::Accepted {
            message_id: accepted.message_id,
            remote_jid: accepted.remote_jid,
        },
        Err(SendError::NotOnWhatsApp(message)) => Settlement::Failed {
            code: RECIPIENT_NOT_FOUND,
            message,
        },
        Err(SendError::Failed { code, message }) => Settlement::Failed { code, message },
        Err(SendError::NotConnected(reason)) => Settlement::Offline { reason },
        Err(SendError::RetryLater { after, reason }) => {
            if tries >= MAX_TRIES {
                Settlement::Failed {
                    code: SEND_FAILED,
                    message: format!("gave up after {tries} tries: {reason}"),
                }
            } else {
                Settlement::RetryAt {
                    at: now.saturating_add(millis(after)),
                    reason,
                }
            }
        }
    }
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(after_ms: u64) -> Result<Accepted, SendError> {
        Err(SendError::RetryLater {
            after: Duration::from_millis(after_ms),
            reason: "throttled".into(),
        })
    }

    #[test]
    fn an_acceptance_carries_whatsapps_id_and_address() {
        let result = Ok(Accepted {
            message_id: "wamid.1".into(),
            remote_jid: "917999709798@s.whatsapp.net".into(),
        });
        assert_eq!(
            settle(1, result, 0),
            Settlement::Accepted {
                message_id: "wamid.1".into(),
                remote_jid: "917999709798@s.whatsapp.net".into()
            }
        );
    }

    #[test]
    fn a_number_not_on_whatsapp_fails_with_recipient_not_found() {
        let s = settle(1, Err(SendError::NotOnWhatsApp("nope".into())), 0);
        assert_eq!(
            s,
            Settlement::Failed {
                code: RECIPIENT_NOT_FOUND,
                message: "nope".into()
            }
        );
    }

    #[test]
    fn a_driver_failure_keeps_its_code() {
        let s = settle(
            1,
            Err(SendError::Failed {
                code: SEND_FAILED,
                message: "outcome unknown".into(),
            }),
            0,
        );
        assert!(matches!(s, Settlement::Failed { code, .. } if code == SEND_FAILED));
    }

    #[test]
    fn not_connected_keeps_the_message_queued() {
        let s = settle(3, Err(SendError::NotConnected("phone off".into())), 0);
        assert_eq!(
            s,
            Settlement::Offline {
                reason: "phone off".into()
            }
        );
    }

    #[test]
    fn retry_later_is_retried_at_now_plus_after_until_the_tries_run_out() {
        assert_eq!(
            settle(1, retry(1500), 10_000),
            Settlement::RetryAt {
                at: 11_500,
                reason: "throttled".into()
            }
        );
        assert!(matches!(
            settle(MAX_TRIES - 1, retry(1), 0),
            Settlement::RetryAt { .. }
        ));
        assert_eq!(
            settle(MAX_TRIES, retry(1), 0),
            Settlement::Failed {
                code: SEND_FAILED,
                message: format!("gave up after {MAX_TRIES} tries: throttled")
            }
        );
    }
}
