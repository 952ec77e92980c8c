//! "Is this number on WhatsApp?" answers, remembered so that a send does not
//! ask WhatsApp again for every message to the same number.

use std::collections::HashMap;
use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
