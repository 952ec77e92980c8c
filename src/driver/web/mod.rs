//! The `web` driver: a WhatsApp account linked like WhatsApp Web (a linked
//! device of the phone), through the `whatan-web` crate. This is not Meta's
//! official API; see the README section "Link your phone (real WhatsApp,
//! linked device)".
//!
//! - Pairing is the admin CLI's job (`account connect ID [--pair-code]`,
//!   [`link_account_blocking`] in `link.rs`) or the dashboard's; it leaves
//!   the account's session where [`Sessions`] says (`sessions.rs`): one
//!   file per account in `<database dir>/web-sessions/<account id>.db`, or
//!   rows in PostgreSQL.
//! - `serve` on the SQLite file reconnects every account whose session
//!   exists ([`WebDriver::start`]). With several nodes on PostgreSQL a node
//!   connects the accounts whose leases it gains and stops those it loses
//!   ([`WhatsAppDriver::leases_gained`]); a device writes its session under
//!   its lease's fence. An account linked while `serve` runs is connected
//!   at its first send.
//! - The linked device reports connection changes, late server acks and
//!   receipts; [`driver_events`] (`mapping.rs`, pure) turns them into
//!   [`DriverEvent`]s, which the engine writes to the store (statuses never
//!   go backwards there).
//! - Before the first send to a number, WhatsApp is asked whether the number
//!   has an account; answers are cached ([`OnWhatsAppCache`], `cache.rs`).

mod cache;
mod link;
mod mapping;
mod sessions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use whatan_web::{LinkedDevice, Net, WebError, WebEvent};

pub use self::cache::OnWhatsAppCache;
pub use self::link::{link_account, link_account_blocking, prompt_text, PAIRING_TIMEOUT};
pub use self::mapping::{driver_events, send_error};
pub use self::sessions::{copy_sessions_blocking, DbRows, Sessions};
use super::{
    Accepted, DriverEvent, EventSink, MediaPayload, OutgoingContent, OutgoingMessage, SendError,
    WhatsAppDriver,
};
use crate::config::Config;
use crate::domain::error_codes::SEND_FAILED;
use crate::domain::{AccountStatus, DriverKind};
use crate::store::admin::{self, Account};
use crate::store::Store;

/// How long a send waits for a (re)connecting device before reporting the
/// account offline.
const CONNECT_WAIT: Duration = Duration::from_secs(15);
/// How often `serve` looks for accounts an administrator disconnected (with
/// the CLI, another process) to stop their linked devices.
const HOLD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

pub struct WebDriver {
    net: whatan_web::Net,
    sessions: Sessions,
    events: EventSink,
    devices: tokio::sync::Mutex<HashMap<String, Running>>,
    on_whatsapp: Mutex<OnWhatsAppCache>,
    /// Lease changes, carried out in order by [`follow_leases`].
    lease_changes: Option<tokio::sync::mpsc::UnboundedSender<LeaseChange>>,
    /// The fences of the leases this node holds, as the lease loop last
    /// said (several nodes): a device runs only under its account's
    /// current fence, and reports only while it is current.
    fences: Arc<Mutex<HashMap<String, i64>>>,
}

/// A running device, with the fence its session writes carry (PostgreSQL).
type Running = (Option<i64>, Arc<LinkedDevice>);

/// A lease change to carry out (several nodes on PostgreSQL).
enum LeaseChange {
    Gained(Vec<(String, i64)>),
    Lost(Vec<String>),
}

impl WebDriver {
    pub fn new(sessions: Sessions, events: EventSink) -> WebDriver {
        WebDriver {
            net: network(),
            sessions,
            events,
            devices: tokio::sync::Mutex::new(HashMap::new()),
            on_whatsapp: Mutex::new(OnWhatsAppCache::default()),
            lease_changes: None,
            fences: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The driver for `serve`: reconnects every linked account in the
    /// background (on PostgreSQL, those whose leases this node gains), and
    /// stops the device of an account an administrator disconnects (when
    /// called inside a tokio runtime).
    pub fn start(config: &Config, store: &Store, events: EventSink) -> Arc<WebDriver> {
        let sessions = Sessions::of(store, &config.database.path);
        let driver = WebDriver::new(sessions, events);
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!("no runtime: linked accounts connect at their first send");
            return Arc::new(driver);
        }
        driver.run(store)
    }

    /// Start the background work of [`WebDriver::start`] (on a runtime).
    fn run(mut self, store: &Store) -> Arc<WebDriver> {
        let changes = match self.sessions {
            Sessions::Database { .. } => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                self.lease_changes = Some(tx);
                Some(rx)
            }
            Sessions::Files(_) => None,
        };
        let driver = Arc::new(self);
        match changes {
            Some(changes) => {
                tokio::spawn(follow_leases(
                    Arc::downgrade(&driver),
                    store.clone(),
                    changes,
                ));
            }
            None => {
                tokio::spawn(
                    driver
                        .clone()
                        .reconnect_linked_accounts(store.clone(), None),
                );
            }
        }
        tokio::spawn(stop_held_devices(Arc::downgrade(&driver), store.clone()));
        driver
    }

