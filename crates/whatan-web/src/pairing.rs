//! Linking a phone: the device connects unpaired, WhatsApp issues QR codes
//! (each valid ~20-60 s, a handful per connection) or, on request, an
//! 8-character pair code; the person scans or types it on the phone
//! (WhatsApp > Linked devices > Link a device); WhatsApp confirms the link,
//! the device reconnects as linked, and the session file then holds it.
//!
//! When the QR codes of one connection run out, a new connection brings new
//! ones; pairing goes on until the deadline. An unfinished pairing leaves no
//! session file behind. A phone whose number is not the account's is unlinked
//! again at once: an account must send from its own number.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::types::events::{Event, EventHandler, EventInterest, EventKind};

use crate::mapping::{connection_change, is_same_number, web_event};
use crate::net::Net;
use crate::reach::Reach;
use crate::session::Session;
use crate::{phone_user, WebError, WebEvent};

/// How to link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairMode {
    /// Show QR codes to scan.
    Qr,
    /// Show an 8-character code to type on the phone (for the account's number).
    PairCode,
}

/// Something to show the person linking the phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingPrompt {
    /// A QR code payload to render and scan; replaced after `valid_for`.
    QrCode {
        payload: String,
        valid_for: Duration,
    },
    /// The code to type on the phone.
    PairCode { code: String, valid_for: Duration },
    /// This connection's QR codes ran out; new ones are on the way.
    QrCodesRenewing,
}

/// The linked phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    /// Digits of the linked phone number.
    pub phone_user: String,
}

/// The number linked in `session`, if it is linked. Reads the session
/// only; never connects.
pub async fn linked_phone(session: &Session) -> Result<Option<String>, WebError> {
    linked_phone_with(&Net::default(), session).await
}

async fn linked_phone_with(net: &Net, session: &Session) -> Result<Option<String>, WebError> {
    if !session.exists().await? {
        return Ok(None);
    }
    let bot = net
        .builder(session)
        .await?
        .build()
        .await
        .map_err(|e| WebError::Store(format!("cannot load {session}: {e}")))?;
    Ok(bot.client().pn().map(|jid| jid.user.to_string()))
}

/// Link the phone of `account_e164` to a new `session`, showing
/// codes through `on_prompt`, within `timeout`. Refuses to overwrite a linked
/// session. Ends early with [`WebError::Unreachable`] naming the cause when
/// WhatsApp cannot be reached: at the first failed connection, or after
/// [`REACH_TIMEOUT`] without an answer.
pub async fn pair(
    net: &Net,
    session: &Session,
    account_e164: &str,
    mode: PairMode,
    on_prompt: impl Fn(PairingPrompt) + Send + Sync + 'static,
    timeout: Duration,
) -> Result<Linked, WebError> {
    pair_with(net, session, account_e164, mode, &on_prompt, timeout).await
}

pub(crate) async fn pair_with(
    net: &Net,
    session: &Session,
    account_e164: &str,
    mode: PairMode,
    on_prompt: &(dyn Fn(PairingPrompt) + Send + Sync),
    timeout: Duration,
) -> Result<Linked, WebError> {
    let phone = phone_user(account_e164)?;
    if let Some(linked) = linked_phone_with(net, session).await? {
        return Err(WebError::PairingFailed(format!(
            "the session at {session} is already linked to +{linked}"
        )));
    }
    let deadline = Instant::now() + timeout;
    let result = pair_until_linked(net, session, &phone, mode, on_prompt, deadline).await;
    let result = match result {
        Err(WebError::PairingTimedOut(_)) => Err(WebError::PairingTimedOut(timeout)),
        other => other,
    };
    if result.is_err()
        && session.exists().await.unwrap_or(false)
        && matches!(linked_phone_with(net, session).await, Ok(None))
    {
        // Nothing linked: leave no half-made session for `serve` to find.
        session
            .remove()
            .await
            .map_err(|e| WebError::Store(format!("pairing failed, and then: {e}")))?;
    }
    result
}

/// How long pairing waits for WhatsApp's first answer (a code to show)
/// before giving up as unreachable; the phone then has the rest of the
/// pairing window.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(45);

/// How one connection of the pairing ended.
enum Round {
    Linked(String),
    /// WhatsApp was never reached: the one-line cause.
    Unreachable(String),
    /// The QR codes ran out: connect again for new ones.
    Renew,
    WrongPhone(String),
    Failed(String),
    TimedOut,
}

