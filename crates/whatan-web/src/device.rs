//! A linked session kept connected: [`LinkedDevice`].
//!
//! The library's client reconnects by itself after a dropped connection; it
//! stops only when WhatsApp ends the session (logout), bans the account for a
//! while, hands the session to another client, or refuses the connection. A
//! supervisor task restarts it where that makes sense ([`after_run`]): at a
//! ban's end, after a backoff following a refusal; never after a logout
//! (the session file is then removed) or a takeover.
//!
//! Sends wait for the server's ack of their message id (see [`crate::mapping`]
//! for why): a [`Router`] on the library's event bus hands each ack to the
//! send waiting for it, or reports it as [`WebEvent::ServerAck`] when it
//! comes too late. Receipts and connection changes are reported as they come.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use whatsapp_rust::bot::Bot;
use whatsapp_rust::client::ClientError;
use whatsapp_rust::media::{self, DocumentOptions, ImageOptions};
use whatsapp_rust::proto_helpers::MessageBuilderExt;
use whatsapp_rust::types::events::{Event, EventHandler, EventInterest, EventKind};
use whatsapp_rust::upload::UploadOptions;
use whatsapp_rust::wacore::download::MediaType;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid, SendError, SendOptions};

use crate::mapping::{
    ack_result, after_run, connection_change, is_message_ack, receipt_kind, restart_backoff,
    web_event, AfterRun, ConnectionChange, OwnIds,
};
use crate::net::Net;
use crate::session::{remove_session, session_exists};
use crate::{phone_user, WebError, WebEvent};

/// How long a send waits for WhatsApp's ack of its message.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(20);

/// WhatsApp took a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub message_id: String,
    /// The address it went to, `917999709798@s.whatsapp.net`.
    pub to_jid: String,
}

type OnEvent = Arc<dyn Fn(WebEvent) + Send + Sync>;

/// One account's linked session, connected and supervised in the background
/// until [`LinkedDevice::shutdown`] (or drop, which asks the same without
/// waiting).
pub struct LinkedDevice {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    path: PathBuf,
    net: Net,
    router: Arc<Router>,
    client: Mutex<Option<Arc<Client>>>,
    stop: watch::Sender<bool>,
    ack_timeout: Duration,
}

impl LinkedDevice {
    /// Connect the linked session stored at `path`, reporting what happens
    /// through `on_event` (called on the library's dispatch path: keep it
    /// quick, e.g. push to a channel). Fails with [`WebError::NotLinked`],
    /// touching nothing, when there is no linked session there.
    pub async fn connect(
        path: &Path,
        on_event: impl Fn(WebEvent) + Send + Sync + 'static,
    ) -> Result<LinkedDevice, WebError> {
        Self::connect_with(Net::default(), path, Arc::new(on_event), ACK_TIMEOUT).await
    }

