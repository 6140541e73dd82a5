//! Durations and instants as SDKs write them: Go duration strings plus `d` and `w`
//! (`"10s"`, `"1h30m"`, `"2d"`), or ISO-8601 dates for `sleepUntil`.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::error::ProtocolError;

/// The longest sleep, wait or timeout the protocol allows.
pub const MAX_DURATION_MS: i64 = 366 * 24 * 3600 * 1000;

/// Parse a Go-style duration into milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, ProtocolError> {
    let err = || ProtocolError::InvalidDuration(s.to_string());
    let s = s.trim();
    if s.is_empty() {
        return Err(err());
    }
    if s == "0" {
        return Ok(0);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: f64 = 0.0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if start == i {
            return Err(err());
        }
        let number: f64 = s[start..i].parse().map_err(|_| err())?;
        let unit_start = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let unit = &s[unit_start..i];
        let factor = match unit {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            "w" => 604_800_000.0,
            _ => return Err(err()),
        };
        total += number * factor;
    }
    if total > MAX_DURATION_MS as f64 {
        return Err(err());
    }
    Ok(total.round() as i64)
}

/// Parse an ISO-8601 / RFC 3339 instant into unix milliseconds.
pub fn parse_instant(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc).timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(naive.and_utc().timestamp_millis());
        }
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return date.and_hms_opt(0, 0, 0).map(|d| d.and_utc().timestamp_millis());
    }
    None
}

/// When a `Sleep` op should wake, given its `name`/`opts.duration` string and the current time.
/// Strings of 10 or more characters are tried as dates first (as the Inngest server does).
pub fn sleep_until(spec: &str, now_ms: i64) -> Result<i64, ProtocolError> {
    if spec.len() >= 10 {
        if let Some(at) = parse_instant(spec) {
            return Ok(at.min(now_ms + MAX_DURATION_MS));
        }
    }
    parse_duration(spec).map(|d| now_ms + d)
}

pub fn format_rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_with_days_and_weeks() {
        assert_eq!(parse_duration("10s").unwrap(), 10_000);
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration("2d").unwrap(), 172_800_000);
        assert_eq!(parse_duration("1w").unwrap(), 604_800_000);
        assert_eq!(parse_duration("1.5s").unwrap(), 1_500);
        assert_eq!(parse_duration("250ms").unwrap(), 250);
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("400d").is_err());
    }

    #[test]
    fn sleep_accepts_durations_and_dates() {
        assert_eq!(sleep_until("2s", 1_000).unwrap(), 3_000);
        let now = parse_instant("2029-12-01T00:00:00Z").unwrap();
        let at = sleep_until("2030-01-01T00:00:00.000Z", now).unwrap();
        assert_eq!(format_rfc3339_ms(at), "2030-01-01T00:00:00.000Z");
        // Python sends naive-looking ISO strings with an offset.
        assert!(sleep_until("2030-01-01T00:00:00+00:00", 0).is_ok());
    }
}
