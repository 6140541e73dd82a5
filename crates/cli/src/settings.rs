//! Server settings from flags, `SLUICE_*` environment variables and an optional TOML file, in that
//! order of precedence, over built-in defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_protocol::duration::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Dev,
    Production,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// TOML configuration file (default: ./sluice.toml when present).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "SLUICE_HOST")]
    pub host: Option<String>,
    /// Port to listen on (default 8288).
    #[arg(short, long, env = "SLUICE_PORT")]
    pub port: Option<u16>,
    /// Database: a SQLite file path or sqlite://PATH (default ./.sluice/sluice.db).
    #[arg(long, env = "SLUICE_DB")]
    pub db: Option<String>,
    /// SDK URLs to sync at start and re-sync while unreachable (repeatable).
    #[arg(short = 'u', long = "sdk-url", env = "SLUICE_SDK_URLS", value_delimiter = ',')]
    pub sdk_urls: Vec<String>,
    /// Signing key (production mode): signs requests to SDKs and authenticates SDK calls.
    #[arg(long, env = "SLUICE_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Fallback signing key, accepted during key rotation.
    #[arg(long, env = "SLUICE_SIGNING_KEY_FALLBACK", hide_env_values = true)]
    pub signing_key_fallback: Option<String>,
    /// Event keys accepted on /e/{key} (production mode; repeatable).
    #[arg(long = "event-key", env = "SLUICE_EVENT_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub event_keys: Vec<String>,
    /// Fixed delay between step retries instead of the backoff table (e.g. 1s).
    #[arg(long, env = "SLUICE_RETRY_INTERVAL")]
    pub retry_interval: Option<String>,
    /// How long an app may be unreachable before its runs are parked (default 5m).
    #[arg(long, env = "SLUICE_UNREACHABLE_BUDGET")]
    pub unreachable_budget: Option<String>,
    /// How long a run's pinned, no longer current deployment may fail to answer before the run
    /// moves to the current deployment (default 30s).
    #[arg(long, env = "SLUICE_FAILOVER_GRACE")]
    pub failover_grace: Option<String>,
    /// Deadline of one call to an SDK (default 30m).
    #[arg(long, env = "SLUICE_CALL_TIMEOUT")]
    pub call_timeout: Option<String>,
    /// How often unreachable apps are re-synced (default 5s).
    #[arg(long, env = "SLUICE_POLL_INTERVAL")]
    pub poll_interval: Option<String>,
    /// Largest event accepted, in bytes (default 524288).
    #[arg(long, env = "SLUICE_MAX_EVENT_BYTES")]
    pub max_event_bytes: Option<usize>,
    /// Largest request accepted, in bytes (default 3145728).
    #[arg(long, env = "SLUICE_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Dev only: an adjustable clock (`POST /dev/clock {"advance_ms": N}`) for testing timers.
    #[arg(long, env = "SLUICE_TEST_CLOCK")]
    pub test_clock: bool,
    /// Calls in flight at once (default 64).
    #[arg(long, env = "SLUICE_MAX_INFLIGHT")]
    pub max_inflight: Option<usize>,
}

/// The TOML file's keys mirror the flags (snake_case).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub db: Option<String>,
    #[serde(default)]
    pub sdk_urls: Vec<String>,
    pub signing_key: Option<String>,
    pub signing_key_fallback: Option<String>,
    #[serde(default)]
    pub event_keys: Vec<String>,
    pub retry_interval: Option<String>,
    pub unreachable_budget: Option<String>,
    pub call_timeout: Option<String>,
    pub failover_grace: Option<String>,
    pub poll_interval: Option<String>,
    pub max_event_bytes: Option<usize>,
    pub max_request_bytes: Option<usize>,
    pub max_inflight: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub host: String,
    pub port: u16,
    pub db_path: PathBuf,
    pub sdk_urls: Vec<String>,
    pub signing_keys: Vec<String>,
    pub event_keys: Vec<String>,
    pub retry_interval: Option<Duration>,
    pub unreachable_budget: Duration,
    pub call_timeout: Duration,
    pub failover_grace: Duration,
    pub poll_interval: Duration,
    pub max_event_bytes: usize,
    pub max_request_bytes: usize,
    pub max_inflight: usize,
    pub test_clock: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

fn duration(name: &str, value: Option<String>, default: Duration) -> Result<Duration, SettingsError> {
    match value {
        None => Ok(default),
        Some(v) => parse_duration(&v)
            .map(|ms| Duration::from_millis(ms as u64))
            .map_err(|_| SettingsError(format!("{name}: {v:?} is not a duration like 30s, 5m or 1h"))),
    }
}