    /// Connect the linked devices of the web accounts that have a session
    /// (all of them, or those of `only`, with their fences), and mark those
    /// without one disconnected.
    async fn reconnect_linked_accounts(
        self: Arc<Self>,
        store: Store,
        only: Option<HashMap<String, i64>>,
    ) {
        let accounts = match store.read(admin::list_accounts).await {
            Ok(accounts) => accounts,
            Err(e) => {
                tracing::error!(error = %e, "cannot list accounts to reconnect linked devices");
                return;
            }
        };
        for account in accounts {
            // An administrator's `account disconnect` holds until `account connect`.
            if account.driver_kind() != DriverKind::Web || account.held_by_operator {
                continue;
            }
            let fence = match &only {
                Some(only) => match only.get(&account.id) {
                    Some(fence) => Some(*fence),
                    None => continue,
                },
                None => None,
            };
            let linked = match self.sessions.open(&account.id, fence).await {
                Ok(session) => session.exists().await,
                Err(e) => Err(e),
            };
            let outcome = match linked {
                Ok(true) => self.connect_device(&account.id, fence).await.map(|_| ()),
                Ok(false) => Err(WebError::NotLinked("no linked session".into())),
                Err(e) => {
                    tracing::warn!(account = %account.id, error = %e, "cannot read the linked session");
                    continue;
                }
            };
            match outcome {
                Ok(()) => tracing::info!(account = %account.id, "reconnecting linked device"),
                // Never linked, or logged out: say so unless it already does.
                Err(e)
                    if matches!(
                        account.status(),
                        AccountStatus::Connected | AccountStatus::Connecting
                    ) =>
                {
                    self.emit(DriverEvent::Connection {
                        account_id: account.id.clone(),
                        status: AccountStatus::Disconnected,
                        detail: Some(format!(
                            "{e}; link it with `whatan account connect {}`",
                            account.id
                        )),
                    });
                }
                Err(_) => {}
            }
        }
    }

    /// Stop the running devices of `account_ids` (gracefully: the library
    /// flushes its state). Their sessions stay: `account connect` (or the
    /// node that takes the lease) brings them back without pairing again.
    async fn stop_devices(&self, account_ids: &[String], why: &str) {
        let stopping: Vec<_> = {
            let mut devices = self.devices.lock().await;
            account_ids
                .iter()
                .filter_map(|id| devices.remove(id).map(|(_, device)| (id, device)))
                .collect()
        };
        for (account_id, device) in stopping {
            stop(account_id, &device).await;
            tracing::info!(account = %account_id, "linked device stopped: {why}");
        }
    }

    /// Whether `fence` is the account's current lease here (always, for
    /// sessions in files: one node).
    fn is_current(&self, account_id: &str, fence: Option<i64>) -> bool {
        match (&self.sessions, fence) {
            (Sessions::Files(_), _) => true,
            (Sessions::Database { .. }, Some(fence)) => holds(&self.fences, account_id, fence),
            (Sessions::Database { .. }, None) => false,
        }
    }

    fn forget_fences(&self, account_ids: &[String]) {
        let mut fences = lock(&self.fences);
        for id in account_ids {
            fences.remove(id);
        }
    }

    fn emit(&self, event: DriverEvent) {
        let _ = self.events.send(event);
    }

