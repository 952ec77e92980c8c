//! The `web` driver: a WhatsApp account linked like WhatsApp Web (a linked
//! device of the phone), through the `whatan-web` crate. This is not Meta's
//! official API; see `docs/linked-device.md`.
//!
//! - Pairing is the admin CLI's job (`account connect ID [--pair-code]`,
//!   [`link_account_blocking`]); it leaves one session file per account in
//!   `<database dir>/web-sessions/<account id>.db`.
//! - `serve` reconnects every account whose session file exists
//!   ([`WebDriver::start`]); an account linked while `serve` runs is
//!   connected at its first send.
//! - The linked device reports connection changes, late server acks and
//!   receipts; [`driver_events`] turns them into [`DriverEvent`]s, which the
//!   engine writes to the store (statuses never go backwards there).
//! - Before the first send to a number, WhatsApp is asked whether the number
//!   has an account; answers are cached ([`OnWhatsAppCache`]).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use whatan_web::{LinkedDevice, PairMode, PairingPrompt, QrStyle, ReceiptKind, WebError, WebEvent};

use super::{
    Accepted, DriverEvent, EventSink, MediaPayload, OutgoingContent, OutgoingMessage, SendError,
    WhatsAppDriver,
};
use crate::config::Config;
use crate::domain::error_codes::{RECIPIENT_NOT_FOUND, SEND_FAILED};
use crate::domain::{AccountStatus, DriverKind};
use crate::store::admin::{self, Account};
use crate::store::Store;

/// How long `account connect` waits for the phone.
pub const PAIRING_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a send waits for a (re)connecting device before reporting the
/// account offline.
const CONNECT_WAIT: Duration = Duration::from_secs(15);

pub struct WebDriver {
    sessions_dir: PathBuf,
    events: EventSink,
    devices: tokio::sync::Mutex<HashMap<String, Arc<LinkedDevice>>>,
    on_whatsapp: Mutex<OnWhatsAppCache>,
}

impl WebDriver {
    pub fn new(database_path: &Path, events: EventSink) -> WebDriver {
        WebDriver {
            sessions_dir: whatan_web::sessions_dir(database_path),
            events,
            devices: tokio::sync::Mutex::new(HashMap::new()),
            on_whatsapp: Mutex::new(OnWhatsAppCache::default()),
        }
    }

