//! The library's event bus, routed: each server ack goes to the send waiting
//! for its message id ([`AckWaiter`]), or is reported as
//! [`WebEvent::ServerAck`] when it comes too late; receipts and connection
//! changes are reported as they come, and the connection state is kept for
//! the device's supervisor. Apart from the device so that the routing rules
//! are tested without a connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};
use whatsapp_rust::types::events::{Event, EventHandler, EventInterest, EventKind};

use crate::mapping::{
    connection_change, is_message_ack, receipt_kind, web_event, ConnectionChange, OwnIds,
};
use crate::{lock, WebError, WebEvent};

pub(crate) type OnEvent = Arc<dyn Fn(WebEvent) + Send + Sync>;

/// Routes the library's events: acks to the sends waiting for them,
/// everything else (late acks, receipts, connection changes) to `on_event`.
pub(crate) struct Router {
    on_event: OnEvent,
    waiters: Mutex<HashMap<String, oneshot::Sender<Option<String>>>>,
    own: Mutex<OwnIds>,
    /// The last connection change of the current run, and whether the run
    /// got connected at all.
    run: Mutex<(Option<ConnectionChange>, bool)>,
    /// Whether the device is connected and logged in now.
    pub(crate) connected: watch::Sender<bool>,
}

impl Router {
    pub(crate) fn new(on_event: OnEvent) -> Router {
        Router {
            on_event,
            waiters: Mutex::new(HashMap::new()),
            own: Mutex::new(OwnIds::default()),
            run: Mutex::new((None, false)),
            connected: watch::channel(false).0,
        }
    }

    pub(crate) fn emit(&self, event: WebEvent) {
        (self.on_event)(event);
    }

    pub(crate) fn set_own(&self, own: OwnIds) {
        *lock(&self.own) = own;
    }

    pub(crate) fn take_run_summary(&self) -> (Option<ConnectionChange>, bool) {
        std::mem::take(&mut *lock(&self.run))
    }

    pub(crate) fn expect_ack(&self, message_id: &str) -> AckWaiter<'_> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(message_id.to_string(), tx);
        AckWaiter {
            router: self,
            message_id: message_id.to_string(),
            rx: Some(rx),
        }
    }

    pub(crate) fn route(&self, event: &Event, now: SystemTime) {
        match event {
            Event::ServerAck(ack) => {
                if !is_message_ack(ack.class.as_deref()) {
                    return;
                }
                let waiter = lock(&self.waiters).remove(&ack.id);
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(ack.error.clone());
                    }
                    None => self.emit(WebEvent::ServerAck {
                        message_id: ack.id.clone(),
                        error: ack.error.clone(),
                    }),
                }
            }
            Event::Receipt(receipt) => {
                let Some(kind) = receipt_kind(&receipt.r#type) else {
                    return;
                };
                // The account's own phone acknowledging its copy of our
                // message says nothing about the recipient.
                if lock(&self.own).is_own(&receipt.source.sender) {
                    return;
                }
                self.emit(WebEvent::Receipt {
                    message_ids: receipt.message_ids.clone(),
                    kind,
                });
            }
            other => {
                if let Some(change) = connection_change(other, now) {
                    let connected = change == ConnectionChange::Connected;
                    self.connected.send_replace(connected);
                    self.emit(web_event(&change));
                    let mut run = lock(&self.run);
                    run.1 |= connected;
                    run.0 = Some(change);
                }
            }
        }
    }
}

/// The library wants its handler by value; this shares the router.
pub(crate) struct RouterHandle(pub(crate) Arc<Router>);

impl EventHandler for RouterHandle {
    fn handle_event(&self, event: Arc<Event>) {
        self.0.route(&event, SystemTime::now());
    }

    fn interest(&self) -> EventInterest {
        EventInterest::of(&[
            EventKind::Connected,
            EventKind::Disconnected,
            EventKind::LoggedOut,
            EventKind::StreamReplaced,
            EventKind::TemporaryBan,
            EventKind::ConnectFailure,
            EventKind::ClientOutdated,
            EventKind::Receipt,
            EventKind::ServerAck,
        ])
    }
}

/// A send's claim on the ack of its message id; dropping it gives the claim
/// up, so a late ack is reported as an event instead.
pub(crate) struct AckWaiter<'a> {
    router: &'a Router,
    message_id: String,
    rx: Option<oneshot::Receiver<Option<String>>>,
}

impl AckWaiter<'_> {
    /// The ack's error code (`None` for a plain ack).
    pub(crate) async fn wait(mut self, timeout: Duration) -> Result<Option<String>, WebError> {
        let rx = self.rx.take().expect("waited once");
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(error)) => Ok(error),
            Ok(Err(_)) => Err(WebError::NotConnected(
                "the linked device stopped before WhatsApp confirmed the message".into(),
            )),
            Err(_) => Err(WebError::RetryLater(format!(
                "WhatsApp did not confirm message {} within {}s (it may still; \
                 a resend with the same id is the same message)",
                self.message_id,
                timeout.as_secs()
            ))),
        }
    }
}

