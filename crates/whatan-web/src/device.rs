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

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use whatsapp_rust::bot::Bot;
use whatsapp_rust::client::ClientError;
use whatsapp_rust::media::{self, DocumentOptions, ImageOptions};
use whatsapp_rust::proto_helpers::MessageBuilderExt;
use whatsapp_rust::upload::UploadOptions;
use whatsapp_rust::wacore::download::MediaType;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid, SendError, SendOptions};

use crate::mapping::{ack_result, after_run, restart_backoff, AfterRun, OwnIds};
use crate::net::Net;
use crate::reach::Reach;
use crate::router::{OnEvent, Router, RouterHandle};
use crate::session::Session;
use crate::{lock, phone_user, WebError, WebEvent};

/// How long a send waits for WhatsApp's ack of its message.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(20);

/// WhatsApp took a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub message_id: String,
    /// The address it went to, `917999709798@s.whatsapp.net`.
    pub to_jid: String,
}

/// One account's linked session, connected and supervised in the background
/// until [`LinkedDevice::shutdown`] (or drop, which asks the same without
/// waiting).
pub struct LinkedDevice {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    session: Session,
    net: Net,
    /// Why the last connection attempt failed, if it did.
    reach: Arc<Reach>,
    router: Arc<Router>,
    client: Mutex<Option<Arc<Client>>>,
    stop: watch::Sender<bool>,
    ack_timeout: Duration,
}

impl LinkedDevice {
    /// Connect the linked `session`, reporting what happens
    /// through `on_event` (called on the library's dispatch path: keep it
    /// quick, e.g. push to a channel). Fails with [`WebError::NotLinked`],
    /// touching nothing, when there is no linked session there.
    ///
    /// While the device cannot reach WhatsApp it reports
    /// [`WebEvent::Disconnected`] with the cause (DNS, TLS, refused, timed
    /// out), once per cause, and keeps trying.
    pub async fn connect(
        net: &Net,
        session: &Session,
        on_event: impl Fn(WebEvent) + Send + Sync + 'static,
    ) -> Result<LinkedDevice, WebError> {
        Self::connect_with(net.clone(), session, Arc::new(on_event), ACK_TIMEOUT).await
    }

    pub(crate) async fn connect_with(
        net: Net,
        session: &Session,
        on_event: OnEvent,
        ack_timeout: Duration,
    ) -> Result<LinkedDevice, WebError> {
        if !session.exists().await? {
            return Err(WebError::NotLinked(format!(
                "no linked session at {session}"
            )));
        }
        let router = Arc::new(Router::new(on_event));
        let reach = Reach::new();
        let bot = build_linked_bot(&net, session, &router, &reach).await?;
        router.emit(WebEvent::Connecting);
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            session: session.clone(),
            net,
            reach,
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

/// Build a bot on `session` and check that it is linked.
async fn build_linked_bot(
    net: &Net,
    session: &Session,
    router: &Arc<Router>,
    reach: &Arc<Reach>,
) -> Result<Bot, WebError> {
    let bot = net
        .observed_builder(session, reach)
        .await?
        .with_event_handler(RouterHandle(router.clone()))
        .build()
        .await
        .map_err(|e| WebError::Store(format!("cannot load {session}: {e}")))?;
    let client = bot.client();
    let Some(phone) = client.pn() else {
        return Err(WebError::NotLinked(format!(
            "the session at {session} was never linked (pairing did not finish)"
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
    let mut unreachable = shared.reach.failures();
    let mut failures = 0u32;
    let mut bot = first;
    loop {
        let mut handle = bot.spawn();
        *lock(&shared.client) = Some(handle.client());
        let stopped = loop {
            tokio::select! {
                _ = &mut handle => break false,
                _ = stop.wait_for(|stop| *stop) => break true,
                // The library retries by itself; say once why it fails.
                Ok(()) = unreachable.changed() => {
                    let reason = unreachable.borrow_and_update().clone();
                    if let Some(reason) = reason {
                        if !*shared.router.connected.borrow() {
                            shared.router.emit(WebEvent::Disconnected { reason });
                        }
                    }
                }
            }
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
                if let Err(e) = shared.session.remove().await {
                    shared.router.emit(WebEvent::LoggedOut {
                        reason: format!("logged out, but the session was not removed: {e}"),
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
            match build_linked_bot(&shared.net, &shared.session, &shared.router, &shared.reach)
                .await
            {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let session = Session::File(path);
        let result =
            LinkedDevice::connect_with(Net::offline(), &session, Arc::new(|_| {}), ACK_TIMEOUT)
                .await;
        assert!(matches!(result, Err(WebError::NotLinked(_))));
        assert!(!dir.path().join("web-sessions").exists());
    }

    #[tokio::test]
    async fn connecting_an_unfinished_pairing_fails_as_not_linked() {
        let dir = tempfile::tempdir().unwrap();
        let session = Session::File(dir.path().join("acc_1.db"));
        // A store that exists but was never paired.
        drop(
            Net::offline()
                .builder(&session)
                .await
                .unwrap()
                .build()
                .await
                .unwrap(),
        );
        assert!(session.exists().await.unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let result = LinkedDevice::connect_with(
            Net::offline(),
            &session,
            Arc::new(move |e| lock(&sink).push(e)),
            ACK_TIMEOUT,
        )
        .await;
        assert!(matches!(result, Err(WebError::NotLinked(m)) if m.contains("never linked")));
        assert!(lock(&seen).is_empty());
    }
}
