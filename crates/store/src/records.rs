//! The shapes the store persists. Timestamps are unix milliseconds.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_protocol::event::Event;
use sluice_protocol::function::FunctionConfig;
use sluice_protocol::run::RunStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppStatus {
    /// Synced and answering.
    Synced,
    /// The last call or sync attempt could not reach it.
    Unreachable,
}

impl AppStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            AppStatus::Synced => "Synced",
            AppStatus::Unreachable => "Unreachable",
        }
    }
    pub fn parse(s: &str) -> AppStatus {
        match s {
            "Synced" => AppStatus::Synced,
            _ => AppStatus::Unreachable,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRecord {
    pub id: String,
    pub url: String,
    pub normalized_url: String,
    pub framework: Option<String>,
    pub sdk: Option<String>,
    pub deploy_id: Option<String>,
    pub app_version: Option<String>,
    pub config_hash: String,
    pub status: AppStatus,
    pub last_error: Option<String>,
    pub synced_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub id: String,
    pub app_id: String,
    pub name: String,
    pub config: FunctionConfig,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    /// sluice's id (a ULID).
    pub id: String,
    pub event: Event,
    pub received_at: i64,
    pub source_run_id: Option<String>,
}

/// What a run carries between calls besides its memoized steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Execution version adopted from the SDK's first answer (`X-Inngest-Req-Version`).
    pub req_version: Option<i32>,
    /// Send `disable_immediate_execution: true` (V2 parallel steps are outstanding).
    pub force_step_plan: bool,
    /// Planned parallel steps not yet stored; discovery waits until it is empty.
    pub pending: Vec<String>,
    /// The pending group is a `parallelMode: race`: rediscover after each step.
    pub race: bool,
    pub max_attempts: u32,
    /// The deployment the run is pinned to (its app's current deployment when it was created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// `timeouts.finish`: the run is cancelled this long after it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_timeout_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub function_id: String,
    pub app_id: String,
    pub event_id: String,
    pub event_ids: Vec<String>,
    pub status: RunStatus,
    pub state: RunState,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub parked_reason: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub updated_at: i64,
    /// Bumped on every write; commits compare-and-set on it.
    pub rev: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub run_id: String,
    pub step_id: String,
    pub seq: i64,
    pub name: Option<String>,
    /// `{"data": …}`, `{"error": …}`, `null`, or a raw event: exactly what the SDK gets back.
    pub value: Value,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemKind {
    /// POST a Call Request (`stepId` = `step` for discovery, or a planned step's id).
    Call,
    /// A durable sleep timer: when due, the step is stored as `null` and the run rediscovered.
    Wake,
    /// A pause's deadline (`step_id` holds the pause id): when due and the pause still exists,
    /// it resolves with its timeout value.
    PauseTimeout,
    /// Match a newly stored event against pauses (`run_id` holds the event id).
    MatchPauses,
    /// The run's `timeouts.start` / `timeouts.finish` deadline (`step_id` says which).
    RunTimeout,
    /// A cron trigger's next tick (`run_id` = `cron:<function id>`, `step_id` = the cron string).
    CronTick,
}

impl ItemKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ItemKind::Call => "call",
            ItemKind::Wake => "wake",
            ItemKind::PauseTimeout => "pause_timeout",
            ItemKind::MatchPauses => "match_pauses",
            ItemKind::RunTimeout => "run_timeout",
            ItemKind::CronTick => "cron_tick",
        }
    }
    pub fn parse(s: &str) -> Option<ItemKind> {
        match s {
            "call" => Some(ItemKind::Call),
            "wake" => Some(ItemKind::Wake),
            "pause_timeout" => Some(ItemKind::PauseTimeout),
            "match_pauses" => Some(ItemKind::MatchPauses),
            "run_timeout" => Some(ItemKind::RunTimeout),
            "cron_tick" => Some(ItemKind::CronTick),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PauseKind {
    /// `step.waitForEvent`: resolves with the matching event, or `null` at its timeout.
    WaitForEvent,
    /// `step.invoke`: resolves with the child's result, or an `InngestInvokeTimeoutError`.
    Invoke,
    /// `cancelOn`: a matching event cancels the run.
    CancelOn,
}

impl PauseKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PauseKind::WaitForEvent => "wait",
            PauseKind::Invoke => "invoke",
            PauseKind::CancelOn => "cancel",
        }
    }
    pub fn parse(s: &str) -> Option<PauseKind> {
        match s {
            "wait" => Some(PauseKind::WaitForEvent),
            "invoke" => Some(PauseKind::Invoke),
            "cancel" => Some(PauseKind::CancelOn),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseRecord {
    pub id: String,
    pub run_id: String,
    pub kind: PauseKind,
    /// The step the pause resolves (wait / invoke); none for cancelOn.
    pub step_id: Option<String>,
    pub event_name: String,
    /// CEL over `event` (the run's trigger event) and `async` (the candidate event).
    pub expression: Option<String>,
    /// Exact-match shortcut: invoke waits for `data.correlation_id` equal to this.
    pub match_key: Option<String>,
    /// The run's trigger event as the SDK sees it (the `event` variable).
    pub trigger_event: Value,
    pub expires_at: i64,
    pub created_at: i64,
}

/// Keys a new run must acquire to be admitted (idempotency, singleton, rate limit): the first of
/// `keys` that is free (unheld, or held past its expiry) is taken. None free: the run is skipped.
/// A rate limit of N per period is N slot keys each held for the period after use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunGuard {
    pub keys: Vec<String>,
    pub expires_at: i64,
    /// Released when the run ends (singleton) rather than only at expiry (idempotency).
    pub release_on_end: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueItem {
    pub id: String,
    pub run_id: String,
    pub kind: ItemKind,
    pub step_id: String,
    /// Zero-based attempt of this item (the SDK's `ctx.attempt`).
    pub attempt: u32,
    pub available_at: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    /// Consecutive failures to reach the SDK; these do not consume `attempt`s.
    pub unreachable_count: u32,
    pub unreachable_since: Option<i64>,
    /// Held back because its app is unreachable past the budget.
    pub parked: bool,
    pub created_at: i64,
}

impl QueueItem {
    /// A fresh, unleased item at its first attempt.
    pub fn new(
        id: String,
        run_id: &str,
        kind: ItemKind,
        step_id: &str,
        available_at: i64,
        created_at: i64,
    ) -> QueueItem {
        QueueItem {
            id,
            run_id: run_id.to_string(),
            kind,
            step_id: step_id.to_string(),
            attempt: 0,
            available_at,
            lease_owner: None,
            lease_expires_at: None,
            unreachable_count: 0,
            unreachable_since: None,
            parked: false,
            created_at,
        }
    }
}

/// A new run created by an ingested event, with its first queue item.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub run: RunRecord,
    pub first_item: QueueItem,
    /// Pauses created with the run (cancelOn).
    pub pauses: Vec<PauseRecord>,
    /// Keys the run must acquire to be created.
    pub guards: Vec<RunGuard>,
    /// Other items created with the run (timeouts).
    pub extra_items: Vec<QueueItem>,
}

/// One event to ingest, with the runs it triggers (computed by the engine before the write).
#[derive(Debug, Clone)]
pub struct IngestItem {
    pub record: EventRecord,
    /// Client id deduplication key; when it was seen within 24 h the event and its runs are dropped.
    pub dedup_key: Option<String>,
    pub dedup_until: i64,
    pub runs: Vec<NewRun>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngestOutcome {
    /// The stored id: the new one, or the earlier event's for a duplicate.
    pub event_id: String,
    pub duplicate: bool,
    pub run_ids: Vec<String>,
    /// Runs not created because a guard key was held (idempotency, singleton skip).
    pub skipped_runs: Vec<String>,
}

/// An atomic change to one run: everything in it is written, or nothing.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub run_id: String,
    /// When set, the run row is replaced by this one, provided its stored `rev` equals `expected_rev`.
    pub run: Option<RunRecord>,
    pub expected_rev: i64,
    /// Step results to store; a step already stored keeps its first result.
    pub steps: Vec<StepRecord>,
    /// The queue item this commit finishes (deleted before `enqueue` is applied, so a retry can
    /// re-enqueue the same id).
    pub done_item: Option<String>,
    /// Queue items to create; an id already queued is left as it is.
    pub enqueue: Vec<QueueItem>,
    /// Drop every queue item, pause and end-released guard of the run (terminal states).
    pub clear_items: bool,
    /// Events the commit emits (finish / failure), with the runs they trigger.
    pub emit: Vec<IngestItem>,
    /// Pauses to create.
    pub new_pauses: Vec<PauseRecord>,
    /// A pause this commit resolves: it must still exist (else the commit is a `Conflict`), and is deleted.
    pub consume_pause: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutcome {
    Applied {
        duplicate_steps: Vec<String>,
    },
    /// The run changed since it was read; reload and recompute.
    Conflict,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub function_id: Option<String>,
    pub app_id: Option<String>,
    pub limit: usize,
}