async fn pair_until_linked(
    net: &Net,
    session: &Session,
    phone: &str,
    mode: PairMode,
    on_prompt: &(dyn Fn(PairingPrompt) + Send + Sync),
    deadline: Instant,
) -> Result<Linked, WebError> {
    let code_options = PairCodeOptions {
        phone_number: phone.to_string(),
        ..Default::default()
    };
    let reach = Reach::new();
    let mut unreachable = reach.failures();
    let reach_deadline = Instant::now() + REACH_TIMEOUT;
    // Until WhatsApp first answers, a failed connection ends the pairing
    // (the library would retry it for the whole window, silently).
    let mut reached = false;
    loop {
        let (tx, mut events) = mpsc::unbounded_channel();
        let mut builder = net
            .observed_builder(session, &reach)
            .await?
            .with_event_handler(Forward(tx));
        if mode == PairMode::PairCode {
            builder = builder.with_pair_code(code_options.clone());
        }
        let bot = builder
            .build()
            .await
            .map_err(|e| WebError::Store(format!("cannot load {session}: {e}")))?;
        let mut handle = bot.spawn();
        let client = handle.client();
        let mut linked_user: Option<String> = None;
        let round = loop {
            let event = tokio::select! {
                event = events.recv() => match event {
                    Some(event) => event,
                    None => break Round::Failed("the pairing connection closed".into()),
                },
                _ = &mut handle => {
                    // Events dispatched before the run ended are queued.
                    let mut renew = false;
                    while let Ok(event) = events.try_recv() {
                        renew |= matches!(&*event, Event::PairingQrCodesExhausted(_));
                    }
                    break if renew && mode == PairMode::Qr {
                        Round::Renew
                    } else {
                        Round::Failed("the connection to WhatsApp ended before the phone was linked".into())
                    };
                }
                _ = tokio::time::sleep_until(deadline) => break Round::TimedOut,
                Ok(()) = unreachable.changed(), if !reached => {
                    match unreachable.borrow_and_update().clone() {
                        Some(reason) => break Round::Unreachable(reason),
                        None => continue,
                    }
                }
                _ = tokio::time::sleep_until(reach_deadline), if !reached => {
                    break Round::Unreachable(format!(
                        "cannot reach WhatsApp: timed out (no answer within {}s); \
                         check this machine's internet access",
                        REACH_TIMEOUT.as_secs()
                    ));
                }
            };
            reached |= matches!(
                &*event,
                Event::PairingQrCode(_)
                    | Event::PairingCode(_)
                    | Event::PairSuccess(_)
                    | Event::Connected(_)
            );
            match &*event {
                Event::PairingQrCode(qr) if mode == PairMode::Qr => {
                    on_prompt(PairingPrompt::QrCode {
                        payload: qr.code.clone(),
                        valid_for: qr.timeout,
                    })
                }
                Event::PairingCode(code) => on_prompt(PairingPrompt::PairCode {
                    code: code.code.clone(),
                    valid_for: code.timeout,
                }),
                Event::PairingCodeRefresh(_) if mode == PairMode::PairCode => {
                    // The old code is void; ask for a new one (it arrives as
                    // a PairingCode event, a failure as PairingCodeError).
                    let (client, options) = (client.clone(), code_options.clone());
                    tokio::spawn(async move {
                        let _ = client.pair_with_code(options).await;
                    });
                }
                Event::PairingCodeError(e) if mode == PairMode::PairCode => {
                    break Round::Failed(format!(
                        "WhatsApp refused the pair code request: {}",
                        e.error
                    ));
                }
                Event::PairingQrCodesExhausted(_) if mode == PairMode::Qr => {
                    on_prompt(PairingPrompt::QrCodesRenewing);
                    break Round::Renew;
                }
                Event::PairSuccess(success) => {
                    let user = success.id.user.to_string();
                    if !is_same_number(&user, phone) {
                        break Round::WrongPhone(user);
                    }
                    linked_user = Some(user);
                }
                Event::PairError(e) => {
                    break Round::Failed(format!("WhatsApp refused the link: {}", e.error));
                }
                Event::Connected(_) => {
                    // Linked once the device logs in with its new identity.
                    if let Some(user) = linked_user
                        .clone()
                        .or_else(|| client.pn().map(|j| j.user.to_string()))
                    {
                        break Round::Linked(user);
                    }
                }
                other => {
                    if let Some(change) = connection_change(other, std::time::SystemTime::now()) {
                        if let WebEvent::LoggedOut { reason }
                        | WebEvent::TemporaryBan { reason, .. } = web_event(&change)
                        {
                            break Round::Failed(reason);
                        }
                    }
                }
            }
        };
        match round {
            Round::Linked(phone_user) => {
                // Graceful: the library writes the new identity out.
                handle.shutdown().await;
                return Ok(Linked { phone_user });
            }
            Round::Renew => {
                handle.shutdown().await;
                if Instant::now() >= deadline {
                    return Err(WebError::PairingTimedOut(Duration::ZERO));
                }
            }
            Round::WrongPhone(user) => {
                client.logout().await;
                handle.shutdown().await;
                session.remove().await?;
                return Err(WebError::PairingFailed(format!(
                    "the phone that was linked is +{user}, not this account's number +{phone}; \
                     it was unlinked again. Link the phone of +{phone}"
                )));
            }
            Round::Failed(reason) => {
                handle.shutdown().await;
                return Err(WebError::PairingFailed(reason));
            }
            Round::Unreachable(reason) => {
                handle.shutdown().await;
                return Err(WebError::Unreachable(reason));
            }
            Round::TimedOut => {
                handle.shutdown().await;
                return Err(WebError::PairingTimedOut(Duration::ZERO));
            }
        }
    }
}

