//! Wall-clock time as the store keeps it: integer milliseconds since the Unix
//! epoch, UTC. Formatting lives here so every timestamp on the wire has the
//! same shape (`2026-05-14T10:00:04.000Z`), and so does reading one back
//! ([`parse_rfc3339_ms`], for the listing's `since` and `until`).
//!
//! [`Clock`] is the one source of business time (the UTC day of the daily
//! limit, pacing gaps, the offline grace) for the API, the engine and what
//! they store. It is the system clock in production; tests use
//! [`Clock::manual`] and move time by hand, so time rules are tested without
//! sleeping. Timeouts and retry back-offs are not business time and stay on
//! tokio's timer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};

/// The clock of one server: cheap to clone.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<ManualState>>,
}

struct ManualState {
    now: watch::Sender<i64>,
    /// Deadlines of the tasks sleeping on this clock now.
    sleepers: Mutex<Vec<i64>>,
    sleeper_added: Notify,
}

/// The hand that moves a manual clock (tests).
#[derive(Clone)]
pub struct ManualClock {
    state: Arc<ManualState>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands at `start_ms` until moved by the returned hand.
    pub fn manual(start_ms: i64) -> (Clock, ManualClock) {
        let state = Arc::new(ManualState {
            now: watch::Sender::new(start_ms),
            sleepers: Mutex::new(Vec::new()),
            sleeper_added: Notify::new(),
        });
        (
            Clock {
                manual: Some(state.clone()),
            },
            ManualClock { state },
        )
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            None => now_ms(),
            Some(state) => *state.now.borrow(),
        }
    }

    /// Resolves once the clock reads `at_ms` or later.
    pub async fn sleep_until(&self, at_ms: i64) {
        let Some(state) = &self.manual else {
            let wait = (at_ms - now_ms()).max(0) as u64;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            return;
        };
        let mut now = state.now.subscribe();
        let _registered = Sleeper::register(state, at_ms);
        while *now.borrow_and_update() < at_ms {
            if now.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A deadline listed while its task sleeps, removed when the sleep ends or
/// is dropped (a `select!` that woke for another reason).
struct Sleeper<'a> {
    state: &'a ManualState,
    at_ms: i64,
}

impl<'a> Sleeper<'a> {
    fn register(state: &'a ManualState, at_ms: i64) -> Sleeper<'a> {
        state
            .sleepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(at_ms);
        state.sleeper_added.notify_waiters();
        Sleeper { state, at_ms }
    }
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        let mut sleepers = self
            .state
            .sleepers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(i) = sleepers.iter().position(|at| *at == self.at_ms) {
            sleepers.swap_remove(i);
        }
    }
}

impl ManualClock {
    pub fn now_ms(&self) -> i64 {
        *self.state.now.borrow()
    }

    pub fn set(&self, ms: i64) {
        self.state.now.send_replace(ms);
    }

    pub fn advance(&self, by: Duration) {
        self.set(self.now_ms() + by.as_millis() as i64);
    }

    /// Wait until some task sleeps on this clock until exactly `at_ms`: the
    /// way a test knows that a pacer is parked on the deadline it expects.
    pub async fn sleeper_at(&self, at_ms: i64) {
        loop {
            let added = self.state.sleeper_added.notified();
            if self.sleepers().contains(&at_ms) {
                return;
            }
            added.await;
        }
    }

    /// The deadlines tasks sleep until now.
    pub fn sleepers(&self) -> Vec<i64> {
        self.state
            .sleepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

pub const MS_PER_DAY: i64 = 86_400_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The UTC day number (days since 1970-01-01) of a timestamp.
pub fn utc_day(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY)
}

/// Whole seconds from `ms` until the next 00:00 UTC, at least 1.
pub fn seconds_until_next_utc_midnight(ms: i64) -> i64 {
    let next_midnight = (utc_day(ms) + 1) * MS_PER_DAY;
    ((next_midnight - ms + 999) / 1000).max(1)
}

/// RFC 3339 UTC with milliseconds: `2026-05-14T10:00:04.000Z`.
///
/// Written digit by digit: every status body carries two or more of these,
/// and `format!` was 2.5% of the status-read profile.
pub fn rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let ms_of_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    let (hour, minute, second) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if !(0..=9999).contains(&year) {
        return format!(
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z",
            ms_of_day % 1000
        );
    }
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, i64::from(month));
    put(8, 2, i64::from(day));
    put(11, 2, hour);
    put(14, 2, minute);
    put(17, 2, second);
    put(20, 3, ms_of_day % 1000);
    out.iter().map(|&b| char::from(b)).collect()
}

