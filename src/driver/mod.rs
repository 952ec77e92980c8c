//! The WhatsApp side, behind one trait. The delivery engine knows only
//! [`WhatsAppDriver`]; each driver maps it onto one way of reaching WhatsApp:
//! `sandbox` (a simulated network inside the binary, the default), `cloud`
//! (Meta's WhatsApp Cloud API) and `web` (a linked device).
//!
//! Architecture invariant: only `driver/*` talks to WhatsApp.

pub mod cloud;
pub mod sandbox;
#[cfg(feature = "web")]
pub mod web;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{AccountStatus, DriverKind};
use crate::store::admin::Account;

/// One message handed to a driver. `message_id` is chosen by us before the
/// hand-off and kept across retries, so a re-send after a crash is the same
/// message (WhatsApp de-duplicates by message id).
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub message_id: String,
    /// Recipient in E.164, `+917999709798`.
    pub to: String,
    pub content: OutgoingContent,
    /// A previous hand-off of this same message may have reached WhatsApp
    /// (the process stopped before its result was recorded). Drivers whose
    /// network de-duplicates by our message id can ignore it; a driver that
    /// cannot de-duplicate must not send twice.
    pub redelivery: bool,
    /// The node and the fence of the account's lease this hand-off runs
    /// under (several nodes on PostgreSQL; `None` on the SQLite file). A
    /// network that knows leases (the sandbox) refuses a hand-off whose
    /// fence is no longer the current one.
    pub lease: Option<LeaseRef>,
}

/// A hand-off's lease: which node sends, under which fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef {
    pub node_id: std::sync::Arc<str>,
    pub fence: i64,
}

#[derive(Debug, Clone)]
pub enum OutgoingContent {
    Text {
        body: String,
    },
    Image {
        media: MediaPayload,
        caption: Option<String>,
    },
    Document {
        media: MediaPayload,
        file_name: Option<String>,
        caption: Option<String>,
    },
}

/// Media as a driver receives it: the bytes of whatan's pinned fetch, or,
/// for drivers that let WhatsApp fetch, the URL whatan already validated.
#[derive(Clone)]
pub enum MediaPayload {
    Bytes {
        bytes: Vec<u8>,
        mimetype: String,
    },
    Link {
        url: String,
        mimetype: Option<String>,
    },
    /// Already uploaded by the driver's own [`WhatsAppDriver::prepare`]:
    /// the id the driver sends it by.
    Uploaded {
        id: String,
    },
}

impl std::fmt::Debug for MediaPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaPayload::Bytes { bytes, mimetype } => {
                write!(f, "Bytes({} bytes, {mimetype})", bytes.len())
            }
            MediaPayload::Link { url, .. } => write!(f, "Link({url})"),
            MediaPayload::Uploaded { id } => write!(f, "Uploaded({id})"),
        }
    }
}

/// How a driver wants media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaDelivery {
    Bytes,
    Link,
}

/// WhatsApp took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub message_id: String,
    /// `917999709798@s.whatsapp.net` style address of the recipient.
    pub remote_jid: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The number is not on WhatsApp: final, `recipient_not_found`.
    NotOnWhatsApp(String),
    /// The account cannot send now (offline, session gone, credentials
    /// revoked): the engine marks the account disconnected and keeps the send
    /// queued until it reconnects or the offline grace runs out.
    NotConnected(String),
    /// Try the same message again later (rate limits, transient errors that
    /// certainly did not send).
    RetryLater { after: Duration, reason: String },
    /// Final failure with the code to report (`send_failed`, ...).
    Failed { code: &'static str, message: String },
}

/// Later news about messages and accounts, pushed by drivers. Message news
/// names the account whose connection reported it: a message id is only
/// unique within one account's sends, so news from one account's device
/// never moves another account's attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverEvent {
    Delivered {
        account_id: String,
        message_id: String,
    },
    Read {
        account_id: String,
        message_id: String,
    },
    /// WhatsApp accepted a message after the hand-off returned (server ack).
    Accepted {
        account_id: String,
        message_id: String,
        remote_jid: Option<String>,
    },
    /// WhatsApp reported a failure after accepting the message.
    Failed {
        account_id: String,
        message_id: String,
        code: &'static str,
        message: String,
    },
    Connection {
        account_id: String,
        status: AccountStatus,
        detail: Option<String>,
    },
}

