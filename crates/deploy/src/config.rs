//! Gate thresholds and windows: defaults, a TOML file (`[deploy]` table or top level), then flags.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateConfig {
    /// How long the new deployment must stay healthy before the probe.
    #[serde(with = "dur")]
    pub warm_window: Duration,
    /// Interval between health checks (warm and bake).
    #[serde(with = "dur")]
    pub check_interval: Duration,
    /// Consecutive failed health checks that make a breach.
    pub max_health_failures: u32,
    /// Deadline for the synthetic probe run to finish.
    #[serde(with = "dur")]
    pub probe_deadline: Duration,
    /// Drain: wait at most this long for the old deployment's in-flight calls to fall to the threshold.
    #[serde(with = "dur")]
    pub drain_timeout: Duration,
    pub drain_threshold: u64,
    /// Bake window after cutover.
    #[serde(with = "dur")]
    pub bake_window: Duration,
    /// Pre-deploy baseline: runs created in this window before the deploy.
    #[serde(with = "dur")]
    pub baseline_window: Duration,
    /// Bake breach when the failure rate exceeds the baseline by more than this (0..1).
    pub max_failure_rate_increase: f64,
    /// ...and at least this many runs failed during the bake.
    pub min_failed_runs: u64,
    /// A Running run unchanged this long is stale.
    #[serde(with = "dur")]
    pub stale_after: Duration,
    /// Functions the new deployment may drop without a warm breach (ids, with or without the app prefix).
    pub allow_removed: Vec<String>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            warm_window: Duration::from_secs(10),
            check_interval: Duration::from_millis(500),
            max_health_failures: 2,
            probe_deadline: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(300),
            drain_threshold: 0,
            bake_window: Duration::from_secs(60),
            baseline_window: Duration::from_secs(600),
            max_failure_rate_increase: 0.10,
            min_failed_runs: 1,
            stale_after: Duration::from_secs(300),
            allow_removed: vec![],
        }
    }
}

impl GateConfig {
    /// Parse a TOML file: keys at the top level or under `[deploy]`.
    pub fn from_toml(text: &str) -> Result<GateConfig, String> {
        let value: toml::Value = toml::from_str(text).map_err(|e| e.to_string())?;
        let table = value.get("deploy").cloned().unwrap_or(value);
        table.try_into().map_err(|e: toml::de::Error| e.to_string())
    }

    pub fn allows_removal(&self, app_id: &str, function_id: &str) -> bool {
        let short = function_id.strip_prefix(&format!("{app_id}-")).unwrap_or(function_id);
        self.allow_removed.iter().any(|a| a == function_id || a == short)
    }
}

/// `500ms`, `30s`, `5m`, `2h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}: use e.g. 500ms, 30s, 5m, 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let (sub_second, sub_minute) = (ms % 1000, ms % 60_000);
    if sub_second != 0 {
        format!("{ms}ms")
    } else if sub_minute != 0 || ms == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}m", ms / 60_000)
    }
}

mod dur {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(f64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => super::parse_duration(&s).map_err(serde::de::Error::custom),
            Raw::N(n) => Ok(Duration::from_secs_f64(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn toml_file_overrides_defaults() {
        let c = GateConfig::from_toml(
            "[deploy]\nwarm_window = \"2s\"\ndrain_threshold = 3\nallow_removed = [\"old-fn\"]\n",
        )
        .unwrap();
        assert_eq!(c.warm_window, Duration::from_secs(2));
        assert_eq!(c.drain_threshold, 3);
        assert_eq!(c.bake_window, GateConfig::default().bake_window);
        assert!(c.allows_removal("ts-app", "ts-app-old-fn"));
        assert!(!c.allows_removal("ts-app", "ts-app-other"));
        let top = GateConfig::from_toml("bake_window = 5\n").unwrap();
        assert_eq!(top.bake_window, Duration::from_secs(5));
        assert!(GateConfig::from_toml("nonsense_key = 1\n").is_err());
    }
}
