//! Several sluice nodes on one database: who is alive, whose leases to take back, and wake-ups.
//!
//! ```text
//!  every node ──heartbeat (each interval)──▶ nodes (id, started_at, heartbeat_at)
//!  a healthy node ──sweep──▶ nodes whose heartbeat_at < now - node timeout:
//!                              row deleted, every lease it holds released (its work runs elsewhere)
//!  each node ──orphans──▶ its own leases on items it is no longer working on (a store error
//!                          mid-item, a claim whose answer was lost) are released
//!  commit / ingest that queues work ──NOTIFY sluice_work──▶ every node's listener ──▶ worker wakes
//! ```
//! The sweep is the fast path; lease expiry (`lease_expires_at`) stays the safety net. A node that
//! was swept but is in fact alive learns it at its next heartbeat (the row is gone); work it was
//! doing may then run twice, and the run's compare-and-set commit keeps the first result only.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Nodes whose heartbeat was too old; their rows are gone.
    pub dead_nodes: Vec<String>,
    /// Leases they held that were released.
    pub released: u64,
}

/// A step result that arrived for a step already stored (two executions raced); it was discarded.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDuplicate {
    pub run_id: String,
    pub step_id: String,
    pub value: Value,
    pub received_at: i64,
}

/// What a [`WorkSignals`] listener reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkSignal {
    /// Work may be waiting: another node queued some, or the listener (re)connected and may have
    /// missed signals meanwhile.
    Work,
    /// The listener lost its connection (or could not open it) and is reconnecting.
    Lost(String),
}

/// Wake-ups from other nodes. Signals close together are merged. Dropping it stops the listener.
pub struct WorkSignals {
    rx: mpsc::Receiver<WorkSignal>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkSignals {
    /// A channel fed by `task`, which the signals own (and abort when dropped).
    pub fn new(rx: mpsc::Receiver<WorkSignal>, task: tokio::task::JoinHandle<()>) -> WorkSignals {
        WorkSignals { rx, task }
    }

    /// The next signal; `None` once the listener stopped for good.
    pub async fn recv(&mut self) -> Option<WorkSignal> {
        self.rx.recv().await
    }
}

impl Drop for WorkSignals {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The registry fingerprint: row count, latest and summed `updated_at` of each registry table
/// (portable SQL, the same on both backends).
pub(crate) const REGISTRY_VERSION_SQL: &str = "SELECT
    (SELECT COUNT(*) FROM apps), (SELECT COALESCE(MAX(updated_at), 0) FROM apps),
    (SELECT CAST(COALESCE(SUM(updated_at % 1000000007), 0) AS BIGINT) FROM apps),
    (SELECT COUNT(*) FROM functions), (SELECT COALESCE(MAX(updated_at), 0) FROM functions),
    (SELECT CAST(COALESCE(SUM(updated_at % 1000000007), 0) AS BIGINT) FROM functions),
    (SELECT COUNT(*) FROM deployments), (SELECT COALESCE(MAX(updated_at), 0) FROM deployments),
    (SELECT CAST(COALESCE(SUM(updated_at % 1000000007), 0) AS BIGINT) FROM deployments),
    (SELECT COUNT(*) FROM app_routing), (SELECT COALESCE(MAX(updated_at), 0) FROM app_routing),
    (SELECT CAST(COALESCE(SUM(updated_at % 1000000007), 0) AS BIGINT) FROM app_routing)";

/// How long a listener waits before reconnecting, doubling from `min` up to `max`.
pub(crate) fn reconnect_backoff(failures: u32) -> Duration {
    let min = Duration::from_millis(250);
    let max = Duration::from_secs(5);
    min.saturating_mul(1u32 << failures.min(8)).min(max)
}

/// Cluster membership and lease recovery. Every `Store` implements it; on SQLite (one process per
/// file) it is the same bookkeeping with a single member and no wake-up channel.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Record that `node_id` is alive at `now`. Returns `false` when it had no row: its first
    /// heartbeat, or it was declared dead (swept) since its last one.
    async fn heartbeat(&self, node_id: &str, started_at: i64, now: i64) -> Result<bool>;
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;
    /// Forget every node whose last heartbeat is older than `stale_before` and release every
    /// lease it holds, in one transaction (two nodes sweeping at once release each lease once).
    async fn sweep_dead_nodes(&self, stale_before: i64) -> Result<SweepOutcome>;
    /// Release the leases `owner` holds on items other than `in_flight` that were leased until
    /// before `leased_until_before` (i.e. claimed long enough ago that a claim in progress is not
    /// taken for an orphan).
    async fn release_orphaned_leases(&self, owner: &str, in_flight: &[String], leased_until_before: i64)
        -> Result<u64>;
    /// A node shutting down: release its leases and forget it. Returns the leases released.
    async fn leave(&self, node_id: &str) -> Result<u64>;
    /// Discarded results of steps already stored, oldest first.
    async fn step_duplicates(&self, run_id: &str) -> Result<Vec<StepDuplicate>>;
    /// Changes whenever an app, function, deployment or routing policy is written (by any node): nodes compare it
    /// to reload their in-memory registry after another node synced an app.
    async fn registry_version(&self) -> Result<Vec<i64>>;
    /// Start listening for other nodes' "work queued" signals. `None`: the backend has no other
    /// nodes to hear from (SQLite).
    fn work_signals(&self) -> Option<WorkSignals>;
}

/// The cluster suite: each backend's test module expands [`cluster_suite!`] with its `Backend`.
#[cfg(test)]
pub(crate) mod suite {
    use serde_json::json;

