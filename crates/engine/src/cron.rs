//! Cron triggers. Each cron trigger of a current function has exactly one durable queue item, due
//! at its next tick (plus jitter). Firing stores `inngest/scheduled.timer` with a run of that
//! function and re-arms the item, in one commit.
//!
//! Exactly once: the event id is derived from (function, cron, tick), so a tick fired twice (a
//! retry after a crash, two nodes racing on a stale lease) stores one event and one run.
//! Catch-up: after downtime spanning ticks, only the latest missed tick fires (never a burst), and
//! a tick before the function was registered never fires (the item is created after it).

use std::sync::Arc;

use sha2::{Digest, Sha256};
use sluice_protocol::cron::{jitter_ms, jitter_seed, scheduled_event_data, CronSchedule};
use sluice_protocol::event::{names, Event};
use sluice_store::{Commit, ItemKind, QueueItem};

use crate::error::EngineError;
use crate::registry::RegisteredFunction;
use crate::worker::drop_item;
use crate::Engine;

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn item_id(fn_id: &str, cron: &str) -> String {
    format!("cron:{fn_id}:{}", hex::encode(&digest(cron)[..6]))
}

/// The item for the tick after `after`, or None for a schedule with no future tick.
fn next_item(fn_id: &str, cron: &str, jitter: Option<&str>, after: i64, now: i64) -> Option<QueueItem> {
    let schedule = CronSchedule::parse(cron).ok()?;
    let tick = schedule.next_after(after)?;
    let jitter = jitter_ms(jitter, &jitter_seed(fn_id, tick)).unwrap_or(0);
    Some(QueueItem::new(item_id(fn_id, cron), &format!("cron:{fn_id}"), ItemKind::CronTick, cron, tick + jitter, now))
}

/// Make sure every cron trigger of these functions has its tick item (existing ones are kept).
pub async fn ensure_items(engine: &Engine, functions: &[Arc<RegisteredFunction>]) -> Result<(), EngineError> {
    let now = engine.now();
    let mut enqueue = Vec::new();
    for f in functions {
        for t in &f.config().triggers {
            if let Some(cron) = &t.cron {
                enqueue.extend(next_item(&f.record.id, cron, t.jitter.as_deref(), now, now));
            }
        }
    }
    if !enqueue.is_empty() {
        engine.store.commit(Commit { run_id: "cron".into(), enqueue, ..Default::default() }).await?;
        engine.notify_work();
    }
    Ok(())
}

pub(crate) async fn tick(engine: &Arc<Engine>, item: &QueueItem) -> Result<(), EngineError> {
    let fn_id = item.run_id.strip_prefix("cron:").unwrap_or_default();
    let cron = item.step_id.as_str();
    // A function removed, or whose cron changed, lets its old tick item lapse. Another node may
    // have synced the change moments ago: look in the store before deciding.
    let lookup = || {
        engine.registry.function(fn_id).filter(|f| f.config().triggers.iter().any(|t| t.cron.as_deref() == Some(cron)))
    };
    if lookup().is_none() {
        crate::cluster::refresh_registry(engine).await?;
    }
    let Some(f) = lookup() else { return drop_item(engine, item).await };
    let Some(trigger) = f.config().triggers.iter().find(|t| t.cron.as_deref() == Some(cron)) else {
        return drop_item(engine, item).await;
    };
    let Ok(schedule) = CronSchedule::parse(cron) else { return drop_item(engine, item).await };
    let now = engine.now();
    let Some(scheduled_at) = schedule.last_at_or_before(now) else { return drop_item(engine, item).await };
    let mut entropy = 0u128;
    for b in &digest(&format!("{fn_id}\0{cron}"))[..10] {
        entropy = (entropy << 8) | *b as u128;
    }
    let event_id = ulid::Ulid::from_parts(scheduled_at as u64, entropy);
    let event = Event {
        name: names::SCHEDULED_TIMER.into(),
        data: scheduled_event_data(cron, scheduled_at, now),
        id: String::new(),
        ts: now,
        user: serde_json::json!({}),
        v: None,
    };
    let mut ingest = crate::ingest::ingest_item(&engine.registry, event, event_id, now, None);
    let sdk_event = ingest.record.event.to_sdk_json(&ingest.record.id);
    ingest.runs = vec![crate::ingest::new_run(&engine.registry, &f, &sdk_event, &ingest.record.id, now)];
    let next = next_item(fn_id, cron, trigger.jitter.as_deref(), scheduled_at.max(now), now);
    engine
        .store
        .commit(Commit {
            run_id: item.run_id.clone(),
            done_item: Some(item.id.clone()),
            enqueue: next.into_iter().collect(),
            emit: vec![ingest],
            ..Default::default()
        })
        .await?;
    tracing::info!(function = %fn_id, %cron, scheduled_at, "cron tick fired");
    engine.notify_work();
    Ok(())
}