    /// The running device of an account, connecting it if its session
    /// exists (an account linked while `serve` runs, or one taken over by
    /// another client and connected again by an administrator). `fence`:
    /// the lease its session writes carry (PostgreSQL), which must be the
    /// account's current one here; a device started under another fence is
    /// stopped and started again.
    async fn connect_device(
        &self,
        account_id: &str,
        fence: Option<i64>,
    ) -> Result<Arc<LinkedDevice>, WebError> {
        let mut devices = self.devices.lock().await;
        if !self.is_current(account_id, fence) {
            return Err(WebError::NotConnected(
                "this node no longer holds the account's lease".into(),
            ));
        }
        if let Some((started_under, device)) = devices.get(account_id) {
            if device.is_running() && *started_under == fence {
                return Ok(device.clone());
            }
            if let Some((_, device)) = devices.remove(account_id) {
                stop(account_id, &device).await;
            }
        }
        let session = self.sessions.open(account_id, fence).await?;
        let (sink, id) = (self.events.clone(), account_id.to_string());
        let fences = self.fences.clone();
        let device = LinkedDevice::connect(&self.net, &session, move |event| {
            // A device whose lease moved on says nothing more: the account's
            // state is its new holder's to report.
            if fence.is_some_and(|fence| !holds(&fences, &id, fence)) {
                return;
            }
            // One line per cause: the device reports a failure to reach
            // WhatsApp once, not at each of the library's retries.
            if let WebEvent::Disconnected { reason } = &event {
                tracing::warn!(account = %id, %reason, "linked device offline");
            }
            for e in driver_events(&id, event) {
                let _ = sink.send(e);
            }
        })
        .await?;
        let device = Arc::new(device);
        devices.insert(account_id.to_string(), (fence, device.clone()));
        Ok(device)
    }

    /// Ask WhatsApp once whether `to` has an account, then trust the cache.
    async fn check_on_whatsapp(&self, device: &LinkedDevice, to: &str) -> Result<(), SendError> {
        let cached = lock(&self.on_whatsapp).get(to, Instant::now());
        let on_whatsapp = match cached {
            Some(known) => known,
            None => {
                let known = device.is_on_whatsapp(to).await.map_err(send_error)?;
                lock(&self.on_whatsapp).put(to, known, Instant::now());
                known
            }
        };
        if on_whatsapp {
            Ok(())
        } else {
            Err(SendError::NotOnWhatsApp(format!("{to} is not on WhatsApp")))
        }
    }
}

#[async_trait]
impl WhatsAppDriver for WebDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Web
    }

    /// `3EB0` + 18 hex digits, from the library's own generator.
    fn new_message_id(&self) -> String {
        whatan_web::new_message_id()
    }

    async fn send(
        &self,
        account: &Account,
        message: &OutgoingMessage,
    ) -> Result<Accepted, SendError> {
        if account.held_by_operator {
            return Err(SendError::NotConnected(format!(
                "disconnected by an administrator; `whatan account connect {}` connects it again",
                account.id
            )));
        }
        let fence = message.lease.as_ref().map(|lease| lease.fence);
        let device = self
            .connect_device(&account.id, fence)
            .await
            .map_err(|e| match e {
                WebError::NotLinked(m) => SendError::NotConnected(format!(
                    "{m}; link it with `whatan account connect {}`",
                    account.id
                )),
                other => send_error(other),
            })?;
        if !device.wait_connected(CONNECT_WAIT).await {
            return Err(SendError::NotConnected(format!(
                "the linked device of {} is not connected to WhatsApp",
                account.phone
            )));
        }
        self.check_on_whatsapp(&device, &message.to).await?;
        let (to, id) = (message.to.as_str(), message.message_id.as_str());
        let sent = match &message.content {
            OutgoingContent::Text { body } => device.send_text(to, id, body).await,
            OutgoingContent::Image { media, caption } => {
                let (bytes, mimetype) = media_bytes(media)?;
                device
                    .send_image(to, id, bytes.to_vec(), mimetype, caption.clone())
                    .await
            }
            OutgoingContent::Document {
                media,
                file_name,
                caption,
            } => {
                let (bytes, mimetype) = media_bytes(media)?;
                device
                    .send_document(
                        to,
                        id,
                        bytes.to_vec(),
                        mimetype,
                        file_name.clone(),
                        caption.clone(),
                    )
                    .await
            }
        };
        let ack = sent.map_err(send_error)?;
        Ok(Accepted {
            message_id: ack.message_id,
            remote_jid: ack.to_jid,
        })
    }

    async fn shutdown(&self) {
        // No device starts after this for a lease gained meanwhile.
        lock(&self.fences).clear();
        let devices: Vec<_> = self
            .devices
            .lock()
            .await
            .drain()
            .map(|(_, (_, d))| d)
            .collect();
        futures_util::future::join_all(devices.iter().map(|d| d.shutdown())).await;
    }

    fn leases_gained(&self, accounts: &[(String, i64)]) {
        if let Some(changes) = &self.lease_changes {
            lock(&self.fences).extend(accounts.iter().cloned());
            let _ = changes.send(LeaseChange::Gained(accounts.to_vec()));
        }
    }

    fn leases_lost(&self, account_ids: &[String]) {
        if let Some(changes) = &self.lease_changes {
            self.forget_fences(account_ids);
            let _ = changes.send(LeaseChange::Lost(account_ids.to_vec()));
        }
    }

    /// Stop the devices of accounts whose leases this node gives up, and
    /// wait for them (their last session writes are still fenced right).
    async fn leases_releasing(&self, account_ids: &[String]) {
        if self.lease_changes.is_some() {
            self.forget_fences(account_ids);
            self.stop_devices(account_ids, "its lease is given to another node")
                .await;
        }
    }
}

