//! Applying what drivers report later: receipts, acks and failures move an
//! attempt forward (only within the reporting account), connection changes
//! move the account and wake its pacer. A store that cannot write is retried
//! with back-off, so a receipt is not dropped on a full disk.

use tokio::sync::mpsc;

use super::{Backoff, Engine};
use crate::domain::AttemptStatus;
use crate::driver::DriverEvent;
use crate::store::admin;
use crate::store::attempts::{self, AttemptKey, TransitionFields};
use crate::store::StoreError;

impl Engine {
    pub(super) async fn apply_events(self, mut events: mpsc::UnboundedReceiver<DriverEvent>) {
        while let Some(event) = events.recv().await {
            let mut backoff = Backoff::new();
            loop {
                match self.apply_event(event.clone()).await {
                    Err(e) if e.is_unavailable() && !self.shutting_down() => {
                        self.store_error("could not apply a driver event", "", &e);
                        self.pause(backoff.next()).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not apply a driver event");
                        break;
                    }
                    Ok(()) => break,
                }
            }
        }
    }

    pub(super) async fn apply_event(&self, event: DriverEvent) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now_ms();
        // Message events are forward-only transitions by message id, within
        // the account whose connection reported them.
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
                store
                    .write(move |c| {
                        admin::set_account_status_at(c, &id, status, detail.as_deref(), now)
                    })
                    .await?;
                self.wake(&account_id);
                return Ok(());
            }
        };
        let (counted_account, counted_code) = (
            account_id.clone(),
            error.as_ref().map(|(code, _)| code.to_string()),
        );
        let moved = store
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
            .await?;
        if moved {
            crate::metrics::attempts_finished(&counted_account, next, counted_code.as_deref(), 1);
        }
        Ok(())
    }
}
