//! Linking a phone from the browser. A `web` account pairs inside the
//! server (the driver crate's pairing, as `account connect` runs it in the
//! CLI), and its prompts are kept here for the Link page to draw. A
//! `sandbox` account's simulated QR code lives in the store instead
//! (`store::dashboard::start_sandbox_pairing`), because the simulated phone
//! is another process (`whatan sandbox scan`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::api::AppState;
use crate::store::admin::Account;

/// Where a `web` account's pairing stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Asking WhatsApp for a code.
    Starting,
    /// Scan this (a new one replaces it every `valid_for_secs` or so).
    Qr {
        payload: String,
        valid_for_secs: u64,
    },
    /// Type this on the phone.
    PairCode { code: String },
    /// The codes ran out; WhatsApp is asked for new ones.
    Renewing,
    /// Linked: the status detail.
    Linked(String),
    /// Pairing failed, and why.
    Failed(String),
}

impl LinkState {
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            LinkState::Starting
                | LinkState::Qr { .. }
                | LinkState::PairCode { .. }
                | LinkState::Renewing
        )
    }
}

/// The pairings the server runs, by account id; cheap to clone.
#[derive(Clone, Default)]
pub struct Links {
    states: Arc<Mutex<HashMap<String, LinkState>>>,
}

impl Links {
    pub fn get(&self, account: &str) -> Option<LinkState> {
        self.lock().get(account).cloned()
    }

    pub fn forget(&self, account: &str) {
        self.lock().remove(account);
    }

    fn set(&self, account: &str, state: LinkState) {
        self.lock().insert(account.to_string(), state);
    }

    /// Claim the account for a new pairing: false if one is running.
    #[cfg(any(feature = "web", test))]
    fn begin(&self, account: &str) -> bool {
        let mut states = self.lock();
        if states.get(account).is_some_and(LinkState::is_running) {
            return false;
        }
        states.insert(account.to_string(), LinkState::Starting);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LinkState>> {
        // A panic while holding it leaves a map that is still whole.
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Start pairing `account` (a `web` account) in the background, unless a
/// pairing of it is running already. Once linked, the account is connected
/// as `account connect` would, and the running driver picks the session up.
#[cfg(feature = "web")]
pub fn start_web(state: &AppState, account: Account, pair_code: bool) {
    use whatan_web::PairingPrompt;

    let links = state.links.clone();
    if !links.begin(&account.id) {
        return;
    }
    let (store, config) = (state.store.clone(), state.config.clone());
    tokio::spawn(async move {
        let id = account.id.clone();
        let shown = links.clone();
        let show = move |prompt: PairingPrompt| {
            let next = match prompt {
                PairingPrompt::QrCode { payload, valid_for } => LinkState::Qr {
                    payload,
                    valid_for_secs: valid_for.as_secs(),
                },
                PairingPrompt::PairCode { code, .. } => LinkState::PairCode {
                    code: whatan_web::format_pair_code(&code),
                },
                PairingPrompt::QrCodesRenewing => LinkState::Renewing,
            };
            shown.set(&id, next);
        };
        let result =
            crate::driver::web::link_account(&config, &store, &account, pair_code, show).await;
        let id = account.id.clone();
        let outcome = match result {
            Ok(detail) => {
                let stored = detail.clone();
                let id = id.clone();
                match store
                    .write(move |c| crate::store::admin::connect_by_operator(c, &id, Some(&stored)))
                    .await
                {
                    Ok(_) => LinkState::Linked(detail),
                    Err(e) => LinkState::Failed(format!(
                        "the phone is linked, but whatan could not record it: {e}"
                    )),
                }
            }
            Err(reason) => LinkState::Failed(reason),
        };
        links.set(&id, outcome);
    });
}

/// Without linked-device support there is nothing to pair with.
#[cfg(not(feature = "web"))]
pub fn start_web(state: &AppState, account: Account, _pair_code: bool) {
    state.links.set(
        &account.id,
        LinkState::Failed(
            "this build of whatan has no linked-device support (built without the `web` feature)"
                .into(),
        ),
    );
}

/// The simulated QR code's payload: new every [`SANDBOX_QR_ROTATION_MS`],
/// as WhatsApp rotates its codes.
pub fn sandbox_qr_payload(account: &str, nonce: &str, started_at: i64, now: i64) -> String {
    let window = (now - started_at).max(0) / SANDBOX_QR_ROTATION_MS;
    format!("whatan-sandbox:{account}:{nonce}:{window}")
}

pub const SANDBOX_QR_ROTATION_MS: i64 = 20_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pairing_runs_per_account_and_a_finished_one_can_start_again() {
        let links = Links::default();
        assert!(links.begin("a1"));
        assert!(!links.begin("a1"));
        links.set(
            "a1",
            LinkState::Qr {
                payload: "2@x".into(),
                valid_for_secs: 20,
            },
        );
        assert!(!links.begin("a1"));
        links.set("a1", LinkState::Failed("timed out".into()));
        assert!(links.begin("a1"));
        assert!(links.begin("a2"));
        links.forget("a2");
        assert_eq!(links.get("a2"), None);
    }

    #[test]
    fn the_sandbox_code_rotates_like_whatsapps() {
        let first = sandbox_qr_payload("acc_1", "n", 1_000, 1_000);
        assert_eq!(first, sandbox_qr_payload("acc_1", "n", 1_000, 20_999));
        assert_ne!(first, sandbox_qr_payload("acc_1", "n", 1_000, 21_000));
    }
}
