//! Secrets shown once (a new token, a sign-in link): the POST that makes
//! one keeps it here for its session and redirects; the page it redirects
//! to takes it out and shows it. A reload then shows nothing and makes
//! nothing twice. Held in memory only, never written anywhere; one not
//! taken within [`FLASH_TTL`] is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a secret waits for its page.
const FLASH_TTL: Duration = Duration::from_secs(300);

/// A secret to show once: the page element's id, its label, the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTime {
    pub element: &'static str,
    pub label: String,
    pub secret: String,
}

/// A session's waiting secret, and since when it waits, by session key.
type Waiting = HashMap<[u8; 32], (Instant, OneTime)>;

/// The secrets waiting for their page; cheap to clone.
#[derive(Clone, Default)]
pub struct Flashes {
    waiting: Arc<Mutex<Waiting>>,
}

impl Flashes {
    /// Keep `shown` for the session `session` (replacing one not taken).
    pub fn put(&self, session: [u8; 32], shown: OneTime) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.retain(|_, (at, _)| at.elapsed() < FLASH_TTL);
        waiting.insert(session, (Instant::now(), shown));
    }

    /// Take the session's secret for page element `element`, if one waits.
    pub fn take(&self, session: [u8; 32], element: &str) -> Option<OneTime> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match waiting.get(&session) {
            Some((at, shown)) if shown.element == element && at.elapsed() < FLASH_TTL => {
                waiting.remove(&session).map(|(_, shown)| shown)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_taken_once_by_its_own_page_and_session() {
        let flashes = Flashes::default();
        let shown = OneTime {
            element: "new-token",
            label: "Your new send token".into(),
            secret: "whatan_send_x".into(),
        };
        flashes.put([1; 32], shown.clone());
        assert_eq!(flashes.take([2; 32], "new-token"), None);
        assert_eq!(flashes.take([1; 32], "invite-link"), None);
        assert_eq!(flashes.take([1; 32], "new-token"), Some(shown));
        assert_eq!(flashes.take([1; 32], "new-token"), None);
    }
}