/// An RFC 3339 date-time (`2026-05-14T10:00:04Z`, `2026-05-14t15:30:04.5+05:30`)
/// as milliseconds since the epoch; `None` for anything else. Exactly the
/// grammar's `date-time`: four-digit year, two-digit fields, a real calendar
/// date, `T` (or `t`), an optional fraction (read to the millisecond,
/// further digits truncated), and `Z` or a `+hh:mm` / `-hh:mm` offset. A
/// leap second (`:60`) is read as the next second.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let number = |range: std::ops::Range<usize>| digits(b.get(range)?);
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| b.get(i) != Some(&c))
        || !matches!(b.get(10), Some(b'T' | b't'))
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (d, scale) in fraction.iter().zip([100, 10, 1]).take(digits) {
            millis += i64::from(d - b'0') * scale;
        }
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), hh @ .., b':', _, _] if hh.len() == 2 => {
            let (h, m) = (digits(hh)?, digits(&rest[4..])?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// A run of ASCII digits as a number; `None` if any byte is not a digit.
fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A proleptic Gregorian date to days since the epoch (Howard Hinnant's
/// `days_from_civil`, the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since the epoch to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`), so no date crate is needed for one format.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_only_when_moved_past_their_deadline() {
        let (clock, hand) = Clock::manual(1_000);
        let sleeping = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(1_500).await }
        });
        hand.sleeper_at(1_500).await;
        hand.advance(Duration::from_millis(499));
        assert_eq!(clock.now_ms(), 1_499);
        assert!(!sleeping.is_finished());
        hand.advance(Duration::from_millis(1));
        sleeping.await.unwrap();
        assert!(hand.sleepers().is_empty());
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_778_752_804_000), "2026-05-14T10:00:04.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        // The ends of four-digit years, a year with leading zeros, and
        // beyond them the general form.
        assert_eq!(rfc3339_ms(-62_167_219_200_000), "0000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-30_627_458_703_211), "0999-06-15T12:34:56.789Z");
        assert_eq!(rfc3339_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-62_167_219_200_001), "-001-12-31T23:59:59.999Z");
    }

    #[test]
    fn writes_the_same_digits_as_format_in_four_digit_years() {
        // Every 3.65 days (at a different time of day) from 1870 to 2070.
        for step in -10_000..10_000i64 {
            let ms = step * 315_569_123 + step.rem_euclid(1000);
            let (year, month, day) = civil_from_days(ms.div_euclid(MS_PER_DAY));
            let of_day = ms.rem_euclid(MS_PER_DAY);
            let secs = of_day / 1000;
            let expected = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
                secs / 3600,
                (secs / 60) % 60,
                secs % 60,
                of_day % 1000
            );
            assert_eq!(rfc3339_ms(ms), expected, "{ms}");
        }
    }

    #[test]
    fn parses_rfc3339_date_times_back_to_the_millisecond() {
        for ms in [0, 1_778_752_804_000, 951_782_400_123, 4_102_444_799_999, -1] {
            assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms), "{ms}");
        }
        let parse = parse_rfc3339_ms;
        assert_eq!(parse("2026-05-14T10:00:04Z"), Some(1_778_752_804_000));
        assert_eq!(
            parse("2026-05-14t15:30:04.5+05:30"),
            Some(1_778_752_804_500)
        );
        assert_eq!(
            parse("2026-05-14T05:00:04.123456-05:00"),
            Some(1_778_752_804_123)
        );
        assert_eq!(parse("2026-05-14T10:00:04z"), Some(1_778_752_804_000));
        assert_eq!(parse("2016-12-31T23:59:60Z"), Some(1_483_228_800_000));
        assert_eq!(parse("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        for bad in [
            "",
            "2026-05-14",
            "2026-05-14T10:00:04",
            "2026-05-14 10:00:04Z",
            "2026-5-14T10:00:04Z",
            "2026-02-29T10:00:04Z",
            "1900-02-29T10:00:04Z",
            "2026-13-01T10:00:04Z",
            "2026-04-31T10:00:04Z",
            "2026-05-14T24:00:00Z",
            "2026-05-14T10:60:00Z",
            "2026-05-14T10:00:04.Z",
            "2026-05-14T10:00:04+0530",
            "2026-05-14T10:00:04+24:00",
            "2026-05-14T10:00:04Zjunk",
            "+2026-05-14T10:00:04Z",
            "2026-05-14T10:00:04\u{e9}",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn seconds_until_midnight_rounds_up_and_is_never_zero() {
        assert_eq!(seconds_until_next_utc_midnight(0), 86_400);
        assert_eq!(seconds_until_next_utc_midnight(MS_PER_DAY - 1), 1);
        assert_eq!(seconds_until_next_utc_midnight(MS_PER_DAY - 1500), 2);
    }
}