impl Settings {
    pub fn resolve(args: ServerArgs, mode: Mode) -> Result<Settings, SettingsError> {
        let file_path = args.config.clone().or_else(|| {
            let default = PathBuf::from("sluice.toml");
            default.exists().then_some(default)
        });
        let file: FileSettings = match &file_path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| SettingsError(format!("cannot read config {}: {e}", path.display())))?;
                toml::from_str(&text).map_err(|e| SettingsError(format!("config {}: {e}", path.display())))?
            }
            None => FileSettings::default(),
        };
        let pick_vec = |a: Vec<String>, f: Vec<String>| if a.is_empty() { f } else { a };
        let db = args.db.or(file.db).unwrap_or_else(|| "./.sluice/sluice.db".into());
        let db_path = PathBuf::from(db.strip_prefix("sqlite://").unwrap_or(&db));
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            return Err(SettingsError("PostgreSQL is not supported by this build yet; use a SQLite path".into()));
        }
        let mut signing_keys = Vec::new();
        signing_keys.extend(args.signing_key.or(file.signing_key));
        signing_keys.extend(args.signing_key_fallback.or(file.signing_key_fallback));
        let event_keys = pick_vec(args.event_keys, file.event_keys);
        if mode == Mode::Production {
            if signing_keys.is_empty() {
                return Err(SettingsError(
                    "sluice start needs a signing key (--signing-key or SLUICE_SIGNING_KEY)".into(),
                ));
            }
            if event_keys.is_empty() {
                return Err(SettingsError(
                    "sluice start needs at least one event key (--event-key or SLUICE_EVENT_KEYS)".into(),
                ));
            }
        }
        if mode == Mode::Dev {
            // Dev mode never authenticates, whatever the environment says.
            signing_keys.clear();
        }
        Ok(Settings {
            mode,
            host: args.host.or(file.host).unwrap_or_else(|| "127.0.0.1".into()),
            port: args.port.or(file.port).unwrap_or(8288),
            db_path,
            sdk_urls: pick_vec(args.sdk_urls, file.sdk_urls),
            signing_keys,
            event_keys: if mode == Mode::Dev { vec![] } else { event_keys },
            retry_interval: match args.retry_interval.or(file.retry_interval) {
                None => None,
                Some(v) => Some(duration("retry_interval", Some(v), Duration::ZERO)?),
            },
            unreachable_budget: duration(
                "unreachable_budget",
                args.unreachable_budget.or(file.unreachable_budget),
                Duration::from_secs(300),
            )?,
            call_timeout: duration("call_timeout", args.call_timeout.or(file.call_timeout), Duration::from_secs(1800))?,
            failover_grace: duration(
                "failover_grace",
                args.failover_grace.or(file.failover_grace),
                Duration::from_secs(30),
            )?,
            poll_interval: duration(
                "poll_interval",
                args.poll_interval.or(file.poll_interval),
                Duration::from_secs(5),
            )?,
            max_event_bytes: args.max_event_bytes.or(file.max_event_bytes).unwrap_or(512 * 1024),
            max_request_bytes: args.max_request_bytes.or(file.max_request_bytes).unwrap_or(3 * 1024 * 1024),
            max_inflight: args.max_inflight.or(file.max_inflight).unwrap_or(64),
            test_clock: args.test_clock && mode == Mode::Dev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "port = 9000\nhost = \"0.0.0.0\"\nunreachable_budget = \"1m\"\n").unwrap();
        let args = ServerArgs { config: Some(path), port: Some(9100), ..Default::default() };
        let s = Settings::resolve(args, Mode::Dev).unwrap();
        assert_eq!(s.port, 9100);
        assert_eq!(s.host, "0.0.0.0");
        assert_eq!(s.unreachable_budget, Duration::from_secs(60));
        assert_eq!(s.call_timeout, Duration::from_secs(1800));
    }

    #[test]
    fn production_mode_requires_keys_and_bad_values_are_named() {
        let err = Settings::resolve(ServerArgs::default(), Mode::Production).unwrap_err();
        assert!(err.0.contains("signing key"));
        let args = ServerArgs { signing_key: Some("signkey-prod-00".into()), ..Default::default() };
        assert!(Settings::resolve(args, Mode::Production).unwrap_err().0.contains("event key"));
        let args = ServerArgs { call_timeout: Some("forever".into()), ..Default::default() };
        assert!(Settings::resolve(args, Mode::Dev).unwrap_err().0.contains("call_timeout"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "prot = 1\n").unwrap();
        let args = ServerArgs { config: Some(path), ..Default::default() };
        assert!(Settings::resolve(args, Mode::Dev).is_err());
    }
}
