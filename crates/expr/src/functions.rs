//! Inngest's extra functions (`pkg/expressions/exprenv/overloads.go` in inngest/inngest), available in
//! every evaluation:
//!
//! | function | sluice semantics |
//! |---|---|
//! | `lowercase(s)`, `uppercase(s)` | Unicode case mapping of a string; any other argument is an error. |
//! | `b64decode(s)` | Standard base64 (padded) to a string; invalid input gives `""`, as Inngest ignores the decode error. |
//! | `json_parse(s)` | Parses a JSON document to a value (maps, lists, scalars; integers as `int`). Invalid JSON is an error (Inngest returns an empty map). |
//! | `date(x)` | A timestamp from a string (RFC 3339 and the other layouts of Inngest's `dateutil`) or from a number of unix seconds, milliseconds or nanoseconds told apart by magnitude; numbers before 2000-01-01 are rejected. |
//! | `now()` | The evaluation's clock ([`crate::Vars::now_ms`], else the system time), in UTC. |
//! | `now_plus(d)`, `now_minus(d)` | `now()` plus or minus a duration string: Go durations (`"1h30m"`, `"1.5s"`, `"300ms"`) with `d` (24 h) and `w` (7 d), as the `str2duration` package Inngest uses. |

use std::sync::Arc;

use cel::Value;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

use crate::values::{from_json, type_name};

/// The names of the functions this module implements.
pub(crate) const NAMES: [&str; 8] =
    ["lowercase", "uppercase", "b64decode", "json_parse", "date", "now", "now_plus", "now_minus"];

/// Calls Inngest function `name` (one of [`NAMES`]) on evaluated arguments.
pub(crate) fn call(name: &str, args: &[Value], now: DateTime<Utc>) -> Result<Value, String> {
    let arity = if name == "now" { 0 } else { 1 };
    if args.len() != arity {
        return Err(format!("{name}() takes {arity} argument(s), got {}", args.len()));
    }
    match name {
        "lowercase" => Ok(Value::String(Arc::new(string_arg(name, &args[0])?.to_lowercase()))),
        "uppercase" => Ok(Value::String(Arc::new(string_arg(name, &args[0])?.to_uppercase()))),
        "b64decode" => {
            let bytes = b64decode(string_arg(name, &args[0])?).unwrap_or_default();
            Ok(Value::String(Arc::new(String::from_utf8_lossy(&bytes).into_owned())))
        }
        "json_parse" => serde_json::from_str::<serde_json::Value>(string_arg(name, &args[0])?)
            .map(|j| from_json(&j))
            .map_err(|e| format!("json_parse(): invalid JSON: {e}")),
        "date" => date(&args[0]).map(Value::Timestamp),
        "now" => Ok(Value::Timestamp(now.fixed_offset())),
        "now_plus" | "now_minus" => {
            let text = string_arg(name, &args[0])?;
            let d = parse_duration(text).ok_or_else(|| format!("{name}(): invalid duration {text:?}"))?;
            let t = if name == "now_plus" { now.checked_add_signed(d) } else { now.checked_sub_signed(d) };
            t.map(|t| Value::Timestamp(t.fixed_offset())).ok_or_else(|| format!("{name}(): timestamp out of range"))
        }
        _ => Err(format!("unknown function {name}")),
    }
}

fn string_arg<'a>(name: &str, v: &'a Value) -> Result<&'a str, String> {
    match v {
        Value::String(s) => Ok(s.as_str()),
        other => Err(format!("{name}() expects a string, got {}", type_name(other))),
    }
}

/// `date(x)`: see the module docs. Inngest's overload takes only `int` and `string`; a whole `double`
/// (how JSON numbers arrive in Inngest) and a timestamp are accepted here too.
fn date(v: &Value) -> Result<DateTime<FixedOffset>, String> {
    let parsed = match v {
        Value::String(s) => parse_date(s),
        Value::Int(i) => from_unix(*i),
        Value::UInt(u) => i64::try_from(*u).ok().and_then(from_unix),
        Value::Float(f) if f.is_finite() && f.abs() < 9.2e18 => from_unix(*f as i64),
        Value::Timestamp(t) => Some(*t),
        other => return Err(format!("date() expects a string or a number, got {}", type_name(other))),
    };
    parsed.ok_or_else(|| format!("date(): unrecognised date {}", crate::values::display(v)))
}

/// Inngest's `dateutil.ParseInt`: below 2000-01-01 in seconds is rejected; under 10^10 is seconds, under
/// 10^13 milliseconds, else nanoseconds.
fn from_unix(n: i64) -> Option<DateTime<FixedOffset>> {
    let utc = if n < 946_684_800 {
        return None;
    } else if n < 9_999_999_999 {
        Utc.timestamp_opt(n, 0).single()?
    } else if n < 9_999_999_999_999 {
        Utc.timestamp_millis_opt(n).single()?
    } else {
        Utc.timestamp_nanos(n)
    };
    Some(utc.fixed_offset())
}