impl Drop for AckWaiter<'_> {
    fn drop(&mut self) {
        lock(&self.router.waiters).remove(&self.message_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::chrono;
    use whatsapp_rust::types::events::{ConnectFailureReason, TempBanReason};
    use whatsapp_rust::types::events::{Connected, LoggedOut, Receipt, ServerAck, TemporaryBan};
    use whatsapp_rust::types::message::MessageSource;
    use whatsapp_rust::types::presence::ReceiptType;
    use whatsapp_rust::Jid;

    fn recording_router() -> (Router, Arc<Mutex<Vec<WebEvent>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let router = Router::new(Arc::new(move |e| lock(&sink).push(e)));
        (router, seen)
    }

    fn ack(id: &str, class: Option<&str>, error: Option<&str>) -> Event {
        Event::ServerAck(
            ServerAck::builder()
                .id(id.to_string())
                .maybe_class(class.map(str::to_string))
                .maybe_error(error.map(str::to_string))
                .build(),
        )
    }

    fn receipt(from: Jid, kind: &str, ids: &[&str]) -> Event {
        Event::Receipt(
            Receipt::builder()
                .message_ids(ids.iter().map(|s| s.to_string()).collect())
                .source(MessageSource {
                    chat: from.clone(),
                    sender: from,
                    ..Default::default()
                })
                .timestamp(chrono::Utc::now())
                .r#type(ReceiptType::parse(kind))
                .offline(false)
                .build(),
        )
    }

    #[tokio::test]
    async fn an_ack_goes_to_the_send_waiting_for_it() {
        let (router, seen) = recording_router();
        let waiter = router.expect_ack("3EB0A");
        router.route(&ack("3EB0A", Some("message"), None), SystemTime::now());
        assert_eq!(waiter.wait(Duration::from_secs(5)).await, Ok(None));
        assert!(lock(&seen).is_empty(), "a claimed ack is not an event");
    }

    #[tokio::test]
    async fn a_nack_reaches_the_waiting_send_with_its_code() {
        let (router, _) = recording_router();
        let waiter = router.expect_ack("3EB0B");
        router.route(
            &ack("3EB0B", Some("message"), Some("479")),
            SystemTime::now(),
        );
        assert_eq!(
            waiter.wait(Duration::from_secs(5)).await,
            Ok(Some("479".to_string()))
        );
    }

    #[tokio::test]
    async fn an_ack_nobody_waits_for_any_more_is_reported_as_an_event() {
        let (router, seen) = recording_router();
        let waiter = router.expect_ack("3EB0C");
        // The send gave up (its ack timeout): the claim is dropped.
        drop(waiter);
        router.route(&ack("3EB0C", None, None), SystemTime::now());
        router.route(&ack("rcpt-1", Some("receipt"), None), SystemTime::now());
        assert_eq!(
            *lock(&seen),
            vec![WebEvent::ServerAck {
                message_id: "3EB0C".into(),
                error: None
            }]
        );
    }

    #[tokio::test]
    async fn a_send_without_an_ack_times_out_as_retry_later() {
        let (router, _) = recording_router();
        let waiter = router.expect_ack("3EB0D");
        let result = waiter.wait(Duration::from_millis(1)).await;
        assert!(matches!(result, Err(WebError::RetryLater(m)) if m.contains("3EB0D")));
        assert!(lock(&router.waiters).is_empty());
    }

    #[test]
    fn receipts_by_message_id_are_reported_even_from_lid_addresses() {
        let (router, seen) = recording_router();
        router.set_own(OwnIds {
            phone_user: Some("917000000001".into()),
            lid_user: Some("555".into()),
        });
        router.route(
            &receipt(Jid::lid("98765"), "", &["3EB0E"]),
            SystemTime::now(),
        );
        router.route(
            &receipt(Jid::pn("917999709798"), "read", &["3EB0E", "3EB0F"]),
            SystemTime::now(),
        );
        // Our own phone's receipts and receipts that move nothing are ignored.
        router.route(
            &receipt(Jid::pn("917000000001"), "", &["3EB0E"]),
            SystemTime::now(),
        );
        router.route(
            &receipt(Jid::lid("555"), "read", &["3EB0E"]),
            SystemTime::now(),
        );
        router.route(
            &receipt(Jid::pn("917999709798"), "read-self", &["3EB0E"]),
            SystemTime::now(),
        );
        assert_eq!(
            *lock(&seen),
            vec![
                WebEvent::Receipt {
                    message_ids: vec!["3EB0E".into()],
                    kind: crate::ReceiptKind::Delivered
                },
                WebEvent::Receipt {
                    message_ids: vec!["3EB0E".into(), "3EB0F".into()],
                    kind: crate::ReceiptKind::Read
                },
            ]
        );
    }

    #[test]
    fn connection_changes_are_reported_and_remembered_for_the_supervisor() {
        let (router, seen) = recording_router();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        router.route(&Event::Connected(Connected::builder().build()), now);
        assert!(*router.connected.borrow());
        router.route(
            &Event::TemporaryBan(
                TemporaryBan::builder()
                    .code(TempBanReason::BlockedByUsers)
                    .expire(chrono::Duration::seconds(60))
                    .build(),
            ),
            now,
        );
        assert!(!*router.connected.borrow());
        let (last, was_connected) = router.take_run_summary();
        assert!(was_connected);
        assert!(matches!(last, Some(ConnectionChange::Banned { .. })));
        assert_eq!(router.take_run_summary(), (None, false));
        router.route(
            &Event::LoggedOut(
                LoggedOut::builder()
                    .on_connect(false)
                    .reason(ConnectFailureReason::LoggedOut)
                    .build(),
            ),
            now,
        );
        let seen = lock(&seen);
        assert_eq!(seen[0], WebEvent::Connected);
        assert_eq!(
            seen[1],
            WebEvent::TemporaryBan {
                expires_at: now + Duration::from_secs(60),
                reason: "102: too many people blocked you".into()
            }
        );
        assert!(matches!(&seen[2], WebEvent::LoggedOut { reason } if reason.contains("unlinked")));
    }
}
