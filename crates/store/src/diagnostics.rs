//! What the integrity doctor (`sluice doctor`, crate `sluice-doctor`) reads and writes besides the
//! `Store` trait: one consistent snapshot of everything it checks, the few targeted repairs that
//! have no `Store` method (releasing one lease), its audit log, and a backup before bulk repairs.
//!
//! ```text
//!   sluice doctor ──▶ Diagnostics::diagnostic_snapshot (one read transaction)
//!        │                 runs not ended, queue items, pauses, progress, guards,
//!        │                 ended runs missing finish events, duplicate step results,
//!        │                 sendEvent steps and emitted events, node heartbeats
//!        └─ repair ──▶ Store::commit / Store::ingest / release_lease ──▶ record_audit
//! ```

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::records::*;
use sluice_protocol::run::RunStatus;

/// Event names a run's end emits (`inngest/function.finished` always, plus the failed / cancelled one).
pub const FUNCTION_FINISHED: &str = "inngest/function.finished";
pub const FUNCTION_FAILED: &str = "inngest/function.failed";
pub const FUNCTION_CANCELLED: &str = "inngest/function.cancelled";

/// Step names the SDKs give `step.sendEvent` (JS) and `step.send_event` (Python).
pub const SEND_EVENT_STEP_NAMES: &[&str] = &["sendEvent", "send_event"];

/// A run's progress as its stored steps show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    pub run_id: String,
    pub steps: i64,
    /// When its latest step was stored (none: no step yet).
    pub last_step_at: Option<i64>,
}

/// A run that ended without the events its end must emit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnfinalizedRun {
    pub run: RunRecord,
    /// Names of the missing events, e.g. `inngest/function.finished`.
    pub missing: Vec<String>,
}

/// A step result that arrived for a step already stored: the step body ran (at least) twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDuplicate {
    pub run_id: String,
    pub step_id: String,
    /// The result that was kept (the first one), when the step is still stored.
    pub stored_value: Option<Value>,
    /// The later result, discarded.
    pub value: Value,
    pub received_at: i64,
}

/// An event sluice itself emitted on behalf of a run (`source_run_id`), with how many runs it triggered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmittedEvent {
    pub event: EventRecord,
    pub run_count: i64,
}

/// A node's last heartbeat, from the `nodes` table when the store has one (multi-node PostgreSQL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHeartbeat {
    pub id: String,
    pub heartbeat_at: i64,
}

/// An admission guard key as stored (idempotency, singleton, rate limit slots).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardRecord {
    pub key: String,
    pub run_id: String,
    pub expires_at: i64,
    pub release_on_end: bool,
}

/// Everything the doctor checks, read in one transaction so the parts agree with each other.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DiagSnapshot {
    pub apps: Vec<AppRecord>,
    pub functions: Vec<FunctionRecord>,
    /// Runs not ended (Queued, Running, PausedUnreachable).
    pub active_runs: Vec<RunRecord>,
    /// Every queue item (calls, timers, pause matching), with its lease.
    pub items: Vec<QueueItem>,
    pub pauses: Vec<PauseRecord>,
    /// Progress of the runs in `active_runs`.
    pub progress: Vec<RunProgress>,
    /// Ended runs missing a finish event (at most `limit`).
    pub unfinalized: Vec<UnfinalizedRun>,
    pub duplicates: Vec<StepDuplicate>,
    /// `sendEvent` steps stored at or after `since` (their values name the events sent).
    pub sent: Vec<StepRecord>,
    /// Events emitted by runs (`source_run_id` set) at or after `since`, except sluice's own
    /// `inngest/*` lifecycle events.
    pub emitted: Vec<EmittedEvent>,
    pub guards: Vec<GuardRecord>,
    /// None when the store has no `nodes` table (single-node SQLite).
    pub nodes: Option<Vec<NodeHeartbeat>>,
}

/// One repair the doctor carried out (or found already done), as stored in its audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub at: i64,
    /// Who ran it (`user@host`).
    pub actor: String,
    /// The command line, e.g. `sluice doctor --fix --apply`.
    pub command: String,
    pub finding_code: String,
    /// What was repaired: a run id, a queue item id, an event id, a Redis key.
    pub subject: String,
    /// `redrive`, `release_lease`, `delete_claim`, `reemit_event`, `emit_finish_events`, `cancel_run`, …
    pub action: String,
    /// `applied`, `noop` (already done) or `failed`.
    pub outcome: String,
    /// Same key, same repair: applying it twice is recognised.
    pub idempotency_key: String,
    /// Evidence, before and after.
    pub detail: Value,
    /// How to undo it, when it can be undone.
    pub undo: Option<Value>,
}