/// Hands the pairing events to the pairing loop.
struct Forward(mpsc::UnboundedSender<Arc<Event>>);

impl EventHandler for Forward {
    fn handle_event(&self, event: Arc<Event>) {
        let _ = self.0.send(event);
    }

    fn interest(&self) -> EventInterest {
        EventInterest::of(&[
            EventKind::PairingQrCode,
            EventKind::PairingCode,
            EventKind::PairingCodeRefresh,
            EventKind::PairingCodeError,
            EventKind::PairingQrCodesExhausted,
            EventKind::PairSuccess,
            EventKind::PairError,
            EventKind::Connected,
            EventKind::LoggedOut,
            EventKind::TemporaryBan,
            EventKind::ClientOutdated,
            EventKind::ConnectFailure,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn a_session_that_does_not_exist_is_not_linked_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acc_1.db");
        let session = Session::File(path.clone());
        assert_eq!(linked_phone_with(&Net::offline(), &session).await, Ok(None));
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn pairing_that_cannot_reach_whatsapp_says_why_at_once_and_leaves_no_session() {
        let dir = tempfile::tempdir().unwrap();
        let session = Session::File(dir.path().join("web-sessions").join("acc_1.db"));
        let prompts = Arc::new(Mutex::new(Vec::new()));
        let seen = prompts.clone();
        let started = std::time::Instant::now();
        // The whole 5-minute window is allowed; the first failure ends it.
        let result = pair_with(
            &Net::offline(),
            &session,
            "+917000000001",
            PairMode::Qr,
            &move |p| seen.lock().unwrap().push(p),
            Duration::from_secs(300),
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        match result {
            Err(WebError::Unreachable(reason)) => {
                assert!(reason.starts_with("cannot reach WhatsApp: "), "{reason}");
                assert!(
                    reason.contains("offline: tests never reach WhatsApp"),
                    "{reason}"
                );
                assert!(!reason.contains('\n'), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(prompts.lock().unwrap().is_empty());
        assert!(
            !session.exists().await.unwrap(),
            "an unfinished pairing leaves nothing"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let folder = std::fs::metadata(dir.path().join("web-sessions")).unwrap();
            assert_eq!(
                folder.permissions().mode() & 0o777,
                0o700,
                "keys stay private"
            );
        }
    }

    #[tokio::test]
    async fn pairing_refuses_a_number_that_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acc_1.db");
        let result = pair_with(
            &Net::offline(),
            &Session::File(path.clone()),
            "not a number",
            PairMode::PairCode,
            &|_| {},
            Duration::from_millis(300),
        )
        .await;
        assert!(matches!(result, Err(WebError::Invalid(_))));
        assert!(!path.exists());
    }
}
