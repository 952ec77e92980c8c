//! The delivery engine: one pacing loop per account that has work, driving
//! queued attempts through a [`WhatsAppDriver`] one at a time.
//!
//! Commit order (exactly once across crashes): the attempt is durable before
//! the 202; the claim (`sending`, message id, next slot) is committed before
//! the hand-off; the result is committed after. An attempt found in `sending`
//! after a crash is handed off again with the same message id, which the
//! network de-duplicates.
//!
//! Idle accounts cost a parked task and a `Notify`, nothing else: a pacer
//! waits on its `Notify` (a new send, a status change) or a timer.

pub mod schedule;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};

use self::schedule::{decide, draw_gap, AccountView, Decision};
use crate::clock::now_ms;
use crate::config::PacingConfig;
use crate::domain::error_codes::{
    INVALID_MEDIA_URL, RECIPIENT_NOT_FOUND, SEND_FAILED, WHATSAPP_NOT_CONNECTED,
};
use crate::domain::{AccountStatus, AttemptStatus, Message};
use crate::driver::{
    DriverEvent, Drivers, MediaDelivery, MediaPayload, OutgoingContent, OutgoingMessage, SendError,
};
use crate::media::{MediaGuard, MediaKind};
use crate::store::admin::{self, Account};
use crate::store::attempts::{self, AttemptKey, AttemptRow, TransitionFields};
use crate::store::Store;

/// After this many hand-offs that asked to be retried, an attempt fails.
const MAX_TRIES: i64 = 12;
/// How often the engine looks for account changes made by another process
/// (the admin CLI's `account connect/disconnect`).
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    drivers: Drivers,
    media: MediaGuard,
    pacing: PacingConfig,
    pacers: Mutex<HashMap<String, Arc<Notify>>>,
    shutdown: watch::Receiver<bool>,
    handoffs_in_flight: AtomicUsize,
    handoff_done: Notify,
}

