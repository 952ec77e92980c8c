//! Pure pacing decisions, unit-tested without clocks or IO. The async loop in
//! `delivery::pacer` only carries them out.

use std::time::Duration;

use rand::Rng;

use crate::domain::AccountStatus;

/// What one account's pacer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do until woken (no pending sends, or sends are held).
    Idle,
    /// Look again at this time (ms since epoch) unless woken earlier.
    WaitUntil(i64),
    /// The account has been offline longer than the grace period: fail its
    /// pending sends with `whatsapp_not_connected`.
    FailOffline,
    /// Hand the oldest pending send to WhatsApp now.
    SendNow,
}

/// The account facts a decision needs.
#[derive(Debug, Clone, Copy)]
pub struct AccountView {
    pub status: AccountStatus,
    /// When the account last left `connected` (None while connected): the
    /// offline grace counts from here, whatever states it went through since.
    pub offline_since: Option<i64>,
    pub next_send_at: i64,
}

pub fn decide(
    now: i64,
    account: AccountView,
    has_pending: bool,
    offline_grace: Duration,
) -> Decision {
    if !has_pending {
        return Decision::Idle;
    }
    match account.status {
        AccountStatus::Connected => {
            if now < account.next_send_at {
                Decision::WaitUntil(account.next_send_at)
            } else {
                Decision::SendNow
            }
        }
        // A temporary ban holds sends without failing them; the driver
        // reports when it lifts.
        AccountStatus::Banned => Decision::Idle,
        AccountStatus::Connecting | AccountStatus::Disconnected | AccountStatus::LoggedOut => {
            let deadline = account
                .offline_since
                .unwrap_or(now)
                .saturating_add(offline_grace.as_millis().min(i64::MAX as u128) as i64);
            if now >= deadline {
                Decision::FailOffline
            } else {
                Decision::WaitUntil(deadline)
            }
        }
    }
}

/// The gap before an account's next hand-off: uniform in [min, max].
pub fn draw_gap(rng: &mut impl Rng, min: Duration, max: Duration) -> Duration {
    if max <= min {
        return min;
    }
    let (lo, hi) = (min.as_millis() as u64, max.as_millis() as u64);
    Duration::from_millis(rng.gen_range(lo..=hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn view(status: AccountStatus, offline_since: i64, next: i64) -> AccountView {
        AccountView {
            status,
            offline_since: (status != AccountStatus::Connected).then_some(offline_since),
            next_send_at: next,
        }
    }

    const GRACE: Duration = Duration::from_millis(1000);

    #[test]
    fn nothing_pending_means_idle_whatever_the_account() {
        for s in [
            AccountStatus::Connected,
            AccountStatus::Disconnected,
            AccountStatus::Banned,
        ] {
            assert_eq!(decide(0, view(s, 0, 0), false, GRACE), Decision::Idle);
        }
    }

    #[test]
    fn a_connected_account_waits_for_its_next_slot_then_sends() {
        let v = view(AccountStatus::Connected, 0, 500);
        assert_eq!(decide(100, v, true, GRACE), Decision::WaitUntil(500));
        assert_eq!(decide(500, v, true, GRACE), Decision::SendNow);
        assert_eq!(decide(900, v, true, GRACE), Decision::SendNow);
    }

    #[test]
    fn an_offline_account_keeps_its_queue_until_the_grace_runs_out() {
        let v = view(AccountStatus::Disconnected, 10_000, 0);
        assert_eq!(decide(10_500, v, true, GRACE), Decision::WaitUntil(11_000));
        assert_eq!(decide(11_000, v, true, GRACE), Decision::FailOffline);
        let logged_out = view(AccountStatus::LoggedOut, 10_000, 0);
        assert_eq!(
            decide(12_000, logged_out, true, GRACE),
            Decision::FailOffline
        );
    }

    #[test]
    fn a_banned_account_holds_its_sends() {
        let v = view(AccountStatus::Banned, 0, 0);
        assert_eq!(decide(i64::MAX / 2, v, true, GRACE), Decision::Idle);
    }

    #[test]
    fn gaps_are_drawn_within_bounds_and_spread_over_them() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (min, max) = (
            Duration::from_millis(120_000),
            Duration::from_millis(300_000),
        );
        let gaps: Vec<Duration> = (0..2000).map(|_| draw_gap(&mut rng, min, max)).collect();
        assert!(gaps.iter().all(|g| *g >= min && *g <= max));
        let low = gaps
            .iter()
            .filter(|g| **g < Duration::from_millis(180_000))
            .count();
        let high = gaps
            .iter()
            .filter(|g| **g > Duration::from_millis(240_000))
            .count();
        // Each third of the range gets roughly a third of the draws.
        assert!((500..=830).contains(&low), "{low}");
        assert!((500..=830).contains(&high), "{high}");
        assert_eq!(draw_gap(&mut rng, min, min), min);
    }
}
