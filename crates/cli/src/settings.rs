//! Server settings from flags, `SLUICE_*` environment variables and an optional TOML file, in that
//! order of precedence, over built-in defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_protocol::duration::parse_duration;
use sluice_store::PgOptions;

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
    /// Database: a SQLite file path or sqlite://PATH (default ./.sluice/sluice.db), or a
    /// postgres://USER:PASSWORD@HOST:PORT/DB URL, which several sluice nodes can share.
    #[arg(long, env = "SLUICE_DB")]
    pub db: Option<String>,
    /// PostgreSQL: connections this node keeps open at most (default 8).
    #[arg(long, env = "SLUICE_DB_POOL_SIZE")]
    pub db_pool_size: Option<usize>,
    /// PostgreSQL: limit for opening one connection (default 10s).
    #[arg(long, env = "SLUICE_DB_CONNECT_TIMEOUT")]
    pub db_connect_timeout: Option<String>,
    /// PostgreSQL: longest one statement may run before the server cancels it (default 30s).
    #[arg(long, env = "SLUICE_DB_STATEMENT_TIMEOUT")]
    pub db_statement_timeout: Option<String>,
    /// PostgreSQL: keep sluice's tables in this schema (created when missing) instead of the
    /// connection's search_path. Nodes of one cluster use the same schema.
    #[arg(long, env = "SLUICE_DB_SCHEMA")]
    pub db_schema: Option<String>,
    /// How often this node records in the database that it is alive (default 2s).
    #[arg(long, env = "SLUICE_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<String>,
    /// A node silent this long is dead: another node releases its leases so its work runs
    /// elsewhere (default 15s; several heartbeat intervals).
    #[arg(long, env = "SLUICE_NODE_TIMEOUT")]
    pub node_timeout: Option<String>,
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
    pub db_pool_size: Option<usize>,
    pub db_connect_timeout: Option<String>,
    pub db_statement_timeout: Option<String>,
    pub db_schema: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub node_timeout: Option<String>,
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
    pub db: Database,
    pub heartbeat_interval: Duration,
    pub node_timeout: Duration,
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

/// Where state lives.
#[derive(Debug, Clone)]
pub enum Database {
    /// One SQLite file, one sluice process (it holds `<file>.lock`).
    Sqlite(PathBuf),
    /// A PostgreSQL database that several sluice nodes may share.
    Postgres { url: String, options: PgOptions },
}

impl Database {
    /// For messages: the path, or the URL without its password (and the schema, when set).
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres { url, options } => {
                let url = sluice_store::postgres::redact_url(url);
                match &options.schema {
                    Some(schema) => format!("{url} (schema {schema})"),
                    None => url,
                }
            }
        }
    }
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
        let db = if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            let defaults = PgOptions::default();
            let pool_size = args.db_pool_size.or(file.db_pool_size).unwrap_or(defaults.pool_size);
            if pool_size == 0 {
                return Err(SettingsError("db_pool_size: must be at least 1".into()));
            }
            let options = PgOptions {
                pool_size,
                connect_timeout: duration(
                    "db_connect_timeout",
                    args.db_connect_timeout.or(file.db_connect_timeout),
                    defaults.connect_timeout,
                )?,
                statement_timeout: duration(
                    "db_statement_timeout",
                    args.db_statement_timeout.or(file.db_statement_timeout),
                    defaults.statement_timeout,
                )?,
                schema: args.db_schema.or(file.db_schema).filter(|s| !s.is_empty()),
            };
            Database::Postgres { url: db, options }
        } else {
            Database::Sqlite(PathBuf::from(db.strip_prefix("sqlite://").unwrap_or(&db)))
        };
        let heartbeat_interval = duration(
            "heartbeat_interval",
            args.heartbeat_interval.or(file.heartbeat_interval),
            Duration::from_secs(2),
        )?;
        let node_timeout = duration("node_timeout", args.node_timeout.or(file.node_timeout), Duration::from_secs(15))?;
        if heartbeat_interval.is_zero() || node_timeout <= heartbeat_interval * 2 {
            return Err(SettingsError(format!(
                "node_timeout ({node_timeout:?}) must be more than twice heartbeat_interval ({heartbeat_interval:?}), \
                 or a live node could be declared dead"
            )));
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
            db,
            heartbeat_interval,
            node_timeout,
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

    #[test]
    fn a_postgres_url_is_accepted_with_pool_and_timeout_settings_from_flags_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "db = \"postgres://sluice:pw@db.internal:5432/sluice\"\ndb_pool_size = 20\n\
             db_statement_timeout = \"5s\"\ndb_schema = \"prod\"\nnode_timeout = \"20s\"\n",
        )
        .unwrap();
        let args =
            ServerArgs { config: Some(path.clone()), db_connect_timeout: Some("3s".into()), ..Default::default() };
        let s = Settings::resolve(args, Mode::Dev).unwrap();
        let Database::Postgres { url, options } = &s.db else { panic!("not postgres: {:?}", s.db) };
        assert_eq!(url, "postgres://sluice:pw@db.internal:5432/sluice");
        assert_eq!(options.pool_size, 20);
        assert_eq!(options.connect_timeout, Duration::from_secs(3));
        assert_eq!(options.statement_timeout, Duration::from_secs(5));
        assert_eq!(options.schema.as_deref(), Some("prod"));
        assert_eq!(s.node_timeout, Duration::from_secs(20));
        assert_eq!(s.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(s.db.describe(), "postgres://sluice:***@db.internal:5432/sluice (schema prod)");

        let args = ServerArgs { db: Some("postgresql://h/db".into()), ..Default::default() };
        let s = Settings::resolve(args, Mode::Dev).unwrap();
        let Database::Postgres { options, .. } = &s.db else { panic!("not postgres") };
        assert_eq!((options.pool_size, options.statement_timeout), (8, Duration::from_secs(30)));

        let args = ServerArgs { db: Some("sqlite:///tmp/x.db".into()), ..Default::default() };
        assert!(
            matches!(Settings::resolve(args, Mode::Dev).unwrap().db, Database::Sqlite(p) if p == std::path::Path::new("/tmp/x.db"))
        );
    }

    #[test]
    fn cluster_timings_are_checked() {
        let pg = || Some("postgres://h/db".to_string());
        let args = ServerArgs { db: pg(), db_pool_size: Some(0), ..Default::default() };
        assert!(Settings::resolve(args, Mode::Dev).unwrap_err().0.contains("db_pool_size"));
        let args = ServerArgs { db: pg(), db_statement_timeout: Some("soon".into()), ..Default::default() };
        assert!(Settings::resolve(args, Mode::Dev).unwrap_err().0.contains("db_statement_timeout"));
        let args =
            ServerArgs { heartbeat_interval: Some("5s".into()), node_timeout: Some("8s".into()), ..Default::default() };
        assert!(Settings::resolve(args, Mode::Dev).unwrap_err().0.contains("node_timeout"));
        let args = ServerArgs {
            heartbeat_interval: Some("500ms".into()),
            node_timeout: Some("3s".into()),
            ..Default::default()
        };
        let s = Settings::resolve(args, Mode::Dev).unwrap();
        assert_eq!((s.heartbeat_interval, s.node_timeout), (Duration::from_millis(500), Duration::from_secs(3)));
    }
}
