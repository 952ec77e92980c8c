//! Wall-clock time as the store keeps it: integer milliseconds since the Unix
//! epoch, UTC. Formatting lives here so every timestamp on the wire has the
//! same shape (`2026-05-14T10:00:04.000Z`).

use std::time::{SystemTime, UNIX_EPOCH};

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
pub fn rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let ms_of_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        ms_of_day % 1000
    )
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

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_778_752_804_000), "2026-05-14T10:00:04.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn seconds_until_midnight_rounds_up_and_is_never_zero() {
        assert_eq!(seconds_until_next_utc_midnight(0), 86_400);
        assert_eq!(seconds_until_next_utc_midnight(MS_PER_DAY - 1), 1);
        assert_eq!(seconds_until_next_utc_midnight(MS_PER_DAY - 1500), 2);
    }
}
