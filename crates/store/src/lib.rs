//! Durable state behind one trait.
//!
//! ```text
//!   engine / api ──▶ dyn Store ──▶ SqliteStore (default, WAL, one writer)
//!                              └─▶ PostgresStore (same schema; several nodes, one database)
//! ```
//! The trait speaks in domain records only; no SQL type leaks out. Every method that changes a run
//! does so in one transaction, so a `kill -9` leaves either the old state or the new one.

pub mod cluster;
#[cfg(test)]
mod conformance;
pub mod deployments;
pub mod diagnostics;
pub mod error;
pub mod flow;
pub mod postgres;
pub mod records;
pub mod sqlite;

use async_trait::async_trait;

pub use cluster::{Cluster, NodeRecord, StepDuplicate, SweepOutcome, WorkSignal, WorkSignals};
pub use deployments::{DeploymentRecord, DeploymentStore};
pub use diagnostics::Diagnostics;
pub use error::{Result, StoreError};
pub use flow::{FlowStore, PendingBatch, PendingDebounce, SlotLimit};
pub use postgres::{PgOptions, PostgresStore};
pub use records::*;
pub use sqlite::SqliteStore;

#[async_trait]
pub trait Store: Cluster + DeploymentStore + FlowStore + Send + Sync + 'static {
    /// Replace an app and its function set. Returns whether the config hash changed.
    async fn upsert_app(&self, app: AppRecord, functions: Vec<FunctionRecord>) -> Result<bool>;
    async fn set_app_status(&self, app_id: &str, status: AppStatus, error: Option<String>, now: i64) -> Result<()>;
    async fn list_apps(&self) -> Result<Vec<AppRecord>>;
    async fn list_functions(&self) -> Result<Vec<FunctionRecord>>;

    /// Store events and the runs they trigger, atomically and durably, before anyone is told.
    async fn ingest(&self, items: Vec<IngestItem>) -> Result<Vec<IngestOutcome>>;
    async fn get_event(&self, id: &str) -> Result<Option<EventRecord>>;
    async fn get_events(&self, ids: &[String]) -> Result<Vec<EventRecord>>;
    async fn list_events(&self, name: Option<&str>, limit: usize) -> Result<Vec<EventRecord>>;

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>>;
    async fn runs_for_event(&self, event_id: &str) -> Result<Vec<RunRecord>>;
    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>>;
    async fn get_steps(&self, run_id: &str) -> Result<Vec<StepRecord>>;
    async fn items_for_run(&self, run_id: &str) -> Result<Vec<QueueItem>>;

    /// Lease up to `limit` due, unparked, unleased items to `owner` until `lease_until`.
    async fn claim_due(&self, now: i64, owner: &str, lease_until: i64, limit: usize) -> Result<Vec<QueueItem>>;
    /// When the next unparked item becomes due (leased items count at their lease expiry).
    async fn next_due_at(&self) -> Result<Option<i64>>;
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome>;

    async fn get_pause(&self, id: &str) -> Result<Option<PauseRecord>>;
    /// Pauses waiting for events of this name.
    async fn pauses_for_event(&self, event_name: &str) -> Result<Vec<PauseRecord>>;
    async fn pauses_for_run(&self, run_id: &str) -> Result<Vec<PauseRecord>>;

    /// The run holding a guard key, if it is held and not expired.
    async fn guard_holder(&self, key: &str, now: i64) -> Result<Option<String>>;

    /// Drop every lease (single-node start-up: no other process can hold one).
    async fn release_all_leases(&self) -> Result<u64>;
    /// Park or unpark every queued item of an app's runs, and move those runs to or from
    /// `PausedUnreachable`. Returns the number of runs changed.
    async fn park_app(&self, app_id: &str, reason: &str, now: i64) -> Result<u64>;
    async fn unpark_app(&self, app_id: &str, now: i64) -> Result<u64>;
}