/// A copy of the state taken before a bulk repair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupInfo {
    pub path: PathBuf,
    /// `sqlite-vacuum-into` (a complete, checked copy of the database) or `json-rows` (the
    /// affected runs' rows: run, steps, queue items, pauses, guards, events).
    pub kind: String,
    pub bytes: u64,
    pub runs: usize,
}

#[async_trait]
pub trait Diagnostics: Send + Sync + 'static {
    /// One consistent read of everything the doctor checks. `since` bounds the event and
    /// `sendEvent` scans; `limit` caps each list that could grow with history.
    async fn diagnostic_snapshot(&self, since: i64, limit: usize) -> Result<DiagSnapshot>;
    /// Events whose `source_run_id` is one of these runs.
    async fn events_from_runs(&self, run_ids: &[String]) -> Result<Vec<EventRecord>>;
    /// Events named `name` received at or after `since`, oldest first.
    async fn events_named_since(&self, name: &str, since: i64, limit: usize) -> Result<Vec<EventRecord>>;
    /// Whether a memoized step value carries this event id (an event that resolved a `waitForEvent`).
    async fn event_consumed_by_step(&self, event_id: &str) -> Result<bool>;
    /// Release one lease, only if `owner` still holds it with this expiry. Returns whether it did.
    async fn release_lease(&self, item_id: &str, owner: &str, expires_at: Option<i64>) -> Result<bool>;
    /// Delete an admission guard key, only if this run still holds it. Returns whether it did.
    async fn release_guard(&self, key: &str, run_id: &str) -> Result<bool>;
    async fn record_audit(&self, entry: AuditEntry) -> Result<()>;
    /// Newest first.
    async fn list_audit(&self, limit: usize) -> Result<Vec<AuditEntry>>;
    /// Entries with this idempotency key, oldest first.
    async fn audit_for_key(&self, key: &str) -> Result<Vec<AuditEntry>>;
    /// Back up before a bulk repair of `run_ids`, into a new file in `dir`, and check the copy.
    async fn backup(&self, dir: &Path, run_ids: &[String], now: i64) -> Result<BackupInfo>;
}

/// The ids a `sendEvent` step's stored value names: `{"data":{"ids":[…]}}` (JS) or
/// `{"data":[…]}` (Python returns the list itself).
pub fn sent_event_ids(value: &Value) -> Vec<String> {
    let data = &value["data"];
    let list = data.get("ids").unwrap_or(data);
    list.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
}

/// Whether a stored step is a `sendEvent`: by its name, or by the JS result shape.
pub fn is_send_event_step(step: &StepRecord) -> bool {
    step.name.as_deref().is_some_and(|n| SEND_EVENT_STEP_NAMES.contains(&n))
        || step.value.pointer("/data/ids").is_some_and(Value::is_array)
}

/// The file name of a backup taken before a bulk repair at `now`.
pub fn backup_file_name(prefix: &str, now: i64, ext: &str) -> String {
    format!("{prefix}.pre-sweep-{now}.{ext}")
}

/// The id and heartbeat columns of a `nodes` table, if it has both.
pub fn node_columns(columns: &[String]) -> Option<(&'static str, &'static str)> {
    let has = |c: &str| columns.iter().any(|x| x == c);
    let id = ["id", "node_id"].into_iter().find(|c| has(c))?;
    let heartbeat = ["heartbeat_at", "last_heartbeat_at", "last_heartbeat", "last_seen_at", "heartbeat", "seen_at"]
        .into_iter()
        .find(|c| has(c))?;
    Some((id, heartbeat))
}

/// The finish events an ended run lacks, given which of them exist.
pub fn missing_events(status: RunStatus, finished: bool, failed: bool, cancelled: bool) -> Vec<String> {
    let mut missing = Vec::new();
    if !finished {
        missing.push(FUNCTION_FINISHED.to_string());
    }
    if status == RunStatus::Failed && !failed {
        missing.push(FUNCTION_FAILED.to_string());
    }
    if status == RunStatus::Cancelled && !cancelled {
        missing.push(FUNCTION_CANCELLED.to_string());
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sent_ids_from_js_and_python_shapes() {
        assert_eq!(sent_event_ids(&json!({"data": {"ids": ["a", "b"]}})), vec!["a", "b"]);
        assert_eq!(sent_event_ids(&json!({"data": ["c"]})), vec!["c"]);
        assert!(sent_event_ids(&json!({"data": "x"})).is_empty());
        assert!(sent_event_ids(&Value::Null).is_empty());
    }
}
