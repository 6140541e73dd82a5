//! Doctor settings: a TOML file (`--config`, `SLUICE_DOCTOR_CONFIG`, or `./sluice-doctor.toml`),
//! with the common ones also given as flags.
//!
//! ```toml
//! stale_after = "30m"              # no progress for this long = STALE_RUN (default 30m)
//! lookback = "24h"                 # how far back chains and sent events are checked
//! node_timeout = "60s"             # a node heartbeat older than this = dead (multi-node stores)
//! [stale_after_by_function]
//! "app-long-job" = "3h"
//! [chain]
//! ignore_unmatched = ["audit/*"]   # emitted events nobody needs to consume
//! [[chain.expect]]                 # after an X event, expect a Y event downstream of it within T
//! after = "agent/loop.story.passed"
//! expect = "agent/loop.story.dispatched"
//! within = "10m"
//! [[claims]]                       # application claims: key values name a run or an event
//! redis = "redis://127.0.0.1:6379"
//! pattern = "agent-loop:claim:*"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use sluice_protocol::duration::parse_duration;

use crate::{DoctorError, Result};

fn duration_ms<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

fn duration_map<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<BTreeMap<String, i64>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(d)?;
    raw.into_iter().map(|(k, v)| parse(&v).map(|ms| (k, ms)).map_err(serde::de::Error::custom)).collect()
}

/// A duration like `30s`, `5m`, `2h`, `1d`, in milliseconds.
pub fn parse(s: &str) -> std::result::Result<i64, String> {
    parse_duration(s.trim()).map_err(|_| format!("{s:?} is not a duration like 30s, 5m or 2h"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainExpectation {
    pub after: String,
    pub expect: String,
    #[serde(deserialize_with = "duration_ms")]
    pub within: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Event name patterns (`prefix/*` or exact) whose emission without a consumer is fine.
    #[serde(default)]
    pub ignore_unmatched: Vec<String>,
    #[serde(default)]
    pub expect: Vec<ChainExpectation>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimSource {
    /// `redis://host:port[/db]`.
    pub redis: String,
    /// A `SCAN MATCH` pattern, e.g. `agent-loop:claim:*`.
    pub pattern: String,
    /// A value naming neither a run nor an event sluice knows is orphaned (default); false: ignored.
    #[serde(default = "yes")]
    pub absent_is_orphaned: bool,
}

fn yes() -> bool {
    true
}

fn default_stale() -> i64 {
    30 * 60_000
}
fn default_lookback() -> i64 {
    24 * 3_600_000
}
fn default_node_timeout() -> i64 {
    60_000
}
fn default_limit() -> usize {
    1_000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoctorConfig {
    #[serde(default = "default_stale", deserialize_with = "duration_ms")]
    pub stale_after: i64,
    #[serde(default, deserialize_with = "duration_map")]
    pub stale_after_by_function: BTreeMap<String, i64>,
    #[serde(default = "default_lookback", deserialize_with = "duration_ms")]
    pub lookback: i64,
    #[serde(default = "default_node_timeout", deserialize_with = "duration_ms")]
    pub node_timeout: i64,
    /// Cap of every list the snapshot reads that grows with history.
    #[serde(default = "default_limit")]
    pub limit: usize,
    #[serde(default)]
    pub chain: ChainConfig,
    #[serde(default)]
    pub claims: Vec<ClaimSource>,
}

impl Default for DoctorConfig {
    fn default() -> Self {
        DoctorConfig {
            stale_after: default_stale(),
            stale_after_by_function: BTreeMap::new(),
            lookback: default_lookback(),
            node_timeout: default_node_timeout(),
            limit: default_limit(),
            chain: ChainConfig::default(),
            claims: Vec::new(),
        }
    }
}

impl DoctorConfig {
    pub fn from_toml(text: &str) -> Result<DoctorConfig> {
        toml::from_str(text).map_err(|e| DoctorError::Config(e.to_string()))
    }

    pub fn load(path: &Path) -> Result<DoctorConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DoctorError::Config(format!("cannot read {}: {e}", path.display())))?;
        DoctorConfig::from_toml(&text).map_err(|e| DoctorError::Config(format!("{}: {e}", path.display())))
    }

    /// The file named by `explicit`, else `SLUICE_DOCTOR_CONFIG`, else `./sluice-doctor.toml` when
    /// present, else the defaults.
    pub fn discover(explicit: Option<&Path>) -> Result<DoctorConfig> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("SLUICE_DOCTOR_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from("sluice-doctor.toml")).filter(|p| p.exists()));
        match path {
            Some(p) => DoctorConfig::load(&p),
            None => Ok(DoctorConfig::default()),
        }
    }

    /// The stale threshold of a function: its override, else the global one.
    pub fn stale_after_for(&self, function_id: &str) -> i64 {
        self.stale_after_by_function.get(function_id).copied().unwrap_or(self.stale_after)
    }

    pub fn ignores_unmatched(&self, event_name: &str) -> bool {
        self.chain.ignore_unmatched.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => event_name.starts_with(prefix),
            None => p == event_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_settings_parse_with_defaults_and_overrides() {
        let c = DoctorConfig::from_toml(
            r#"
stale_after = "10m"
[stale_after_by_function]
"app-slow" = "2h"
[chain]
ignore_unmatched = ["audit/*", "x/exact"]
[[chain.expect]]
after = "a/x"
expect = "a/y"
within = "5m"
[[claims]]
redis = "redis://127.0.0.1:6379"
pattern = "agent-loop:claim:*"
"#,
        )
        .unwrap();
        assert_eq!(c.stale_after, 600_000);
        assert_eq!(c.stale_after_for("app-slow"), 7_200_000);
        assert_eq!(c.stale_after_for("app-other"), 600_000);
        assert_eq!(c.lookback, 24 * 3_600_000);
        assert_eq!(c.chain.expect[0].within, 300_000);
        assert!(c.claims[0].absent_is_orphaned);
        assert!(c.ignores_unmatched("audit/anything") && c.ignores_unmatched("x/exact"));
        assert!(!c.ignores_unmatched("x/exactly"));
        assert!(DoctorConfig::from_toml("stale_after = \"soon\"").is_err());
        assert!(DoctorConfig::from_toml("stale = \"1m\"").is_err());
    }
}
