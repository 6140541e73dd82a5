//! The one retry/backoff policy: step retries (consume attempts) and unreachable retries (do not).

use std::time::Duration;

use rand::Rng;

/// The Inngest server's step backoff table; jitter of up to 30 s is added.
const BACKOFF_TABLE_SECS: [u64; 10] = [15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200];
const RETRY_AFTER_MIN_MS: i64 = 1_000;
const RETRY_AFTER_MAX_MS: i64 = 24 * 3600 * 1_000;

/// Delay before retry number `attempt` (1 = the first retry).
pub fn step_backoff(attempt: u32, fixed: Option<Duration>) -> Duration {
    if let Some(fixed) = fixed {
        return fixed;
    }
    let idx = (attempt.max(1) as usize - 1).min(BACKOFF_TABLE_SECS.len() - 1);
    let jitter = rand::thread_rng().gen_range(0..30_000);
    Duration::from_secs(BACKOFF_TABLE_SECS[idx]) + Duration::from_millis(jitter)
}

/// When to retry given a `Retry-After` header: JS sends seconds, Python an ISO-8601 instant.
/// Clamped to [1 s, 24 h] from now.
pub fn retry_after_at(header: &str, now_ms: i64) -> Option<i64> {
    let header = header.trim();
    let at = if let Ok(secs) = header.parse::<f64>() {
        now_ms + (secs * 1000.0) as i64
    } else {
        sluice_protocol::duration::parse_instant(header)?
    };
    Some(at.clamp(now_ms + RETRY_AFTER_MIN_MS, now_ms + RETRY_AFTER_MAX_MS))
}

/// Short backoff between attempts to reach an SDK that is down: 250 ms doubling up to `max`.
pub fn unreachable_backoff(failures: u32, max: Duration) -> Duration {
    let ms = 250u64.saturating_mul(1u64 << failures.min(10));
    Duration::from_millis(ms).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_table_with_bounded_jitter() {
        let d = step_backoff(1, None);
        assert!(d >= Duration::from_secs(15) && d < Duration::from_secs(45));
        let d = step_backoff(50, None);
        assert!(d >= Duration::from_secs(7200));
        assert_eq!(step_backoff(3, Some(Duration::from_millis(10))), Duration::from_millis(10));
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates_and_clamps() {
        assert_eq!(retry_after_at("30", 0), Some(30_000));
        assert_eq!(retry_after_at("0", 0), Some(1_000));
        assert_eq!(retry_after_at("1970-01-01T00:00:05Z", 0), Some(5_000));
        assert_eq!(retry_after_at("999999999", 0), Some(24 * 3600 * 1000));
        assert_eq!(retry_after_at("soon", 0), None);
    }

    #[test]
    fn unreachable_backoff_is_short_and_capped() {
        assert_eq!(unreachable_backoff(0, Duration::from_secs(5)), Duration::from_millis(250));
        assert_eq!(unreachable_backoff(2, Duration::from_secs(5)), Duration::from_millis(1000));
        assert_eq!(unreachable_backoff(30, Duration::from_secs(5)), Duration::from_secs(5));
    }
}