    use crate::conformance::{ingest_one, Backend};
    use crate::*;

    macro_rules! cluster_suite {
        ($backend:expr) => {
            $crate::cluster::suite::cluster_suite!(@tests $backend;
                heartbeats_register_refresh_and_report_a_forgotten_node,
                sweeping_releases_only_the_leases_of_stale_nodes,
                orphaned_leases_are_released_but_in_flight_and_fresh_ones_kept,
                leaving_releases_the_leases_and_forgets_the_node,
                a_step_stored_twice_keeps_the_first_result_and_records_the_loser,
                the_registry_version_changes_with_every_app_or_function_write
            );
        };
        (@tests $backend:expr; $($name:ident),* $(,)?) => {
            $(
                #[tokio::test]
                async fn $name() {
                    use $crate::conformance::Backend as _;
                    let Some(backend) = $backend else { return };
                    $crate::cluster::suite::$name(&backend).await;
                    backend.clean_up().await;
                }
            )*
        };
    }
    pub(crate) use cluster_suite;

    fn owners(items: &[QueueItem]) -> Vec<(&str, Option<&str>)> {
        items.iter().map(|i| (i.id.as_str(), i.lease_owner.as_deref())).collect()
    }

    pub async fn heartbeats_register_refresh_and_report_a_forgotten_node(b: &impl Backend) {
        let store = b.open().await;
        assert!(!store.heartbeat("n1", 1_000, 1_000).await.unwrap(), "first heartbeat registers");
        assert!(store.heartbeat("n1", 1_000, 2_000).await.unwrap());
        assert!(!store.heartbeat("n2", 1_500, 1_500).await.unwrap());
        let nodes = store.list_nodes().await.unwrap();
        assert_eq!(
            nodes,
            vec![
                NodeRecord { id: "n1".into(), started_at: 1_000, heartbeat_at: 2_000 },
                NodeRecord { id: "n2".into(), started_at: 1_500, heartbeat_at: 1_500 },
            ]
        );
        // n2 is swept; its next heartbeat says so, and registers it again.
        let swept = store.sweep_dead_nodes(1_800).await.unwrap();
        assert_eq!(swept.dead_nodes, vec!["n2".to_string()]);
        assert!(!store.heartbeat("n2", 1_500, 3_000).await.unwrap());
        assert_eq!(store.list_nodes().await.unwrap().len(), 2);
    }

