//! The sluice engine.
//!
//! ```text
//!  POST /e ─▶ ingest (match triggers) ─▶ store: event + runs + first queue items (one txn)
//!                                                  │
//!  worker: claim due items (leased) ◀──────────────┘
//!     ├─ call item: POST Call Request to the SDK ─▶ answer ─▶ transition ─▶ commit (CAS on run rev)
//!     │     └─ unreachable: short backoff, no attempt used; past the budget the app's runs park
//!     └─ wake item: sleep over ─▶ memoize null ─▶ rediscover
//!  sync: PUT the app URL ─▶ SDK registers (or answers in-band) ─▶ registry + store
//! ```

pub mod admission;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod cron;
pub mod deployments;
pub mod error;
pub mod flow;
pub mod ingest;
mod pauses;
pub mod registry;
pub mod retry;
pub mod sdk_client;
pub mod sync;
pub mod transition;
mod worker;

use std::sync::Arc;

use serde_json::Value;
use sluice_protocol::event::Event;
use sluice_protocol::ids::{new_ulid_at, seeded_event_ids};
use sluice_protocol::run::RunTransition;
use sluice_store::{Commit, CommitOutcome, Store};
use tokio::sync::Notify;

pub use clock::{Clock, OffsetClock, SharedClock, SystemClock};
pub use config::EngineConfig;
pub use error::EngineError;
pub use registry::Registry;

use ingest::{finish_events, ingest_item, FinishOutcome};

pub struct Engine {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub config: EngineConfig,
    pub clock: SharedClock,
    pub client: sdk_client::SdkClient,
    /// Woken whenever new queue work is written, so the worker does not wait for its next poll.
    work: Notify,
    /// URLs given with `-u` (dev) that are synced at start and re-synced while unreachable.
    pub(crate) watched_urls: std::sync::Mutex<Vec<String>>,
    /// Normalised URLs being synced as staged deployments (not activated on register).
    /// Woken when a batch may have filled up.
    batch_wake: Notify,
    pub(crate) staged_urls: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The last register per normalised URL, so a sync can confirm what the SDK registered.
    pub(crate) recent_syncs: std::sync::Mutex<std::collections::HashMap<String, (sync::RegisterReply, i64)>>,
}

/// What `ingest_events` did with one request.
#[derive(Debug, Clone)]
pub struct IngestResult {
    pub ids: Vec<String>,
    pub run_ids: Vec<Vec<String>>,
}

