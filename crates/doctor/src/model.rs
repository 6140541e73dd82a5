//! What the doctor reports: findings with a stable code, their evidence, and the repair.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    /// A run not ended that has made no progress past its threshold and that nothing will move:
    /// no call in flight within its lease, no future timer, no pause waiting.
    StaleRun,
    /// A lease held by a node that no longer exists (expired, the node's heartbeat is stale, or no
    /// sluice holds the SQLite file), an admission guard held by an ended run, or an application
    /// claim (Redis) whose run is finished or absent.
    OrphanedClaim,
    /// An event a run emitted that no function consumed, a triggered run that never started, or a
    /// declared chain expectation that went unmet.
    ChainBroken,
    /// A run ended without its finish events, or every step is stored and the run never finished.
    FinalizationFailed,
    /// A run parked because its app does not answer.
    PausedUnreachable,
    /// An app (deployment) that does not answer.
    UnreachableDeployment,
    /// A step whose body reported a result twice.
    DuplicateStep,
}

impl Code {
    pub fn as_str(&self) -> &'static str {
        match self {
            Code::StaleRun => "STALE_RUN",
            Code::OrphanedClaim => "ORPHANED_CLAIM",
            Code::ChainBroken => "CHAIN_BROKEN",
            Code::FinalizationFailed => "FINALIZATION_FAILED",
            Code::PausedUnreachable => "PAUSED_UNREACHABLE",
            Code::UnreachableDeployment => "UNREACHABLE_DEPLOYMENT",
            Code::DuplicateStep => "DUPLICATE_STEP",
        }
    }
    pub const ALL: [Code; 7] = [
        Code::StaleRun,
        Code::OrphanedClaim,
        Code::ChainBroken,
        Code::FinalizationFailed,
        Code::PausedUnreachable,
        Code::UnreachableDeployment,
        Code::DuplicateStep,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Work is lost or stuck until repaired.
    Error,
    /// Needs a look; may resolve by itself.
    Warning,
}

/// A repair, as data: what to do, against which state, so applying it twice is recognised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Queue a discovery call for the run (only if the run is still at `rev`): the SDK replays it
    /// from its stored steps and it moves on, or finishes.
    Redrive { run_id: String, rev: i64 },
    /// Release a queue item's lease, only if `owner` still holds it with this expiry.
    ReleaseLease { item_id: String, run_id: String, owner: String, expires_at: Option<i64> },
    /// Delete an admission guard key still held by an ended run.
    ReleaseGuard { key: String, run_id: String },
    /// Delete a Redis claim key, only if it still holds `value` (its value and TTL are kept for undo).
    DeleteClaim { redis: String, key: String, value: String },
    /// Store the event again under a deterministic id, linked to the run that emitted it, so the
    /// functions that now listen to it run.
    ReemitEvent { event_id: String, source_run_id: Option<String> },
    /// Emit the finish events an ended run lacks, under deterministic ids.
    EmitFinishEvents { run_id: String, missing: Vec<String> },
    /// Cancel the run as `DELETE /v1/runs/{id}` does (finish + cancelled events).
    CancelRun { run_id: String },
    /// Ask sluice to sync the app again (`POST /v1/apps/sync`); an answer unparks its runs.
    ResyncApp { app_id: String, url: String },
    /// Record that the finding was looked at (nothing to change: the duplicate result was discarded).
    Acknowledge,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Redrive { .. } => "redrive",
            Action::ReleaseLease { .. } => "release_lease",
            Action::ReleaseGuard { .. } => "release_guard",
            Action::DeleteClaim { .. } => "delete_claim",
            Action::ReemitEvent { .. } => "reemit_event",
            Action::EmitFinishEvents { .. } => "emit_finish_events",
            Action::CancelRun { .. } => "cancel_run",
            Action::ResyncApp { .. } => "resync_app",
            Action::Acknowledge => "acknowledge",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repair {
    #[serde(flatten)]
    pub action: Action,
    pub description: String,
    /// Whether `sluice doctor undo AUDIT_ID` can reverse it.
    pub reversible: bool,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub code: Code,
    pub severity: Severity,
    /// What kind of thing `subject` is: run, queue_item, guard, redis_key, event, app, step.
    pub subject_kind: String,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    pub message: String,
    pub evidence: Value,
    /// None: nothing the doctor can safely do; `fix` says what a person should.
    pub repair: Option<Repair>,
    pub fix: String,
}

/// What one diagnosis found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub clean: bool,
    pub checked_at: i64,
    /// Count per code (every code present, zeros included).
    pub summary: BTreeMap<String, usize>,
    pub findings: Vec<Finding>,
    /// Findings an earlier applied repair already answered (from the audit log).
    pub resolved: Vec<Value>,
    /// What was looked at.
    pub checked: Value,
}

impl Report {
    pub fn new(now: i64, findings: Vec<Finding>, resolved: Vec<Value>, checked: Value) -> Report {
        let mut summary: BTreeMap<String, usize> = Code::ALL.iter().map(|c| (c.as_str().to_string(), 0)).collect();
        for f in &findings {
            *summary.entry(f.code.as_str().to_string()).or_default() += 1;
        }
        Report { clean: findings.is_empty(), checked_at: now, summary, findings, resolved, checked }
    }

    pub fn repairs(&self) -> impl Iterator<Item = (&Finding, &Repair)> {
        self.findings.iter().filter_map(|f| f.repair.as_ref().map(|r| (f, r)))
    }
}
