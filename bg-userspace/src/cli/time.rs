//! Times for people: local dates and short durations ("3h12m"). `--json`
//! keeps the agent's milliseconds since the epoch.
use jiff::{Timestamp, tz::TimeZone};

/// `ms` since the epoch as a local date and time, e.g.
/// "2026-12-02 14:03:07 CET".
pub fn local(ms: u64) -> String {
    at(ms, &TimeZone::system())
}

pub fn at(ms: u64, tz: &TimeZone) -> String {
    match i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
    {
        Some(t) => t
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        None => format!("{ms} ms after the epoch"),
    }
}

/// A duration at the two largest units that matter: "45s", "3m07s",
/// "3h12m", "2d04h".
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_their_two_largest_units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(187), "3m07s");
        assert_eq!(duration(3 * 3600 + 12 * 60 + 59), "3h12m");
        assert_eq!(duration(2 * 86_400 + 4 * 3600 + 5), "2d04h");
    }

    #[test]
    fn times_carry_the_date_and_the_zone() {
        // 2026-12-02 09:16:05.250 UTC.
        let ms = 1_796_202_965_250;
        assert_eq!(at(ms, &TimeZone::UTC), "2026-12-02 09:16:05 UTC");
        // A fixed zone: a fresh machine may have no tz database.
        let east = TimeZone::fixed(jiff::tz::offset(1));
        assert_eq!(at(ms, &east), "2026-12-02 10:16:05 +01");
    }
}