    pub(crate) async fn connect_with(
        net: Net,
        path: &Path,
        on_event: OnEvent,
        ack_timeout: Duration,
    ) -> Result<LinkedDevice, WebError> {
        if !session_exists(path) {
            return Err(WebError::NotLinked(format!(
                "no linked session at {}",
                path.display()
            )));
        }
        let router = Arc::new(Router::new(on_event));
        let bot = build_linked_bot(&net, path, &router).await?;
        router.emit(WebEvent::Connecting);
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            net,
            router,
            client: Mutex::new(None),
            stop,
            ack_timeout,
        });
        let supervisor = tokio::spawn(supervise(shared.clone(), bot));
        Ok(LinkedDevice {
            shared,
            supervisor: Mutex::new(Some(supervisor)),
        })
    }

    /// False once the device stopped for good (logged out, taken over, shut
    /// down).
    pub fn is_running(&self) -> bool {
        lock(&self.supervisor)
            .as_ref()
            .is_some_and(|task| !task.is_finished())
    }

    /// Wait up to `timeout` for the device to be connected and logged in.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut connected = self.shared.router.connected.subscribe();
        let became = tokio::time::timeout(timeout, connected.wait_for(|c| *c)).await;
        matches!(became, Ok(Ok(_)))
    }

    /// Disconnect gracefully (the library flushes its state) and stop.
    pub async fn shutdown(&self) {
        self.shared.stop.send_replace(true);
        let task = lock(&self.supervisor).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    pub async fn send_text(
        &self,
        to_e164: &str,
        message_id: &str,
        text: &str,
    ) -> Result<Ack, WebError> {
        self.send(to_e164, message_id, wa::Message::text(text))
            .await
    }

    /// Upload `bytes` (encrypted by the library) and send them as an image.
    pub async fn send_image(
        &self,
        to_e164: &str,
        message_id: &str,
        bytes: Vec<u8>,
        mimetype: &str,
        caption: Option<String>,
    ) -> Result<Ack, WebError> {
        phone_user(to_e164)?;
        let upload = self
            .ready_client()?
            .upload(bytes, MediaType::Image, UploadOptions::default())
            .await
            .map_err(|e| WebError::RetryLater(format!("uploading the image failed: {e:#}")))?;
        let options = ImageOptions {
            caption,
            mimetype: Some(mimetype.to_string()),
            ..Default::default()
        };
        self.send(to_e164, message_id, media::image_message(upload, options))
            .await
    }

    /// Upload `bytes` and send them as a document.
    pub async fn send_document(
        &self,
        to_e164: &str,
        message_id: &str,
        bytes: Vec<u8>,
        mimetype: &str,
        file_name: Option<String>,
        caption: Option<String>,
    ) -> Result<Ack, WebError> {
        phone_user(to_e164)?;
        let upload = self
            .ready_client()?
            .upload(bytes, MediaType::Document, UploadOptions::default())
            .await
            .map_err(|e| WebError::RetryLater(format!("uploading the document failed: {e:#}")))?;
        let options = DocumentOptions {
            mimetype: Some(mimetype.to_string()),
            title: file_name.clone(),
            file_name,
            caption,
            ..Default::default()
        };
        self.send(
            to_e164,
            message_id,
            media::document_message(upload, options),
        )
        .await
    }

    /// Whether `e164` has a WhatsApp account (asks WhatsApp; cache it).
    pub async fn is_on_whatsapp(&self, e164: &str) -> Result<bool, WebError> {
        let user = phone_user(e164)?;
        let client = self.ready_client()?;
        let found = client
            .contacts()
            .is_on_whatsapp(&[Jid::pn(user)])
            .await
            .map_err(|e| {
                WebError::RetryLater(format!("could not ask whether {e164} is on WhatsApp: {e}"))
            })?;
        Ok(found.iter().any(|r| r.is_registered))
    }

    /// Send with our message id and wait for WhatsApp's ack of it. A resend
    /// with the same id (after a crash) is the same message to WhatsApp.
    async fn send(
        &self,
        to_e164: &str,
        message_id: &str,
        message: wa::Message,
    ) -> Result<Ack, WebError> {
        let user = phone_user(to_e164)?;
        if message_id.is_empty() {
            return Err(WebError::Invalid("empty message id".into()));
        }
        let client = self.ready_client()?;
        let to = Jid::pn(user);
        // Registered before the send: the ack can overtake its return.
        let waiter = self.shared.router.expect_ack(message_id);
        client
            .send_message_with_options(
                to.clone(),
                message,
                SendOptions::default().with_message_id(message_id),
            )
            .await
            .map_err(send_error)?;
        let error = waiter.wait(self.shared.ack_timeout).await?;
        ack_result(error.as_deref())?;
        Ok(Ack {
            message_id: message_id.to_string(),
            to_jid: to.to_string(),
        })
    }

    fn ready_client(&self) -> Result<Arc<Client>, WebError> {
        let client = lock(&self.shared.client)
            .clone()
            .ok_or_else(|| WebError::NotConnected("the linked device is not running".into()))?;
        if !client.is_connected() || !client.is_logged_in() {
            return Err(WebError::NotConnected(
                "the linked device is offline (it reconnects by itself)".into(),
            ));
        }
        Ok(client)
    }
}

impl Drop for LinkedDevice {
    fn drop(&mut self) {
        // The supervisor disconnects gracefully on its own.
        self.shared.stop.send_replace(true);
    }
}

/// The library's send errors, classified.
pub(crate) fn send_error(error: SendError) -> WebError {
    match error {
        SendError::NotLoggedIn
        | SendError::Client(ClientError::NotConnected | ClientError::NotLoggedIn) => {
            WebError::NotConnected(format!("the linked device is offline: {error}"))
        }
        SendError::Client(ClientError::Socket(_)) => {
            WebError::NotConnected(format!("the connection broke during the send: {error}"))
        }
        SendError::InvalidRequest(m) => WebError::Invalid(m),
        // Anything else may have happened after the stanza was written;
        // sending again with the same message id is what makes it safe.
        other => WebError::RetryLater(format!("the send did not complete: {other}")),
    }
}

/// Build a bot on the session at `path` and check that it is linked.
async fn build_linked_bot(net: &Net, path: &Path, router: &Arc<Router>) -> Result<Bot, WebError> {
    let bot = net
        .builder(path)
        .await?
        .with_event_handler(RouterHandle(router.clone()))
        .build()
        .await
        .map_err(|e| WebError::Store(format!("cannot load {}: {e}", path.display())))?;
    let client = bot.client();
    let Some(phone) = client.pn() else {
        return Err(WebError::NotLinked(format!(
            "the session at {} was never linked (pairing did not finish)",
            path.display()
        )));
    };
    router.set_own(OwnIds {
        phone_user: Some(phone.user.to_string()),
        lid_user: client.lid().map(|lid| lid.user.to_string()),
    });
    Ok(bot)
}