impl Engine {
    /// Start the engine: recover accounts with pending sends, watch for
    /// account changes, apply driver events. Stops when `shutdown` turns true.
    pub fn start(
        store: Store,
        drivers: Drivers,
        media: MediaGuard,
        pacing: PacingConfig,
        events: mpsc::UnboundedReceiver<DriverEvent>,
        shutdown: watch::Receiver<bool>,
    ) -> Engine {
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                drivers,
                media,
                pacing,
                pacers: Mutex::new(HashMap::new()),
                shutdown,
                handoffs_in_flight: AtomicUsize::new(0),
                handoff_done: Notify::new(),
            }),
        };
        tokio::spawn(engine.clone().recover_and_watch());
        tokio::spawn(engine.clone().apply_events(events));
        engine
    }

    /// Make sure the account's pacer looks at its queue soon.
    pub fn wake(&self, account_id: &str) {
        let mut pacers = self.inner.pacers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notify) = pacers.get(account_id) {
            notify.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        pacers.insert(account_id.to_string(), notify.clone());
        tokio::spawn(self.clone().run_pacer(account_id.to_string(), notify));
    }

    /// Wait until no hand-off is in flight (after shutdown was signalled),
    /// or `timeout` passes.
    pub async fn drain(&self, timeout: Duration) {
        let wait = async {
            loop {
                let done = self.inner.handoff_done.notified();
                if self.inner.handoffs_in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                done.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }

    fn shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    async fn recover_and_watch(self) {
        match self.inner.store.read(attempts::accounts_with_pending).await {
            Ok(ids) => {
                if !ids.is_empty() {
                    tracing::info!(accounts = ids.len(), "resuming accounts with pending sends");
                }
                for id in ids {
                    self.wake(&id);
                }
            }
            Err(e) => tracing::error!(error = %e, "could not scan pending sends at start-up"),
        }
        let mut shutdown = self.inner.shutdown.clone();
        let mut since = now_ms();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
            // Overlap the window: a change is stamped before it commits.
            let now = now_ms();
            let window_start = since - 5_000;
            since = now;
            match self
                .inner
                .store
                .read(move |c| admin::accounts_changed_since(c, window_start))
                .await
            {
                Ok(changed) => {
                    for account in changed {
                        self.wake(&account.id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "account watcher read failed"),
            }
        }
    }

    async fn apply_events(self, mut events: mpsc::UnboundedReceiver<DriverEvent>) {
        while let Some(event) = events.recv().await {
            let store = self.inner.store.clone();
            let now = now_ms();
            // Message events are forward-only transitions by message id,
            // within the account whose connection reported them.
            let (account_id, message_id, next, remote_jid, error) = match event {
                DriverEvent::Delivered {
                    account_id,
                    message_id,
                } => (account_id, message_id, AttemptStatus::Delivered, None, None),
                DriverEvent::Read {
                    account_id,
                    message_id,
                } => (account_id, message_id, AttemptStatus::Read, None, None),
                DriverEvent::Accepted {
                    account_id,
                    message_id,
                    remote_jid,
                } => (
                    account_id,
                    message_id,
                    AttemptStatus::Accepted,
                    remote_jid,
                    None,
                ),
                DriverEvent::Failed {
                    account_id,
                    message_id,
                    code,
                    message,
                } => (
                    account_id,
                    message_id,
                    AttemptStatus::Failed,
                    None,
                    Some((code, message)),
                ),
                DriverEvent::Connection {
                    account_id,
                    status,
                    detail,
                } => {
                    let id = account_id.clone();
                    let r = store
                        .write(move |c| {
                            admin::set_account_status(c, &id, status, detail.as_deref())
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "could not apply an account state change");
                    }
                    self.wake(&account_id);
                    continue;
                }
            };
            let r = store
                .write(move |c| {
                    let fields = TransitionFields {
                        remote_jid: remote_jid.as_deref(),
                        error_code: error.as_ref().map(|(code, _)| *code),
                        error_message: error.as_ref().map(|(_, m)| m.as_str()),
                        ..Default::default()
                    };
                    let key = AttemptKey::AccountMessage {
                        account_id: &account_id,
                        message_id: &message_id,
                    };
                    attempts::transition(c, key, next, &fields, now)
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not apply a driver event");
            }
        }
    }

    async fn run_pacer(self, account_id: String, notify: Arc<Notify>) {
        let mut shutdown = self.inner.shutdown.clone();
        loop {
            if self.shutting_down() {
                return;
            }
            let id = account_id.clone();
            let looked = self
                .inner
                .store
                .read(move |c| Ok((admin::get_account(c, &id)?, attempts::next_pending(c, &id)?)))
                .await;
            let (account, next) = match looked {
                Ok((Some(account), next)) => (account, next),
                Ok((None, _)) => return,
                Err(e) => {
                    tracing::warn!(account = %account_id, error = %e, "pacer read failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            };
            let view = AccountView {
                status: account.status(),
                status_changed_at: account.status_changed_at,
                next_send_at: account.next_send_at,
            };
            let now = now_ms();
            match decide(now, view, next.is_some(), self.inner.pacing.offline_grace) {
                Decision::Idle => {
                    tokio::select! {
                        _ = notify.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Decision::WaitUntil(at) => {
                    let wait = Duration::from_millis((at - now).max(0) as u64);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = notify.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Decision::FailOffline => {
                    let id = account_id.clone();
                    let message = format!(
                        "the WhatsApp account {} stayed offline for more than {}",
                        account.phone,
                        crate::config::format_duration(self.inner.pacing.offline_grace)
                    );
                    let r = self
                        .inner
                        .store
                        .write(move |c| {
                            attempts::fail_pending_of_account(
                                c,
                                &id,
                                WHATSAPP_NOT_CONNECTED,
                                &message,
                                now_ms(),
                            )
                        })
                        .await;
                    if let Ok(n) = r {
                        tracing::info!(account = %account_id, failed = n, "offline grace ran out");
                    }
                }
                Decision::SendNow => {
                    if let Some(attempt) = next {
                        // Count the hand-off before the last shutdown check,
                        // so `drain` either waits for it or it never starts.
                        self.inner.handoffs_in_flight.fetch_add(1, Ordering::SeqCst);
                        if !self.shutting_down() {
                            self.hand_off(account, attempt).await;
                        }
                        self.inner.handoffs_in_flight.fetch_sub(1, Ordering::SeqCst);
                        self.inner.handoff_done.notify_waiters();
                    }
                }
            }
        }
    }

    /// Claim, hand to the driver, record the result. Runs to completion even
    /// during shutdown, so an in-flight send is committed before exit.
    async fn hand_off(&self, account: Account, attempt: AttemptRow) {
        let store = &self.inner.store;
        let redelivery = attempt.status == AttemptStatus::Sending && !attempt.handoff_unsent;
        let Some(driver) = self.inner.drivers.get(account.driver_kind()) else {
            let message = format!(
                "the {} driver is not available in this build",
                account.driver
            );
            self.fail(&attempt.id, SEND_FAILED, &message).await;
            return;
        };
        let gap = draw_gap(
            &mut rand::thread_rng(),
            self.inner.pacing.min_delay,
            self.inner.pacing.max_delay,
        );
        let now = now_ms();
        let (attempt_id, account_id, fresh_id) = (
            attempt.id.clone(),
            account.id.clone(),
            driver.new_message_id(),
        );
        let next_slot = now + gap.as_millis() as i64;
        let claimed = store
            .write(move |c| attempts::claim(c, &attempt_id, &account_id, &fresh_id, next_slot, now))
            .await;
        let attempt = match claimed {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(attempt = %attempt.id, error = %e, "claim failed");
                return;
            }
        };
        let message_id = attempt.message_id.clone().unwrap_or_default();
        let content = match self
            .content_for(&attempt, driver.media_delivery(&account))
            .await
        {
            Ok(content) => content,
            Err((code, message)) => {
                self.fail(&attempt.id, code, &message).await;
                return;
            }
        };
        let outgoing = OutgoingMessage {
            message_id: message_id.clone(),
            to: attempt.to_phone.clone(),
            content,
            redelivery,
        };
        match driver.send(&account, &outgoing).await {
            Ok(accepted) => {
                let id = attempt.id.clone();
                let r = store
                    .write(move |c| {
                        let fields = TransitionFields {
                            remote_jid: Some(&accepted.remote_jid),
                            message_id: Some(&accepted.message_id),
                            ..Default::default()
                        };
                        attempts::transition(
                            c,
                            AttemptKey::Id(&id),
                            AttemptStatus::Accepted,
                            &fields,
                            now_ms(),
                        )
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(attempt = %attempt.id, error = %e, "could not record acceptance");
                }
            }
            Err(SendError::NotOnWhatsApp(m)) => {
                self.fail(&attempt.id, RECIPIENT_NOT_FOUND, &m).await;
            }
            Err(SendError::Failed { code, message }) => {
                self.fail(&attempt.id, code, &message).await;
            }
            Err(SendError::NotConnected(m)) => {
                // Keep the send queued (same message id) until the account
                // reconnects or the offline grace runs out.
                tracing::warn!(account = %account.id, reason = %m, "account went offline during a send");
                let (id, attempt_id) = (account.id.clone(), attempt.id.clone());
                let _ = store
                    .write(move |c| {
                        attempts::mark_handoff_unsent(c, &attempt_id)?;
                        admin::set_account_status(c, &id, AccountStatus::Disconnected, Some(&m))
                    })
                    .await;
            }
            Err(SendError::RetryLater { after, reason }) => {
                if attempt.tries >= MAX_TRIES {
                    let message = format!("gave up after {} tries: {reason}", attempt.tries);
                    self.fail(&attempt.id, SEND_FAILED, &message).await;
                } else {
                    tracing::info!(attempt = %attempt.id, ?after, %reason, "send will be retried");
                    let (id, attempt_id) = (account.id.clone(), attempt.id.clone());
                    let at = now_ms() + after.as_millis() as i64;
                    let _ = store
                        .write(move |c| {
                            attempts::mark_handoff_unsent(c, &attempt_id)?;
                            attempts::set_next_send_at(c, &id, at)
                        })
                        .await;
                }
            }
        }
    }

    /// Record a final failure of an attempt (forward-only).
    async fn fail(&self, attempt_id: &str, code: &'static str, message: &str) {
        let (id, message) = (attempt_id.to_string(), message.to_string());
        let r = self
            .inner
            .store
            .write(move |c| {
                let fields = TransitionFields {
                    error_code: Some(code),
                    error_message: Some(&message),
                    ..Default::default()
                };
                attempts::transition(
                    c,
                    AttemptKey::Id(&id),
                    AttemptStatus::Failed,
                    &fields,
                    now_ms(),
                )
            })
            .await;
        if let Err(e) = r {
            tracing::error!(attempt = %attempt_id, error = %e, "could not record a send result");
        }
    }

    /// The message as the driver gets it; media fetched (pinned) if the
    /// driver wants bytes.
    async fn content_for(
        &self,
        attempt: &AttemptRow,
        delivery: MediaDelivery,
    ) -> Result<OutgoingContent, (&'static str, String)> {
        let payload: serde_json::Value = serde_json::from_str(&attempt.payload).unwrap_or_default();
        let message = Message::from_payload(&attempt.type_name, &payload).ok_or((
            SEND_FAILED,
            "stored message payload is unreadable".to_string(),
        ))?;
        let media = |url: String, kind: MediaKind, mimetype: Option<String>| async move {
            match delivery {
                MediaDelivery::Link => Ok(MediaPayload::Link { url, mimetype }),
                MediaDelivery::Bytes => {
                    let fetched = self
                        .inner
                        .media
                        .fetch(&url, kind, mimetype.as_deref())
                        .await
                        .map_err(|e| (INVALID_MEDIA_URL, e.to_string()))?;
                    Ok(MediaPayload::Bytes {
                        bytes: fetched.bytes,
                        mimetype: fetched.mimetype,
                    })
                }
            }
        };
        Ok(match message {
            Message::Text { body } => OutgoingContent::Text { body },
            Message::Image { url, caption } => OutgoingContent::Image {
                media: media(url, MediaKind::Image, None).await?,
                caption,
            },
            Message::Document {
                url,
                file_name,
                mimetype,
                caption,
            } => OutgoingContent::Document {
                media: media(url, MediaKind::Document, mimetype).await?,
                file_name,
                caption,
            },
        })
    }
}