    pub async fn sweeping_releases_only_the_leases_of_stale_nodes(b: &impl Backend) {
        let store = b.open().await;
        let batch = (0..4).map(|i| ingest_one(&format!("e{i}"), &format!("r{i}"), None, 1_000)).collect();
        store.ingest(batch).await.unwrap();
        store.heartbeat("dead", 0, 1_000).await.unwrap();
        store.heartbeat("alive", 0, 1_000).await.unwrap();
        assert_eq!(store.claim_due(1_000, "dead", 999_999, 2).await.unwrap().len(), 2);
        assert_eq!(store.claim_due(1_000, "alive", 999_999, 1).await.unwrap().len(), 1);
        // A lease held by a node with no row (never registered) is left to its expiry.
        assert_eq!(store.claim_due(1_000, "unknown", 999_999, 1).await.unwrap().len(), 1);
        store.heartbeat("alive", 0, 20_000).await.unwrap();

        let swept = store.sweep_dead_nodes(10_000).await.unwrap();
        assert_eq!(swept, SweepOutcome { dead_nodes: vec!["dead".into()], released: 2 });
        let mut leases = Vec::new();
        for i in 0..4 {
            leases.extend(store.items_for_run(&format!("r{i}")).await.unwrap());
        }
        let held: Vec<_> = owners(&leases).into_iter().filter_map(|(_, o)| o).collect();
        assert_eq!(held.len(), 2, "{leases:?}");
        assert!(held.contains(&"alive") && held.contains(&"unknown"));
        // The released items are claimable at once, and a second sweep finds nothing.
        let again = store.claim_due(1_000, "alive", 999_999, 10).await.unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(store.sweep_dead_nodes(10_000).await.unwrap(), SweepOutcome::default());
        assert_eq!(store.list_nodes().await.unwrap().iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["alive"]);
    }

    pub async fn orphaned_leases_are_released_but_in_flight_and_fresh_ones_kept(b: &impl Backend) {
        let store = b.open().await;
        let batch = (0..3).map(|i| ingest_one(&format!("e{i}"), &format!("r{i}"), None, 1_000)).collect();
        store.ingest(batch).await.unwrap();
        // Claimed long ago (lease until 50 000): q-r0 still being worked on, q-r1 orphaned.
        assert_eq!(store.claim_due(1_000, "me", 50_000, 2).await.unwrap().len(), 2);
        // Claimed just now (lease until 90 000): kept even though not in flight yet.
        assert_eq!(store.claim_due(1_000, "me", 90_000, 1).await.unwrap().len(), 1);
        let released = store.release_orphaned_leases("me", &["q-r0".to_string()], 60_000).await.unwrap();
        assert_eq!(released, 1);
        assert_eq!(owners(&store.items_for_run("r0").await.unwrap()), vec![("q-r0", Some("me"))]);
        assert_eq!(owners(&store.items_for_run("r1").await.unwrap()), vec![("q-r1", None)]);
        assert_eq!(owners(&store.items_for_run("r2").await.unwrap()), vec![("q-r2", Some("me"))]);
        // Nobody else's leases are touched.
        assert_eq!(store.release_orphaned_leases("other", &[], i64::MAX).await.unwrap(), 0);
        assert_eq!(store.release_orphaned_leases("me", &[], i64::MAX).await.unwrap(), 2);
    }

    pub async fn leaving_releases_the_leases_and_forgets_the_node(b: &impl Backend) {
        let store = b.open().await;
        store.ingest(vec![ingest_one("e1", "r1", None, 1_000), ingest_one("e2", "r2", None, 1_000)]).await.unwrap();
        store.heartbeat("me", 0, 1_000).await.unwrap();
        store.heartbeat("you", 0, 1_000).await.unwrap();
        store.claim_due(1_000, "me", 999_999, 1).await.unwrap();
        store.claim_due(1_000, "you", 999_999, 1).await.unwrap();
        assert_eq!(store.leave("me").await.unwrap(), 1);
        assert_eq!(store.list_nodes().await.unwrap().iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["you"]);
        assert_eq!(store.claim_due(1_000, "you", 999_999, 5).await.unwrap().len(), 1);
    }