    /// The driver for `serve`: reconnects every linked account in the
    /// background (when called inside a tokio runtime).
    pub fn start(config: &Config, store: &Store, events: EventSink) -> Arc<WebDriver> {
        let driver = Arc::new(WebDriver::new(&config.database.path, events));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(driver.clone().reconnect_linked_accounts(store.clone()));
            }
            Err(_) => tracing::warn!("no runtime: linked accounts connect at their first send"),
        }
        driver
    }

    async fn reconnect_linked_accounts(self: Arc<Self>, store: Store) {
        let accounts = match store.read(admin::list_accounts).await {
            Ok(accounts) => accounts,
            Err(e) => {
                tracing::error!(error = %e, "cannot list accounts to reconnect linked devices");
                return;
            }
        };
        for account in accounts {
            if account.driver_kind() != DriverKind::Web {
                continue;
            }
            let linked = self
                .session_path(&account.id)
                .map(|p| whatan_web::session_exists(&p))
                .unwrap_or(false);
            let outcome = if linked {
                self.connect_device(&account.id).await.map(|_| ())
            } else {
                Err(WebError::NotLinked("no linked session".into()))
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

    fn session_path(&self, account_id: &str) -> Result<PathBuf, WebError> {
        whatan_web::session_path(&self.sessions_dir, account_id)
    }

    fn emit(&self, event: DriverEvent) {
        let _ = self.events.send(event);
    }

    /// The running device of an account, connecting it if its session file
    /// exists (an account linked while `serve` runs, or one taken over by
    /// another client and connected again by an administrator).
    async fn connect_device(&self, account_id: &str) -> Result<Arc<LinkedDevice>, WebError> {
        let mut devices = self.devices.lock().await;
        if let Some(device) = devices.get(account_id) {
            if device.is_running() {
                return Ok(device.clone());
            }
            devices.remove(account_id);
        }
        let path = self.session_path(account_id)?;
        let (sink, id) = (self.events.clone(), account_id.to_string());
        let device = LinkedDevice::connect(&path, move |event| {
            for e in driver_events(&id, event) {
                let _ = sink.send(e);
            }
        })
        .await?;
        let device = Arc::new(device);
        devices.insert(account_id.to_string(), device.clone());
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
        let device = self
            .connect_device(&account.id)
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
        let devices: Vec<_> = self.devices.lock().await.drain().map(|(_, d)| d).collect();
        futures_util::future::join_all(devices.iter().map(|d| d.shutdown())).await;
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

/// What the engine should do with a linked-device failure.
pub fn send_error(error: WebError) -> SendError {
    match error {
        WebError::NotOnWhatsApp(m) => SendError::NotOnWhatsApp(m),
        WebError::NotLinked(m) | WebError::NotConnected(m) => SendError::NotConnected(m),
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
            message_id,
            remote_jid: None,
        }],
        WebEvent::ServerAck {
            message_id,
            error: Some(code),
        } => match whatan_web::mapping::ack_result(Some(&code)) {
            Err(WebError::NotOnWhatsApp(message)) => vec![DriverEvent::Failed {
                message_id,
                code: RECIPIENT_NOT_FOUND,
                message,
            }],
            Err(e @ WebError::Rejected { .. }) => vec![DriverEvent::Failed {
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
                ReceiptKind::Delivered => DriverEvent::Delivered { message_id },
                ReceiptKind::Read => DriverEvent::Read { message_id },
            })
            .collect(),
    }
}

fn epoch_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

/// Answers to "is this number on WhatsApp?": a number found stays found for
/// a day; a number not found is asked again after ten minutes (people join).
#[derive(Default)]
pub struct OnWhatsAppCache {
    entries: HashMap<String, (bool, Instant)>,
}

impl OnWhatsAppCache {
    const FOUND_FOR: Duration = Duration::from_secs(24 * 3600);
    const NOT_FOUND_FOR: Duration = Duration::from_secs(10 * 60);
    const MAX_ENTRIES: usize = 100_000;

    pub fn get(&self, phone: &str, now: Instant) -> Option<bool> {
        self.entries
            .get(phone)
            .filter(|(found, at)| now.saturating_duration_since(*at) < Self::ttl(*found))
            .map(|(found, _)| *found)
    }

    pub fn put(&mut self, phone: &str, found: bool, now: Instant) {
        if self.entries.len() >= Self::MAX_ENTRIES {
            self.entries
                .retain(|_, (found, at)| now.saturating_duration_since(*at) < Self::ttl(*found));
        }
        if self.entries.len() < Self::MAX_ENTRIES {
            self.entries.insert(phone.to_string(), (found, now));
        }
    }

    fn ttl(found: bool) -> Duration {
        if found {
            Self::FOUND_FOR
        } else {
            Self::NOT_FOUND_FOR
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `account connect ID [--pair-code]` for a `web` account: link the phone
/// (QR code, or pair code), printing what to scan or type to stdout, or to
/// stderr with `--json` (whose stdout carries only the final object).
/// Returns the status detail to store; an account whose session is already
/// linked is not paired again.
pub fn link_account_blocking(
    config: &Config,
    account: &Account,
    pair_code: bool,
    json: bool,
) -> Result<String, String> {
    let sessions = whatan_web::sessions_dir(&config.database.path);
    let path = whatan_web::session_path(&sessions, &account.id).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let phone = account.phone.clone();
    runtime.block_on(async move {
        if let Some(user) = whatan_web::linked_phone(&path)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(format!(
                "already linked (+{user}); `whatan serve` connects it"
            ));
        }
        let mode = if pair_code {
            PairMode::PairCode
        } else {
            PairMode::Qr
        };
        let printer = PromptPrinter::new(json, phone.clone());
        let linked = whatan_web::pair(
            &path,
            &phone,
            mode,
            move |p| printer.show(p),
            PAIRING_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(format!("linked +{}", linked.phone_user))
    })
}

/// Shows pairing prompts on stdout (human) or stderr (`--json`).
struct PromptPrinter {
    to_stderr: bool,
    terminal: bool,
    phone: String,
}

impl PromptPrinter {
    fn new(json: bool, phone: String) -> PromptPrinter {
        let terminal = if json {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        PromptPrinter {
            to_stderr: json,
            terminal,
            phone,
        }
    }

    fn show(&self, prompt: PairingPrompt) {
        let text = prompt_text(&prompt, &self.phone, self.terminal);
        let written = if self.to_stderr {
            let mut err = std::io::stderr().lock();
            err.write_all(text.as_bytes()).and_then(|()| err.flush())
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot show the pairing code");
        }
    }
}

/// What to print for a pairing prompt. On a terminal each new QR code
/// replaces the previous one (clear screen) and is drawn in explicit colours.
pub fn prompt_text(prompt: &PairingPrompt, phone: &str, terminal: bool) -> String {
    match prompt {
        PairingPrompt::QrCode { payload, valid_for } => {
            let style = if terminal { QrStyle::Ansi } else { QrStyle::Plain };
            let qr = whatan_web::render_qr(payload, style)
                .unwrap_or_else(|e| format!("{e}\nQR payload: {payload}\n"));
            format!(
                "{clear}On the phone of {phone}: WhatsApp > Settings > Linked devices > Link a device, \
                 and scan this code\n(it is replaced in about {}s; Ctrl-C to give up):\n\n{qr}\n",
                valid_for.as_secs(),
                clear = if terminal { "\x1b[2J\x1b[H" } else { "" },
            )
        }
        PairingPrompt::PairCode { code, valid_for } => format!(
            "On the phone of {phone}: WhatsApp > Settings > Linked devices > Link a device > \
             Link with phone number instead, and type this code (valid for about {} minutes):\n\n    {}\n\n",
            valid_for.as_secs().div_ceil(60).max(1),
            whatan_web::format_pair_code(code),
        ),
        PairingPrompt::QrCodesRenewing => {
            "The QR codes expired; getting new ones...\n".to_string()
        }
    }
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
    fn late_server_acks_accept_or_fail_the_message() {
        assert_eq!(
            driver_events(
                ACC,
                WebEvent::ServerAck {
                    message_id: "3EB0A".into(),
                    error: None
                }
            ),
            vec![DriverEvent::Accepted {
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
                message_id,
                code,
                message,
            }] => {
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
    fn receipts_become_delivered_and_read_by_message_id() {
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
                    message_id: "3EB0A".into()
                },
                DriverEvent::Delivered {
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

    #[test]
    fn the_on_whatsapp_cache_keeps_found_numbers_longer_than_missing_ones() {
        let t0 = Instant::now();
        let mut cache = OnWhatsAppCache::default();
        assert_eq!(cache.get("+917999709798", t0), None);
        cache.put("+917999709798", true, t0);
        cache.put("+917999000000", false, t0);
        let later = t0 + Duration::from_secs(11 * 60);
        assert_eq!(cache.get("+917999709798", later), Some(true));
        assert_eq!(cache.get("+917999000000", t0), Some(false));
        assert_eq!(cache.get("+917999000000", later), None, "asked again");
        assert_eq!(
            cache.get("+917999709798", t0 + Duration::from_secs(25 * 3600)),
            None
        );
    }

    #[test]
    fn message_ids_are_whatsapp_web_style() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = WebDriver::new(Path::new("/tmp/whatan.db"), tx);
        let id = driver.new_message_id();
        assert!(id.starts_with("3EB0") && id.len() == 22, "{id}");
        assert_eq!(driver.kind(), DriverKind::Web);
    }

    #[test]
    fn pairing_prompts_say_where_to_scan_or_type() {
        let qr = prompt_text(
            &PairingPrompt::QrCode {
                payload: "2@abc,def,ghi,jkl".into(),
                valid_for: Duration::from_secs(20),
            },
            "+917000000001",
            false,
        );
        assert!(qr.contains("Linked devices") && qr.contains("+917000000001"));
        assert!(qr.contains('█') && !qr.contains('\x1b'));
        let on_terminal = prompt_text(
            &PairingPrompt::QrCode {
                payload: "2@abc,def,ghi,jkl".into(),
                valid_for: Duration::from_secs(20),
            },
            "+917000000001",
            true,
        );
        assert!(on_terminal.starts_with("\x1b[2J\x1b[H"));
        let code = prompt_text(
            &PairingPrompt::PairCode {
                code: "ABCD1234".into(),
                valid_for: Duration::from_secs(180),
            },
            "+917000000001",
            false,
        );
        assert!(
            code.contains("ABCD-1234") && code.contains("about 3 minutes"),
            "{code}"
        );
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
                    let ws = admin::create_workspace(c, "Acme")?;
                    let mut ids = Vec::new();
                    for (name, phone, status) in [
                        ("Ana", "+917000000001", AccountStatus::Connected),
                        ("Bo", "+917000000002", AccountStatus::LoggedOut),
                    ] {
                        let user = admin::add_user(c, &ws.id, name, crate::domain::Role::Owner)?;
                        let account = admin::add_account(
                            c,
                            &ws.id,
                            &user.id,
                            phone,
                            DriverKind::Web,
                            &serde_json::json!({}),
                        )?;
                        admin::set_account_status(c, &account.id, status, None)?;
                        ids.push(account.id);
                    }
                    Ok((ids[0].clone(), ids[1].clone()))
                })
                .await
                .unwrap()
        });
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = Arc::new(WebDriver::new(&db, tx));

        runtime.block_on(driver.clone().reconnect_linked_accounts(store.clone()));

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

    #[test]
    fn sends_before_linking_report_the_account_offline() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = WebDriver::new(&dir.path().join("whatan.db"), tx);
        let account = Account {
            id: ACC.into(),
            workspace: "ws".into(),
            user: "usr".into(),
            phone: "+917000000001".into(),
            driver: "web".into(),
            status: "connected".into(),
            status_changed_at: 0,
            status_detail: None,
            settings: serde_json::json!({}),
            next_send_at: 0,
        };
        let message = OutgoingMessage {
            message_id: driver.new_message_id(),
            to: "+917999709798".into(),
            content: OutgoingContent::Text { body: "hi".into() },
            redelivery: false,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(driver.send(&account, &message));
        assert!(
            matches!(&result, Err(SendError::NotConnected(m)) if m.contains("whatan account connect acc_1")),
            "{result:?}"
        );
        assert!(
            !dir.path().join("web-sessions").exists(),
            "no session file appears for an unlinked account"
        );
    }
}
