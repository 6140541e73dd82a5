//! Flow-control state: concurrency slots, throttle (GCRA) arrival times, pending debounces.
//! Each operation is one atomic read-modify-write, so several nodes on one database agree.

use async_trait::async_trait;

use crate::error::Result;

/// A concurrency limit to respect: at most `limit` holders of `key` at once.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotLimit {
    pub key: String,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PendingDebounce {
    pub key: String,
    pub function_id: String,
    pub event_id: String,
    pub first_at: i64,
    pub fire_at: i64,
}

/// A batch of events being collected for one run (`batchEvents`).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingBatch {
    pub key: String,
    /// Identifies this filling of the key (a fired batch's key starts a new one).
    pub id: String,
    pub function_id: String,
    pub event_ids: Vec<String>,
    pub max_size: u32,
    pub fire_at: i64,
}

#[async_trait]
pub trait FlowStore: Send + Sync {
    /// Add an event to the key's batch (starting one, due at `now + timeout_ms`, if none).
    /// Returns the batch after the push; it is due when full or at its fire time.
    async fn batch_push(
        &self,
        key: &str,
        function_id: &str,
        event_id: &str,
        max_size: u32,
        timeout_ms: i64,
        now: i64,
    ) -> Result<PendingBatch>;
    /// Batches that are full or past their fire time.
    async fn batch_due(&self, now: i64, limit: usize) -> Result<Vec<PendingBatch>>;
    /// Fire a batch: in one transaction remove it (if it is still the same filling) and create
    /// its run, whose `event_ids` become the batch's events. Returns whether it fired.
    async fn batch_fire(&self, key: &str, batch_id: &str, run: crate::records::NewRun) -> Result<bool>;

    /// Take one slot of every limit for `holder` until `until`, or none. Slots whose holder no
    /// longer holds a live lease, or that expired, do not count.
    async fn try_acquire_slots(&self, limits: &[SlotLimit], holder: &str, until: i64, now: i64) -> Result<bool>;
    async fn release_slots(&self, holder: &str) -> Result<()>;
    /// GCRA: reserve the next start for `key` (emission interval `interval_ms`, tolerance
    /// `tolerance_ms`); returns when the run may start (never before `now`). FIFO by call order.
    async fn throttle_reserve(&self, key: &str, interval_ms: i64, tolerance_ms: i64, now: i64) -> Result<i64>;
    /// Record `event_id` as the pending event of a debounce: the fire time moves to
    /// `min(now + period, first_at + timeout)`. Returns the new fire time.
    async fn debounce_push(
        &self,
        key: &str,
        function_id: &str,
        event_id: &str,
        period_ms: i64,
        timeout_ms: Option<i64>,
        now: i64,
    ) -> Result<i64>;
    /// Debounces due at `now`.
    async fn debounce_due(&self, now: i64, limit: usize) -> Result<Vec<PendingDebounce>>;
    /// Fire a due debounce: in one transaction, remove it (only if it still holds the same event
    /// and fire time: a newer event re-armed it otherwise) and create its run. Returns whether it fired.
    async fn debounce_fire(&self, pending: &PendingDebounce, run: crate::records::NewRun) -> Result<bool>;
    /// The earliest pending debounce fire time.
    async fn debounce_next_due(&self) -> Result<Option<i64>>;
}
