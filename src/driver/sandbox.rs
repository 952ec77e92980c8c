//! The sandbox driver: a simulated WhatsApp network inside the binary, so
//! whatan runs and is tested with no phone. It keeps a durable record of
//! every message it "delivered" (`whatan sandbox outbox`), de-duplicates by
//! message id as WhatsApp does, answers "not on WhatsApp" for the numbers in
//! `[sandbox] unreachable`, and sends delivered/read receipts after
//! `receipt_delay`. `account connect/disconnect` switch the simulated phone on
//! and off (the account's status, which the engine checks before each send).

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde_json::json;

use super::{
    phone_jid, Accepted, DriverEvent, EventSink, MediaPayload, OutgoingContent, OutgoingMessage,
    SendError, WhatsAppDriver,
};
use crate::clock::now_ms;
use crate::config::SandboxConfig;
use crate::domain::{AccountStatus, DriverKind};
use crate::store::admin::Account;
use crate::store::{outbox, Store};

pub struct SandboxDriver {
    store: Store,
    unreachable: HashSet<String>,
    receipt_delay: Duration,
    ack_delay: Duration,
    events: EventSink,
}

impl SandboxDriver {
    pub fn new(store: Store, config: &SandboxConfig, events: EventSink) -> SandboxDriver {
        SandboxDriver {
            store,
            unreachable: config.unreachable.iter().cloned().collect(),
            receipt_delay: config.receipt_delay,
            ack_delay: config.ack_delay,
            events,
        }
    }
}

/// `BAE5` followed by 16 upper-case hex digits, like WhatsApp Web clients.
pub fn web_style_message_id() -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("BAE5{n:016X}")
}

fn media_summary(media: &MediaPayload) -> serde_json::Value {
    match media {
        MediaPayload::Bytes { bytes, mimetype } => {
            json!({ "bytes": bytes.len(), "mimetype": mimetype })
        }
        MediaPayload::Link { url, mimetype } => json!({ "url": url, "mimetype": mimetype }),
        MediaPayload::Uploaded { id } => json!({ "uploaded": id }),
    }
}

#[async_trait]
impl WhatsAppDriver for SandboxDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Sandbox
    }

    fn new_message_id(&self) -> String {
        web_style_message_id()
    }

    async fn send(
        &self,
        account: &Account,
        message: &OutgoingMessage,
    ) -> Result<Accepted, SendError> {
        if account.status() != AccountStatus::Connected {
            return Err(SendError::NotConnected(
                "the sandbox phone is switched off".into(),
            ));
        }
        if self.unreachable.contains(&message.to) {
            return Err(SendError::NotOnWhatsApp(format!(
                "{} is not on WhatsApp (sandbox)",
                message.to
            )));
        }
        let (type_name, body) = match &message.content {
            OutgoingContent::Text { body } => ("text", json!({ "text": body })),
            OutgoingContent::Image { media, caption } => (
                "image",
                json!({ "media": media_summary(media), "caption": caption }),
            ),
            OutgoingContent::Document {
                media,
                file_name,
                caption,
            } => (
                "document",
                json!({ "media": media_summary(media), "fileName": file_name, "caption": caption }),
            ),
        };
        let (id, account_id, from, to, redelivery, lease) = (
            message.message_id.clone(),
            account.id.clone(),
            account.phone.clone(),
            message.to.clone(),
            message.redelivery,
            message.lease.clone(),
        );
        let received = self
            .store
            .write(move |c| {
                let now = now_ms();
                if !outbox::record_handoff(c, &id, &account_id, redelivery, lease.as_ref(), now)? {
                    return Ok(false);
                }
                outbox::record(c, &id, &account_id, &from, &to, type_name, &body, now)?;
                Ok(true)
            })
            .await
            .map_err(|e| SendError::RetryLater {
                after: Duration::from_secs(1),
                reason: format!("sandbox network unavailable: {e}"),
            })?;
        if !received {
            // Only the lease's current holder is linked to the account.
            return Err(SendError::NotConnected(
                "this node no longer holds the account's lease".into(),
            ));
        }
        if !self.ack_delay.is_zero() {
            tokio::time::sleep(self.ack_delay).await;
        }
        let (events, delay, account_id, message_id) = (
            self.events.clone(),
            self.receipt_delay,
            account.id.clone(),
            message.message_id.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(DriverEvent::Delivered {
                account_id: account_id.clone(),
                message_id: message_id.clone(),
            });
            tokio::time::sleep(delay).await;
            let _ = events.send(DriverEvent::Read {
                account_id,
                message_id,
            });
        });
        Ok(Accepted {
            message_id: message.message_id.clone(),
            remote_jid: phone_jid(&message.to),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_look_like_whatsapp_web_ids() {
        let id = web_style_message_id();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("BAE5"));
        assert!(id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
        assert_ne!(id, web_style_message_id());
        assert_eq!(phone_jid("+917999709798"), "917999709798@s.whatsapp.net");
    }
}
