//! This node's part in a cluster of sluice nodes sharing one database.
//!
//! ```text
//!  every heartbeat_interval:
//!    heartbeat ─▶ nodes row refreshed (missing: we were declared dead; say so)
//!    sweep     ─▶ nodes silent for node_timeout: their leases released (only once this node has
//!                 itself heartbeated without a failure for node_timeout, so a database outage that
//!                 every node shared declares nobody dead)
//!    orphans   ─▶ our own leases on items no task of ours is working on (a store error mid-item,
//!                 a claim whose answer was lost in a blip) released, so they run again soon
//!                 instead of at lease expiry
//!    registry  ─▶ apps / functions / deployments changed in the store (another node synced an
//!                 app): reloaded; also before a run's unknown function is declared removed
//!  wake-ups: store work signals (PostgreSQL LISTEN sluice_work) ─▶ worker woken
//! ```
//! Lease expiry (call timeout + 60 s) stays the safety net for everything above. On SQLite the
//! same loop runs with one member and no wake-up channel.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use sluice_store::WorkSignal;

use crate::error::EngineError;
use crate::Engine;

/// A lease this recent is never taken for an orphan: its item may be between the claim and the
/// start of its task.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// Items being worked on in this process, per node id (tests run several engines in one process).
static IN_FLIGHT: LazyLock<Mutex<HashMap<String, HashMap<String, usize>>>> = LazyLock::new(Default::default);

/// Marks a queue item as being worked on by this node until dropped.
pub(crate) struct InFlight {
    node: String,
    item: String,
}

