//! Engine settings. Defaults are what a production user wants; tests shorten the windows.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Deadline of one Call Request. Long enough for a 20-minute step.
    pub call_timeout: Duration,
    /// Deadline of a sync `PUT` or an introspection `GET`.
    pub sync_timeout: Duration,
    /// How long an app may fail to answer before its runs are parked as `PausedUnreachable`.
    pub unreachable_budget: Duration,
    /// How long a run's pinned (non-current) deployment may fail to answer before the run moves
    /// to the app's current deployment.
    pub failover_grace: Duration,
    /// Cap of the short backoff between unreachable retries.
    pub unreachable_backoff_max: Duration,
    /// Replace the step retry backoff table by a fixed interval (like `inngest dev --retry-interval`).
    pub retry_interval: Option<Duration>,
    /// Calls in flight at once from this node.
    pub max_inflight: usize,
    /// Signing key: when set, requests to SDKs are signed and their answers verified.
    pub signing_keys: Vec<String>,
    /// `dev` or `cloud`, sent as `X-Inngest-Server-Kind`.
    pub server_kind: &'static str,
    /// Identity of this node in leases and in the nodes table.
    pub node_id: String,
    /// How often this node records that it is alive.
    pub heartbeat_interval: Duration,
    /// A node whose last heartbeat is older than this is dead: another node releases its leases.
    pub node_timeout: Duration,
    /// Largest accepted event, in bytes.
    pub max_event_bytes: usize,
    /// How often unreachable apps (and `-u` apps) are re-synced.
    pub resync_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            call_timeout: Duration::from_secs(30 * 60),
            sync_timeout: Duration::from_secs(10),
            unreachable_budget: Duration::from_secs(5 * 60),
            unreachable_backoff_max: Duration::from_secs(5),
            failover_grace: Duration::from_secs(30),
            retry_interval: None,
            max_inflight: 64,
            signing_keys: Vec::new(),
            server_kind: "dev",
            node_id: format!("node-{}", ulid::Ulid::new()),
            heartbeat_interval: Duration::from_secs(2),
            node_timeout: Duration::from_secs(15),
            max_event_bytes: 512 * 1024,
            resync_interval: Duration::from_secs(5),
        }
    }
}

impl EngineConfig {
    pub fn signing_key(&self) -> Option<&str> {
        self.signing_keys.first().map(String::as_str)
    }
}