/// The string layouts of Inngest's `dateutil.ParseString`, as far as chrono parses them: RFC 3339,
/// `2006-01-02T15:04:05` (UTC), RFC 1123/822 and RFC 2822 with numeric zones or GMT/UT, Ruby and ANSI C
/// `date` output, `2006-01-02` (UTC midnight), and Go's `time.Time` string (`2006-01-02 15:04:05.999 -0700 MST`).
/// Layouts that need a zone abbreviation other than GMT (`time.UnixDate`, RFC 850) are not recognised.
fn parse_date(s: &str) -> Option<DateTime<FixedOffset>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Some(t);
    }
    for layout in ["%a %b %d %H:%M:%S %z %Y"] {
        if let Ok(t) = DateTime::parse_from_str(s, layout) {
            return Some(t);
        }
    }
    // Go's time.Time String(): a numeric offset followed by a zone abbreviation, which is ignored.
    if let Some((head, _abbrev)) = s.rsplit_once(' ') {
        if let Ok(t) = DateTime::parse_from_str(head, "%Y-%m-%d %H:%M:%S%.f %z") {
            return Some(t);
        }
    }
    for layout in ["%Y-%m-%dT%H:%M:%S%.f", "%a %b %e %H:%M:%S %Y"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, layout) {
            return Some(t.and_utc().fixed_offset());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().fixed_offset())
}

/// Parses a duration as `str2duration.ParseDuration`: an optional sign, then one or more `<number><unit>`
/// (number with an optional fraction; unit `ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`, `d`, `w`), or `"0"`.
pub(crate) fn parse_duration(s: &str) -> Option<chrono::Duration> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(chrono::Duration::zero());
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(after) => {
                let n = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_ns: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 604_800_000_000_000,
            _ => return None,
        };
        let whole: i128 = if int_part.is_empty() { 0 } else { int_part.parse().ok()? };
        let mut frac_ns: i128 = 0;
        if !frac_part.is_empty() {
            let digits = &frac_part[..frac_part.len().min(18)];
            let scale = 10i128.pow(digits.len() as u32);
            frac_ns = digits.parse::<i128>().ok()? * unit_ns / scale;
        }
        total = total.checked_add(whole.checked_mul(unit_ns)?.checked_add(frac_ns)?)?;
        if total > i128::from(i64::MAX) {
            return None;
        }
        rest = after;
    }
    let ns = i64::try_from(if negative { -total } else { total }).ok()?;
    Some(chrono::Duration::nanoseconds(ns))
}

/// Standard, padded base64 (Go's `base64.StdEncoding`); line breaks are ignored. `None` when invalid.
fn b64decode(s: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'\r' && *c != b'\n').collect();
    if !clean.chunks_exact(4).remainder().is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    let quads = clean.len() / 4;
    for (i, quad) in clean.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for c in &quad[..4 - pad] {
            n = (n << 6) | sextet(*c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_str2duration() {
        let d = |s| parse_duration(s).map(|d| d.num_milliseconds());
        assert_eq!(d("5m"), Some(300_000));
        assert_eq!(d("1h"), Some(3_600_000));
        assert_eq!(d("1h30m"), Some(5_400_000));
        assert_eq!(d("1.5s"), Some(1_500));
        assert_eq!(d("300ms"), Some(300));
        assert_eq!(d("2d"), Some(172_800_000));
        assert_eq!(d("1w"), Some(604_800_000));
        assert_eq!(d("-10s"), Some(-10_000));
        assert_eq!(d("0"), Some(0));
        assert_eq!(parse_duration("250us").map(|d| d.num_microseconds()), Some(Some(250)));
        for bad in ["", "5", "m", "5 m", "1y", "1h-", ".s", "9999999999999w"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dates_parse_inngest_layouts() {
        let ts = |s: &str| parse_date(s).map(|t| t.timestamp());
        assert_eq!(ts("2024-01-02T03:04:05Z"), Some(1_704_164_645));
        assert_eq!(ts("2024-01-02T05:04:05+02:00"), Some(1_704_164_645));
        assert_eq!(ts("2024-01-02T03:04:05"), Some(1_704_164_645));
        assert_eq!(ts("Tue, 02 Jan 2024 03:04:05 GMT"), Some(1_704_164_645));
        assert_eq!(ts("Tue Jan  2 03:04:05 2024"), Some(1_704_164_645));
        assert_eq!(ts("Tue Jan 02 03:04:05 +0000 2024"), Some(1_704_164_645));
        assert_eq!(ts("2024-01-02 03:04:05.5 +0000 UTC"), Some(1_704_164_645));
        assert_eq!(ts("2024-01-02"), Some(1_704_153_600));
        assert_eq!(ts("yesterday"), None);
    }

    #[test]
    fn unix_numbers_by_magnitude() {
        let secs = 1_704_164_645i64;
        assert_eq!(from_unix(secs).unwrap().timestamp(), secs);
        assert_eq!(from_unix(secs * 1000 + 250).unwrap().timestamp_millis(), secs * 1000 + 250);
        assert_eq!(from_unix(secs * 1_000_000_000).unwrap().timestamp(), secs);
        assert_eq!(from_unix(12_345), None);
    }

    #[test]
    fn base64_standard_padded() {
        assert_eq!(b64decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(b64decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(b64decode("aGk=").unwrap(), b"hi");
        assert_eq!(b64decode("aA==").unwrap(), b"h");
        assert_eq!(b64decode(""), Some(vec![]));
        assert_eq!(b64decode("aGVsbG8"), None);
        assert_eq!(b64decode("a=Vs"), None);
        assert_eq!(b64decode("****"), None);
    }
}