    /// Two nodes ran the same step (the first one's lease went stale): the commit that lands
    /// second finds the step stored, keeps the first result, and reports and records its own.
    pub async fn a_step_stored_twice_keeps_the_first_result_and_records_the_loser(b: &impl Backend) {
        let store = b.open().await;
        store.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
        let run = store.get_run("r1").await.unwrap().unwrap();
        let step = |value: serde_json::Value, at: i64| StepRecord {
            run_id: "r1".into(),
            step_id: "a".into(),
            seq: 0,
            name: Some("a".into()),
            value,
            created_at: at,
        };
        let first = store
            .commit(Commit {
                run_id: "r1".into(),
                run: Some(run.clone()),
                expected_rev: run.rev,
                steps: vec![step(json!({"data": "winner"}), 2_000)],
                done_item: Some("q-r1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(first, CommitOutcome::Applied { duplicate_steps: vec![] });
        // The loser's commit with the old rev conflicts; recomputed on the new rev it applies,
        // and its result for `a` is the duplicate.
        let stale = Commit {
            run_id: "r1".into(),
            run: Some(run.clone()),
            expected_rev: run.rev,
            steps: vec![step(json!({"data": "loser"}), 2_500)],
            done_item: Some("q-r1".into()),
            ..Default::default()
        };
        assert_eq!(store.commit(stale.clone()).await.unwrap(), CommitOutcome::Conflict);
        let current = store.get_run("r1").await.unwrap().unwrap();
        let retried = Commit { expected_rev: current.rev, run: Some(current), ..stale };
        assert_eq!(store.commit(retried).await.unwrap(), CommitOutcome::Applied { duplicate_steps: vec!["a".into()] });
        let steps = store.get_steps("r1").await.unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].value, json!({"data": "winner"}));
        let dups = store.step_duplicates("r1").await.unwrap();
        assert_eq!(
            dups,
            vec![StepDuplicate {
                run_id: "r1".into(),
                step_id: "a".into(),
                value: json!({"data": "loser"}),
                received_at: 2_500
            }]
        );
        assert!(store.step_duplicates("r2").await.unwrap().is_empty());
    }

    pub async fn the_registry_version_changes_with_every_app_or_function_write(b: &impl Backend) {
        let store = b.open().await;
        let app = |at: i64| AppRecord {
            id: "app".into(),
            url: "http://localhost:3000/api/inngest".into(),
            normalized_url: "http://localhost:3000/api/inngest".into(),
            framework: None,
            sdk: None,
            deploy_id: None,
            app_version: None,
            config_hash: "h".into(),
            status: AppStatus::Synced,
            last_error: None,
            synced_at: Some(at),
            updated_at: at,
        };
        let function = |at: i64| {
            let config = serde_json::from_value(json!({"id": "app-f", "triggers": [{"event": "test/e"}]})).unwrap();
            FunctionRecord { id: "app-f".into(), app_id: "app".into(), name: "f".into(), config, updated_at: at }
        };
        let empty = store.registry_version().await.unwrap();
        assert_eq!(empty, store.registry_version().await.unwrap(), "stable while nothing changes");
        store.upsert_app(app(1_000), vec![function(1_000)]).await.unwrap();
        let synced = store.registry_version().await.unwrap();
        assert_ne!(synced, empty);
        // The same app synced again later (same config) is still a change another node must see.
        store.upsert_app(app(2_000), vec![function(2_000)]).await.unwrap();
        let resynced = store.registry_version().await.unwrap();
        assert_ne!(resynced, synced);
        store.set_app_status("app", AppStatus::Unreachable, Some("down".into()), 3_000).await.unwrap();
        assert_ne!(store.registry_version().await.unwrap(), resynced);
    }
}