impl InFlight {
    pub(crate) fn enter(engine: &Engine, item_id: &str) -> InFlight {
        let node = engine.config.node_id.clone();
        let mut all = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        *all.entry(node.clone()).or_default().entry(item_id.to_string()).or_default() += 1;
        InFlight { node, item: item_id.to_string() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut all = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(items) = all.get_mut(&self.node) {
            if let Some(n) = items.get_mut(&self.item) {
                *n -= 1;
                if *n == 0 {
                    items.remove(&self.item);
                }
            }
            if items.is_empty() {
                all.remove(&self.node);
            }
        }
    }
}

fn in_flight(node_id: &str) -> Vec<String> {
    let all = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    all.get(node_id).map(|items| items.keys().cloned().collect()).unwrap_or_default()
}

/// The registry version each node (of this process) last loaded.
static REGISTRY_VERSIONS: LazyLock<Mutex<HashMap<String, Vec<i64>>>> = LazyLock::new(Default::default);

/// Reload the in-memory registry when another node changed apps, functions or deployments in the
/// store since this node last looked. Returns whether it reloaded.
pub(crate) async fn refresh_registry(engine: &Engine) -> Result<bool, EngineError> {
    let node = &engine.config.node_id;
    // Read before loading: a change racing the load is seen (again) next time, never missed.
    let version = engine.store.registry_version().await?;
    let known = REGISTRY_VERSIONS.lock().unwrap_or_else(|p| p.into_inner()).get(node) == Some(&version);
    if known {
        return Ok(false);
    }
    engine.load_registry().await?;
    REGISTRY_VERSIONS.lock().unwrap_or_else(|p| p.into_inner()).insert(node.clone(), version);
    Ok(true)
}

/// A run whose function this node does not know may have been created from a sync on another node
/// moments ago: look in the store before the worker declares the function removed.
pub(crate) async fn know_function_of(engine: &Engine, run: &sluice_store::RunRecord) {
    if engine.registry.function_for_run(run).is_none() {
        if let Err(e) = refresh_registry(engine).await {
            tracing::warn!(code = e.code(), error = %e, "reloading the function registry failed");
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Register this node before it claims anything, so even a crash right after start is swept.
pub async fn join(engine: &Engine) -> Result<(), EngineError> {
    let now = engine.now();
    engine.store.heartbeat(&engine.config.node_id, now, now).await?;
    Ok(())
}

/// A clean shutdown: release this node's leases (the other nodes take the work at once) and
/// forget it. Returns how many leases were released.
pub async fn leave(engine: &Engine) -> Result<u64, EngineError> {
    Ok(engine.store.leave(&engine.config.node_id).await?)
}

/// The cluster loops; started by `Engine::spawn`.
pub(crate) async fn run(engine: Arc<Engine>) {
    tokio::join!(heartbeats(engine.clone()), wake_ups(engine));
}

async fn heartbeats(engine: Arc<Engine>) {
    let node = engine.config.node_id.clone();
    let timeout = ms(engine.config.node_timeout);
    let started_at = engine.now();
    let mut registered = false;
    // Since when every heartbeat of ours has succeeded; None right after a failure.
    let mut healthy_since: Option<i64> = None;
    let mut ticker = tokio::time::interval(engine.config.heartbeat_interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = engine.now();
        match engine.store.heartbeat(&node, started_at, now).await {
            Ok(known) => {
                if !known && registered {
                    tracing::warn!(
                        node = %node,
                        "another node declared this one dead (no heartbeat for {:?}) and released its leases; \
                         work this node had in flight may have run elsewhere too, and only the first result is kept",
                        engine.config.node_timeout
                    );
                }
                registered = true;
                if healthy_since.is_none() {
                    tracing::debug!(node = %node, "heartbeating");
                }
                healthy_since.get_or_insert(now);
            }
            Err(e) => {
                if healthy_since.is_some() || !registered {
                    tracing::warn!(node = %node, code = e.code(), error = %e, "heartbeat failed; retrying");
                }
                healthy_since = None;
                continue;
            }
        }
        if healthy_since.is_some_and(|since| now - since >= timeout) {
            match engine.store.sweep_dead_nodes(now - timeout).await {
                Ok(swept) if !swept.dead_nodes.is_empty() => {
                    tracing::info!(
                        nodes = ?swept.dead_nodes,
                        released = swept.released,
                        "nodes stopped heartbeating; released their leases so their work runs here or elsewhere"
                    );
                    if swept.released > 0 {
                        engine.notify_work();
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(code = e.code(), error = %e, "sweeping dead nodes failed; retrying"),
            }
        }
        release_orphans(&engine, now).await;
        match refresh_registry(&engine).await {
            Ok(true) => tracing::debug!("function registry reloaded: apps or functions changed in the store"),
            Ok(false) => {}
            Err(e) => tracing::warn!(code = e.code(), error = %e, "reloading the function registry failed"),
        }
    }
}

async fn release_orphans(engine: &Engine, now: i64) {
    let node = &engine.config.node_id;
    // The worker leases until now + call timeout + 60 s: a lease ending before this bound was
    // taken more than ORPHAN_GRACE ago.
    let bound =
        now.saturating_add(ms(engine.config.call_timeout).saturating_add(60_000).saturating_sub(ms(ORPHAN_GRACE)));
    match engine.store.release_orphaned_leases(node, &in_flight(node), bound).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(released = n, "released leases on items this node is no longer working on; they run again");
            engine.notify_work();
        }
        Err(e) => tracing::warn!(code = e.code(), error = %e, "releasing orphaned leases failed; retrying"),
    }
}

async fn wake_ups(engine: Arc<Engine>) {
    let Some(mut signals) = engine.store.work_signals() else { return };
    let mut lost = false;
    while let Some(signal) = signals.recv().await {
        match signal {
            WorkSignal::Work => {
                if std::mem::take(&mut lost) {
                    tracing::info!("wake-up listener connected again");
                }
                engine.notify_work();
            }
            WorkSignal::Lost(reason) => {
                tracing::warn!(%reason, "wake-up listener lost its database connection; reconnecting (the worker keeps polling)");
                lost = true;
            }
        }
    }
}

#[cfg(test)]
mod tests;