impl Engine {
    pub async fn new(
        store: Arc<dyn Store>,
        config: EngineConfig,
        clock: SharedClock,
    ) -> Result<Arc<Engine>, EngineError> {
        let engine = Arc::new(Engine {
            client: sdk_client::SdkClient::new(config.clone(), clock.clone()),
            store,
            registry: Registry::default(),
            config,
            clock,
            work: Notify::new(),
            watched_urls: Default::default(),
            staged_urls: Default::default(),
            batch_wake: Notify::new(),
            recent_syncs: Default::default(),
        });
        engine.load_registry().await?;
        Ok(engine)
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    async fn load_registry(&self) -> Result<(), EngineError> {
        for d in self.store.list_deployments(None).await? {
            self.registry.put_deployment(d);
        }
        for (app_id, policy) in self.store.routing_policies().await? {
            if let Ok(p) = serde_json::from_value(Value::String(policy)) {
                self.registry.set_policy(&app_id, p);
            }
        }
        let functions = self.store.list_functions().await?;
        for app in self.store.list_apps().await? {
            let mut compiled = Vec::new();
            for f in functions.iter().filter(|f| f.app_id == app.id) {
                match self.registry.compile(f.clone()) {
                    Ok(c) => compiled.push(c),
                    Err(e) => tracing::warn!(function = %f.id, error = %e, "stored function no longer compiles"),
                }
            }
            self.registry.install_app(app, compiled);
        }
        Ok(())
    }

    pub fn notify_work(&self) {
        self.work.notify_one();
    }

    /// Validate, store and fan out a batch of raw events. All or nothing: one invalid event
    /// rejects the request and stores none of it. Returns once the write is durable.
    pub async fn ingest_events(&self, raw: Vec<Value>, id_seed: Option<&str>) -> Result<IngestResult, EngineError> {
        let now = self.now();
        let mut events = Vec::with_capacity(raw.len());
        for value in raw {
            events.push(Event::from_json(value, now, self.config.max_event_bytes)?);
        }
        let ids = id_seed
            .and_then(|seed| seeded_event_ids(seed, events.len()))
            .unwrap_or_else(|| (0..events.len()).map(|_| new_ulid_at(now as u64)).collect());
        let items: Vec<_> =
            events.into_iter().zip(ids).map(|(event, id)| ingest_item(&self.registry, event, id, now, None)).collect();
        self.cancel_replaced_singletons(&items).await?;
        let mut items = items;
        let debounces = flow::shape_runs(self, &mut items).await?;
        let outcomes = self.store.ingest(items).await?;
        // Debounces and batches are recorded once their events are durable; a duplicate event
        // re-arms nothing.
        let mut batched = false;
        for deferred in debounces {
            match deferred {
                flow::Deferred::Debounce { key, function_id, event_id, period, timeout } => {
                    if outcomes.iter().any(|o| o.event_id == event_id && !o.duplicate) {
                        self.store.debounce_push(&key, &function_id, &event_id, period, timeout, now).await?;
                    }
                }
                flow::Deferred::Batch { key, function_id, event_id, max_size, timeout } => {
                    if outcomes.iter().any(|o| o.event_id == event_id && !o.duplicate) {
                        self.store.batch_push(&key, &function_id, &event_id, max_size, timeout, now).await?;
                        batched = true;
                    }
                }
            }
        }
        if batched {
            self.batch_wake.notify_one();
        }
        self.notify_work();
        Ok(IngestResult {
            ids: outcomes.iter().map(|o| o.event_id.clone()).collect(),
            run_ids: outcomes.into_iter().map(|o| o.run_ids).collect(),
        })
    }

    /// `singleton: {mode: "cancel"}`: a new run replaces the active one with the same key, which is
    /// cancelled (emitting its cancel events) before the new run takes the key.
    async fn cancel_replaced_singletons(&self, items: &[sluice_store::IngestItem]) -> Result<(), EngineError> {
        for item in items {
            let event = item.record.event.to_sdk_json(&item.record.id);
            for new_run in &item.runs {
                let Some(f) = self.registry.function(&new_run.run.function_id) else { continue };
                let Some((key, admission::SingletonMode::Cancel)) =
                    admission::singleton(self.registry.exprs(), f.config(), &event)
                else {
                    continue;
                };
                if let Some(holder) = self.store.guard_holder(&key, self.now()).await? {
                    match self.cancel_run(&holder).await {
                        Ok(()) | Err(EngineError::RunEnded(_)) | Err(EngineError::RunNotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Cancel a run: it makes no further calls, and `function.finished` / `function.cancelled` are emitted.
    pub async fn cancel_run(&self, run_id: &str) -> Result<(), EngineError> {
        loop {
            let run = self.store.get_run(run_id).await?.ok_or_else(|| EngineError::RunNotFound(run_id.to_string()))?;
            let Some(next) = run.status.apply(RunTransition::Cancel) else {
                return Err(EngineError::RunEnded(run_id.to_string()));
            };
            let now = self.now();
            let mut updated = run.clone();
            updated.status = next;
            updated.ended_at = Some(now);
            updated.updated_at = now;
            updated.parked_reason = None;
            let events = self.trigger_events(&run).await?;
            let emit = finish_events(&self.registry, &updated, &events, &FinishOutcome::Cancelled, now);
            let outcome = self
                .store
                .commit(Commit {
                    run_id: run.id.clone(),
                    expected_rev: run.rev,
                    run: Some(updated),
                    clear_items: true,
                    emit,
                    ..Default::default()
                })
                .await?;
            if outcome != CommitOutcome::Conflict {
                self.notify_work();
                return Ok(());
            }
        }
    }

    /// The run's trigger events as the SDK sees them.
    pub(crate) async fn trigger_events(&self, run: &sluice_store::RunRecord) -> Result<Vec<Value>, EngineError> {
        Ok(self.store.get_events(&run.event_ids).await?.into_iter().map(|e| e.event.to_sdk_json(&e.id)).collect())
    }

    /// Start the background loops: the queue worker and the app re-sync loop.
    pub fn spawn(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(worker::run_worker(self.clone())),
            tokio::spawn(sync::run_resync_loop(self.clone())),
            tokio::spawn(cluster::run(self.clone())),
            tokio::spawn(run_debounce_loop(self.clone())),
        ]
    }
}

/// Fires debounces and batches when they come due (they live in their own tables, not the queue,
/// because each new event moves or fills them).
async fn run_debounce_loop(engine: Arc<Engine>) {
    loop {
        if let Err(e) = flow::fire_due_debounces(&engine).await {
            tracing::warn!(code = e.code(), error = %e, "firing debounces failed; retrying");
        }
        if let Err(e) = flow::fire_due_batches(&engine).await {
            tracing::warn!(code = e.code(), error = %e, "firing batches failed; retrying");
        }
        let wait = match engine.store.debounce_next_due().await {
            Ok(Some(at)) => (at - engine.now()).clamp(20, 250),
            _ => 250,
        };
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(wait as u64)) => {}
            _ = engine.batch_wake.notified() => {}
        }
    }
}