/// Carry out lease changes in the order they came: stop the devices of
/// accounts this node lost, connect those of accounts it gained. Ends with
/// the driver.
async fn follow_leases(
    driver: Weak<WebDriver>,
    store: Store,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<LeaseChange>,
) {
    while let Some(change) = changes.recv().await {
        let Some(driver) = driver.upgrade() else {
            return;
        };
        match change {
            LeaseChange::Lost(ids) => {
                driver
                    .stop_devices(&ids, "its lease went to another node")
                    .await
            }
            LeaseChange::Gained(accounts) => {
                // Only those still held (a loss may have come since).
                let only: HashMap<String, i64> = accounts
                    .into_iter()
                    .filter(|(id, fence)| driver.is_current(id, Some(*fence)))
                    .collect();
                driver
                    .reconnect_linked_accounts(store.clone(), Some(only))
                    .await
            }
        }
    }
}

/// How long a device may take to stop gracefully (flushing its state)
/// before it is left behind.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Stop a device gracefully, within [`STOP_TIMEOUT`].
async fn stop(account_id: &str, device: &LinkedDevice) {
    if tokio::time::timeout(STOP_TIMEOUT, device.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(account = %account_id, "linked device did not stop in time; left behind");
    }
}

/// For tests only: `WHATAN_TEST_WEB_SERVER=ws://127.0.0.1:PORT/ws/chat`
/// points linked devices and pairing at that WebSocket server instead of
/// WhatsApp's, with a fixed client version instead of one fetched from
/// WhatsApp's web site, so that a test can show what happens without a route
/// to WhatsApp (a closed loopback port: "connection refused"). Named so that
/// nobody sets it by accident.
pub const TEST_SERVER_ENV: &str = "WHATAN_TEST_WEB_SERVER";

/// Where linked devices connect: WhatsApp, unless [`TEST_SERVER_ENV`] says.
fn network() -> Net {
    match std::env::var(TEST_SERVER_ENV) {
        Ok(url) if !url.trim().is_empty() => Net::server(url.trim()),
        _ => Net::default(),
    }
}

/// Every [`HOLD_CHECK_INTERVAL`], stop the devices of the web accounts an
/// administrator holds offline; ends with the driver.
async fn stop_held_devices(driver: Weak<WebDriver>, store: Store) {
    loop {
        tokio::time::sleep(HOLD_CHECK_INTERVAL).await;
        let Some(driver) = driver.upgrade() else {
            return;
        };
        match store
            .read(|c| admin::held_account_ids(c, DriverKind::Web))
            .await
        {
            Ok(held) => {
                driver
                    .stop_devices(&held, "disconnected by an administrator")
                    .await
            }
            Err(e) => tracing::warn!(error = %e, "cannot read which accounts are held offline"),
        }
    }
}

/// The bytes of whatan's pinned media fetch (this driver asks for bytes).
fn media_bytes(media: &MediaPayload) -> Result<(&[u8], &str), SendError> {
    match media {
        MediaPayload::Bytes { bytes, mimetype } => Ok((bytes, mimetype)),
        MediaPayload::Link { .. } | MediaPayload::Uploaded { .. } => Err(SendError::Failed {
            code: SEND_FAILED,
            message: "the linked-device driver needs the media bytes, not a link".into(),
        }),
    }
}