pub type EventSink = tokio::sync::mpsc::UnboundedSender<DriverEvent>;

#[async_trait]
pub trait WhatsAppDriver: Send + Sync {
    fn kind(&self) -> DriverKind;

    /// A fresh message id in the style this route uses.
    fn new_message_id(&self) -> String;

    /// Whether the engine should fetch media bytes (pinned) or pass the link.
    fn media_delivery(&self, _account: &Account) -> MediaDelivery {
        MediaDelivery::Bytes
    }

    /// Work that must be done before the message may reach WhatsApp and
    /// that sends nothing, such as uploading media. The engine runs it
    /// before the attempt is claimed, so a stop or a failure here leaves the
    /// attempt as it was: the driver call in [`WhatsAppDriver::send`] is the
    /// point of no return. Errors mean the same as `send`'s.
    /// `attempt_id` names the attempt for the driver's own bookkeeping
    /// (retry counts); the message id is chosen only at the claim.
    async fn prepare(
        &self,
        _account: &Account,
        _attempt_id: &str,
        content: OutgoingContent,
    ) -> Result<OutgoingContent, SendError> {
        Ok(content)
    }

    /// Hand one message to WhatsApp from `account`.
    async fn send(
        &self,
        account: &Account,
        message: &OutgoingMessage,
    ) -> Result<Accepted, SendError>;

    /// Close connections gracefully when the server stops (after the engine
    /// drained). Drivers that hold no connection keep the default.
    async fn shutdown(&self) {}

    /// Several nodes on PostgreSQL: this node now holds the leases of these
    /// accounts (any driver's), under these fences. A driver that keeps a
    /// connection per account opens it here. Must not block: the lease loop
    /// calls it.
    fn leases_gained(&self, _accounts: &[(String, i64)]) {}

    /// This node no longer holds these accounts' leases: close what is
    /// open for them, so that only the new holder is connected. Must not
    /// block.
    fn leases_lost(&self, _account_ids: &[String]) {}

    /// This node is about to give these accounts' leases up (rebalancing,
    /// leaving): close what is open for them and return once closed, while
    /// the lease still covers their last writes. The engine bounds the
    /// wait.
    async fn leases_releasing(&self, _account_ids: &[String]) {}
}

/// The drivers of one process, by kind.
#[derive(Clone, Default)]
pub struct Drivers {
    by_kind: HashMap<DriverKind, Arc<dyn WhatsAppDriver>>,
}

impl Drivers {
    pub fn with(mut self, driver: Arc<dyn WhatsAppDriver>) -> Drivers {
        self.by_kind.insert(driver.kind(), driver);
        self
    }

    pub fn get(&self, kind: DriverKind) -> Option<Arc<dyn WhatsAppDriver>> {
        self.by_kind.get(&kind).cloned()
    }

    /// Tell every driver about gained leases
    /// ([`WhatsAppDriver::leases_gained`]).
    pub fn leases_gained(&self, accounts: &[(String, i64)]) {
        if !accounts.is_empty() {
            self.by_kind
                .values()
                .for_each(|d| d.leases_gained(accounts));
        }
    }

    /// Let every driver close what it holds for leases about to be given up
    /// ([`WhatsAppDriver::leases_releasing`]), waiting at most `bound`.
    pub async fn leases_releasing(&self, account_ids: &[String], bound: std::time::Duration) {
        if account_ids.is_empty() {
            return;
        }
        let closing = self
            .by_kind
            .values()
            .map(|d| d.leases_releasing(account_ids));
        let _ = tokio::time::timeout(bound, futures_util::future::join_all(closing)).await;
    }

    /// Tell every driver about lost leases ([`WhatsAppDriver::leases_lost`]).
    pub fn leases_lost(&self, account_ids: &[String]) {
        if !account_ids.is_empty() {
            self.by_kind
                .values()
                .for_each(|d| d.leases_lost(account_ids));
        }
    }

    /// Shut every driver down (see [`WhatsAppDriver::shutdown`]).
    pub async fn shutdown(&self) {
        for driver in self.by_kind.values() {
            driver.shutdown().await;
        }
    }
}

/// `<digits>@s.whatsapp.net` for an E.164 number.
pub fn phone_jid(e164: &str) -> String {
    format!("{}@s.whatsapp.net", e164.trim_start_matches('+'))
}