async fn supervise(shared: Arc<Shared>, first: Bot) {
    let mut stop = shared.stop.subscribe();
    let mut failures = 0u32;
    let mut bot = first;
    loop {
        let mut handle = bot.spawn();
        *lock(&shared.client) = Some(handle.client());
        let stopped = tokio::select! {
            _ = &mut handle => false,
            _ = stop.wait_for(|stop| *stop) => true,
        };
        *lock(&shared.client) = None;
        shared.router.connected.send_replace(false);
        if stopped {
            handle.shutdown().await;
            return;
        }
        drop(handle);
        let (last, was_connected) = shared.router.take_run_summary();
        if was_connected {
            failures = 0;
        }
        match after_run(last.as_ref(), failures) {
            AfterRun::Stop {
                remove_session: true,
            } => {
                if let Err(e) = remove_session(&shared.path) {
                    shared.router.emit(WebEvent::LoggedOut {
                        reason: format!(
                            "logged out, but the session file {} could not be removed: {e}",
                            shared.path.display()
                        ),
                    });
                }
                return;
            }
            AfterRun::Stop {
                remove_session: false,
            } => return,
            AfterRun::RestartAt(at) => {
                let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                if !pause(wait, &mut stop).await {
                    return;
                }
            }
            AfterRun::RestartAfter(wait) => {
                failures = failures.saturating_add(1);
                if !pause(wait, &mut stop).await {
                    return;
                }
            }
        }
        shared.router.emit(WebEvent::Connecting);
        bot = loop {
            match build_linked_bot(&shared.net, &shared.path, &shared.router).await {
                Ok(bot) => break bot,
                Err(WebError::NotLinked(reason)) => {
                    shared.router.emit(WebEvent::LoggedOut { reason });
                    return;
                }
                Err(e) => {
                    shared.router.emit(WebEvent::Disconnected {
                        reason: e.to_string(),
                    });
                    failures = failures.saturating_add(1);
                    if !pause(restart_backoff(failures), &mut stop).await {
                        return;
                    }
                }
            }
        };
    }
}

/// Sleep for `wait` unless asked to stop; false when asked to stop.
async fn pause(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stop.wait_for(|stop| *stop) => false,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Routes the library's events: acks to the sends waiting for them,
/// everything else (late acks, receipts, connection changes) to `on_event`.
pub(crate) struct Router {
    on_event: OnEvent,
    waiters: Mutex<HashMap<String, oneshot::Sender<Option<String>>>>,
    own: Mutex<OwnIds>,
    /// The last connection change of the current run, and whether the run
    /// got connected at all.
    run: Mutex<(Option<ConnectionChange>, bool)>,
    connected: watch::Sender<bool>,
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

    fn emit(&self, event: WebEvent) {
        (self.on_event)(event);
    }

    fn set_own(&self, own: OwnIds) {
        *lock(&self.own) = own;
    }

    fn take_run_summary(&self) -> (Option<ConnectionChange>, bool) {
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
struct RouterHandle(Arc<Router>);

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

    #[test]
    fn send_errors_are_classified_by_what_the_caller_should_do() {
        assert!(matches!(
            send_error(SendError::NotLoggedIn),
            WebError::NotConnected(_)
        ));
        assert!(matches!(
            send_error(SendError::Client(ClientError::NotConnected)),
            WebError::NotConnected(_)
        ));
        assert!(matches!(
            send_error(SendError::InvalidRequest("bad".into())),
            WebError::Invalid(m) if m == "bad"
        ));
        assert!(matches!(
            send_error(SendError::Internal(whatsapp_rust::anyhow::anyhow!(
                "encrypt"
            ))),
            WebError::RetryLater(_)
        ));
    }

    #[tokio::test]
    async fn connecting_without_a_session_file_fails_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-sessions").join("acc_1.db");
        let result =
            LinkedDevice::connect_with(Net::offline(), &path, Arc::new(|_| {}), ACK_TIMEOUT).await;
        assert!(matches!(result, Err(WebError::NotLinked(_))));
        assert!(!dir.path().join("web-sessions").exists());
    }

    #[tokio::test]
    async fn connecting_an_unfinished_pairing_fails_as_not_linked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acc_1.db");
        // A store that exists but was never paired.
        drop(
            Net::offline()
                .builder(&path)
                .await
                .unwrap()
                .build()
                .await
                .unwrap(),
        );
        assert!(session_exists(&path));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let result = LinkedDevice::connect_with(
            Net::offline(),
            &path,
            Arc::new(move |e| lock(&sink).push(e)),
            ACK_TIMEOUT,
        )
        .await;
        assert!(matches!(result, Err(WebError::NotLinked(m)) if m.contains("never linked")));
        assert!(lock(&seen).is_empty());
    }
}