/// Whether `fence` is the current lease of `account_id` in `fences`.
fn holds(fences: &Mutex<HashMap<String, i64>>, account_id: &str, fence: i64) -> bool {
    lock(fences).get(account_id) == Some(&fence)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACC: &str = "acc_1";

    #[test]
    fn message_ids_are_whatsapp_web_style() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = WebDriver::new(Sessions::Files("/tmp/web-sessions".into()), tx);
        let id = driver.new_message_id();
        assert!(id.starts_with("3EB0") && id.len() == 22, "{id}");
        assert_eq!(driver.kind(), DriverKind::Web);
    }

    #[test]
    fn serve_marks_connected_web_accounts_without_a_session_disconnected() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("whatan.db");
        let store = Store::open(&db).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (unlinked, idle) = runtime.block_on(async {
            store
                .write(|c| {
                    Ok((
                        web_account(c, "+917000000001", AccountStatus::Connected),
                        web_account(c, "+917000000002", AccountStatus::LoggedOut),
                    ))
                })
                .await
                .unwrap()
        });
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = Arc::new(WebDriver::new(Sessions::of(&store, &db), tx));

        runtime.block_on(
            driver
                .clone()
                .reconnect_linked_accounts(store.clone(), None),
        );

        drop(driver);
        let mut events = Vec::new();
        while let Ok(event) = rx.try_recv() {
            events.push(event);
        }
        match events.as_slice() {
            [DriverEvent::Connection {
                account_id,
                status: AccountStatus::Disconnected,
                detail: Some(detail),
            }] => {
                assert_eq!(account_id, &unlinked);
                assert!(detail.contains("whatan account connect"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(events.iter().all(
            |e| !matches!(e, DriverEvent::Connection { account_id, .. } if *account_id == idle)
        ));
        assert!(!dir.path().join("web-sessions").exists());
    }

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A text to one number from the connected web account `ACC`.
    async fn send_hi(driver: &WebDriver, held_by_operator: bool) -> Result<Accepted, SendError> {
        let account = Account {
            id: ACC.into(),
            workspace: "ws".into(),
            user: "usr".into(),
            phone: "+917000000001".into(),
            driver: DriverKind::Web,
            status: AccountStatus::Connected,
            status_changed_at: 0,
            status_detail: None,
            settings: serde_json::json!({}),
            next_send_at: 0,
            held_by_operator,
            offline_since: None,
        };
        let message = OutgoingMessage {
            message_id: driver.new_message_id(),
            to: "+917999709798".into(),
            content: OutgoingContent::Text { body: "hi".into() },
            redelivery: false,
            lease: None,
        };
        driver.send(&account, &message).await
    }

    /// A web account of a new workspace, with `status`.
    fn web_account(c: &crate::store::Conn, phone: &str, status: AccountStatus) -> String {
        let ws = admin::create_workspace(c, "Acme").unwrap();
        let user = admin::add_user(c, &ws.id, "Ana", crate::domain::Role::Owner).unwrap();
        let account = admin::add_account(
            c,
            &ws.id,
            &user.id,
            phone,
            DriverKind::Web,
            &serde_json::json!({}),
        )
        .unwrap();
        admin::set_account_status(c, &account.id, status, None).unwrap();
        account.id
    }

    /// Wait until `f` holds, checking every few milliseconds.
    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_in_the_database_follow_the_leases_this_node_gains_and_loses() {
        use whatan_web::conformance::{device_phone, seed_device, seed_file_device};
        use whatan_web::Session;

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("whatan.db")).unwrap();
        let (linked, unpaired, absent, other) = store
            .write(|c| {
                Ok((
                    web_account(c, "+917000000001", AccountStatus::Connected),
                    web_account(c, "+917000000002", AccountStatus::Connected),
                    web_account(c, "+917000000003", AccountStatus::Connected),
                    web_account(c, "+917000000004", AccountStatus::Connected),
                ))
            })
            .await
            .unwrap();
        let sessions = Sessions::Database {
            store: store.clone(),
            leftovers: dir.path().join("web-sessions"),
        };
        // A linked session left in a file by an earlier version (a device
        // with its phone number), a pairing that never finished as rows,
        // nothing for the others.
        let rows = |id: &str| match sessions.session(id, None).unwrap() {
            Session::Rows { rows, .. } => rows,
            Session::File(_) => unreachable!(),
        };
        let leftover = whatan_web::session_path(&dir.path().join("web-sessions"), &linked).unwrap();
        std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
        seed_file_device(&leftover, Some("917000000001")).await;
        seed_device(rows(&unpaired), None).await;
        // The node holds these leases, under fence 3.
        store
            .write({
                let ids = [linked.clone(), unpaired.clone(), absent.clone()];
                move |c| {
                    for id in &ids {
                        c.execute(
                            "INSERT INTO leases (account_id, node_id, expires_at, fence, acquired_at)
                             VALUES (?1, 'this-node', 9999999999999, 3, 0)",
                            [id.as_str()],
                        )?;
                    }
                    Ok(())
                }
            })
            .await
            .unwrap();

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut driver = WebDriver::new(sessions.clone(), tx);
        // A closed loopback port stands in for WhatsApp.
        driver.net = Net::server("ws://127.0.0.1:9/ws/chat");
        let driver = driver.run(&store);

        driver.leases_gained(&[
            (linked.clone(), 3),
            (unpaired.clone(), 3),
            (absent.clone(), 3),
        ]);

        let mut offline = HashMap::new();
        while offline.len() < 2 {
            let event = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("the driver reports the accounts it cannot connect")
                .unwrap();
            if let DriverEvent::Connection {
                account_id,
                status: AccountStatus::Disconnected,
                detail: Some(detail),
            } = event
            {
                if account_id != linked {
                    offline.insert(account_id, detail);
                }
            }
        }
        assert!(offline[&unpaired].contains("never linked"), "{offline:?}");
        assert!(
            offline[&absent].contains("no linked session"),
            "{offline:?}"
        );
        until("the linked device", || {
            driver
                .devices
                .try_lock()
                .is_ok_and(|d| d.get(&linked).is_some_and(|(fence, _)| *fence == Some(3)))
        })
        .await;
        // The linked one runs, its session moved into the database and
        // written under the lease's fence.
        assert_eq!(
            device_phone(rows(&linked)).await.as_deref(),
            Some("917000000001")
        );
        assert!(!leftover.exists(), "the file is renamed once moved");
        let mut imported = leftover.clone().into_os_string();
        imported.push(".imported");
        assert!(std::path::Path::new(&imported).exists());

        driver.leases_lost(std::slice::from_ref(&linked));
        until("the device to stop", || {
            driver.devices.try_lock().is_ok_and(|d| d.is_empty())
        })
        .await;
        // A send still carrying the lost lease's fence starts nothing.
        let refused = driver.connect_device(&linked, Some(3)).await;
        assert!(matches!(refused, Err(WebError::NotConnected(_))));
        assert!(driver.devices.lock().await.is_empty());
        // Nor does a lease gained for an account this node never drove.
        assert!(driver.connect_device(&other, Some(1)).await.is_err());
        let session = Sessions::Database {
            store: store.clone(),
            leftovers: dir.path().join("web-sessions"),
        }
        .session(&linked, None);
        assert!(
            session.unwrap().exists().await.unwrap(),
            "the session stays for the next holder"
        );
    }

    #[test]
    fn sends_before_linking_report_the_account_offline() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = WebDriver::new(Sessions::Files(dir.path().join("web-sessions")), tx);
        let runtime = current_thread();
        let result = runtime.block_on(send_hi(&driver, false));
        assert!(
            matches!(&result, Err(SendError::NotConnected(m)) if m.contains("whatan account connect acc_1")),
            "{result:?}"
        );
        assert!(
            !dir.path().join("web-sessions").exists(),
            "no session file appears for an unlinked account"
        );
    }

    #[test]
    fn a_send_for_an_account_held_offline_does_not_start_its_device() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("whatan.db");
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = WebDriver::new(Sessions::Files(whatan_web::sessions_dir(&db)), tx);
        // A session file is there: without the hold, the send would load it.
        let session = whatan_web::session_path(&whatan_web::sessions_dir(&db), ACC).unwrap();
        std::fs::create_dir_all(session.parent().unwrap()).unwrap();
        std::fs::write(&session, b"").unwrap();
        let runtime = current_thread();
        let result = runtime.block_on(send_hi(&driver, true));
        assert!(
            matches!(&result, Err(SendError::NotConnected(m)) if m.contains("disconnected by an administrator")),
            "{result:?}"
        );
        assert!(runtime.block_on(driver.devices.lock()).is_empty());
        assert_eq!(
            std::fs::metadata(&session).unwrap().len(),
            0,
            "session untouched"
        );
    }
}
