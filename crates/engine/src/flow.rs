//! Flow control around runs: concurrency (slots held by executing steps), throttle (GCRA on run
//! starts, excess delayed FIFO), debounce (the last event wins), priority (earlier scheduling).

use std::sync::Arc;

use serde_json::Value;
use sluice_expr::Vars;
use sluice_protocol::duration::parse_duration;
use sluice_protocol::function::FunctionConfig;
use sluice_store::{NewRun, SlotLimit};

use crate::admission::eval_key;
use crate::error::EngineError;
use crate::Engine;

/// The concurrency limits a call of `config` must respect: a number, an object, or up to two
/// `{limit, key?, scope?: fn|env|account}`. A key's value is shared across functions for the
/// `env` and `account` scopes.
pub fn concurrency_limits(engine: &Engine, config: &FunctionConfig, event: &Value) -> Vec<SlotLimit> {
    let Some(spec) = config.extra.get("concurrency") else { return vec![] };
    let entries: Vec<Value> = match spec {
        Value::Number(n) => vec![serde_json::json!({ "limit": n })],
        Value::Object(_) => vec![spec.clone()],
        Value::Array(items) => items.iter().take(2).cloned().collect(),
        _ => vec![],
    };
    entries
        .iter()
        .filter_map(|e| {
            let limit = e.get("limit")?.as_u64()? as u32;
            if limit == 0 {
                return None;
            }
            let key = eval_key(engine.registry.exprs(), e.get("key").and_then(Value::as_str), event)?;
            let scope = e.get("scope").and_then(Value::as_str).unwrap_or("fn");
            let key = match scope {
                "env" | "account" => format!("conc\0{scope}\0{key}"),
                _ => format!("conc\0fn\0{}\0{key}", config.id),
            };
            Some(SlotLimit { key, limit })
        })
        .collect()
}

/// When a new run of `config` may start under its throttle (now, or later; never dropped).
pub async fn throttled_start(
    engine: &Engine,
    config: &FunctionConfig,
    event: &Value,
    now: i64,
) -> Result<Option<i64>, EngineError> {
    let Some(t) = config.extra.get("throttle") else { return Ok(None) };
    let limit = t.get("limit").and_then(Value::as_u64).unwrap_or(0).max(1) as i64;
    let Some(period) = t.get("period").and_then(Value::as_str).and_then(|p| parse_duration(p).ok()) else {
        return Ok(None);
    };
    let burst = t.get("burst").and_then(Value::as_u64).unwrap_or(1).max(1) as i64;
    let Some(key) = eval_key(engine.registry.exprs(), t.get("key").and_then(Value::as_str), event) else {
        return Ok(None);
    };
    // GCRA: `limit` starts per `period` are one per `interval`; `burst` of them may start at once.
    let interval = (period / limit).max(1);
    let tolerance = interval * (burst - 1);
    let start = engine.store.throttle_reserve(&format!("thr\0{}\0{key}", config.id), interval, tolerance, now).await?;
    Ok(Some(start))
}

/// `priority.run`: an offset in seconds (±600) by which the run is scheduled earlier.
pub fn priority_offset_ms(engine: &Engine, config: &FunctionConfig, event: &Value) -> i64 {
    let Some(src) = config.extra.get("priority").and_then(|p| p.get("run")).and_then(Value::as_str) else {
        return 0;
    };
    let Ok(expr) = engine.registry.exprs().get(src) else { return 0 };
    expr.eval_int(&Vars { event: Some(event), ..Default::default() }).unwrap_or(0).clamp(-600, 600) * 1000
}

/// The debounce of `config` for `event`: (key, period, timeout).
pub fn debounce_spec(engine: &Engine, config: &FunctionConfig, event: &Value) -> Option<(String, i64, Option<i64>)> {
    let d = config.extra.get("debounce")?;
    let period = parse_duration(d.get("period")?.as_str()?).ok()?;
    let timeout = d.get("timeout").and_then(Value::as_str).and_then(|t| parse_duration(t).ok());
    let key = eval_key(engine.registry.exprs(), d.get("key").and_then(Value::as_str), event)?;
    Some((format!("deb\0{}\0{key}", config.id), period, timeout))
}

/// `batchEvents`: (key, max size, timeout) when this event joins a batch (its `if`, when set, holds).
pub fn batch_spec(engine: &Engine, config: &FunctionConfig, event: &Value) -> Option<(String, u32, i64)> {
    let b = config.extra.get("batchEvents")?;
    let max_size = b.get("maxSize").and_then(Value::as_u64)?.clamp(1, 10_000) as u32;
    let timeout = b.get("timeout").and_then(Value::as_str).and_then(|t| parse_duration(t).ok()).unwrap_or(60_000);
    if let Some(cond) = b.get("if").and_then(Value::as_str) {
        let matches = engine
            .registry
            .exprs()
            .get(cond)
            .map(|e| e.matches(&Vars { event: Some(event), ..Default::default() }))
            .unwrap_or(false);
        if !matches {
            return None;
        }
    }
    let key = eval_key(engine.registry.exprs(), b.get("key").and_then(Value::as_str), event)?;
    Some((format!("batch\0{}\0{key}", config.id), max_size, timeout))
}

/// Runs held back from creation: they start later, from the stored event.
pub enum Deferred {
    Debounce { key: String, function_id: String, event_id: String, period: i64, timeout: Option<i64> },
    Batch { key: String, function_id: String, event_id: String, max_size: u32, timeout: i64 },
}

/// Apply throttle, priority, debounce and batching to freshly built runs before they are stored.
/// Debounced and batched runs are taken out and recorded once their event is stored.
pub async fn shape_runs(engine: &Engine, items: &mut [sluice_store::IngestItem]) -> Result<Vec<Deferred>, EngineError> {
    let now = engine.now();
    let mut debounces = Vec::new();
    for item in items.iter_mut() {
        let event = item.record.event.to_sdk_json(&item.record.id);
        let mut kept: Vec<NewRun> = Vec::with_capacity(item.runs.len());
        for mut new_run in item.runs.drain(..) {
            let Some(f) = engine.registry.function(&new_run.run.function_id) else {
                kept.push(new_run);
                continue;
            };
            let config = f.config();
            if let Some((key, period, timeout)) = debounce_spec(engine, config, &event) {
                let (function_id, event_id) = (config.id.clone(), item.record.id.clone());
                debounces.push(Deferred::Debounce { key, function_id, event_id, period, timeout });
                continue;
            }
            if let Some((key, max_size, timeout)) = batch_spec(engine, config, &event) {
                let (function_id, event_id) = (config.id.clone(), item.record.id.clone());
                debounces.push(Deferred::Batch { key, function_id, event_id, max_size, timeout });
                continue;
            }
            if let Some(start) = throttled_start(engine, config, &event, now).await? {
                new_run.first_item.available_at = new_run.first_item.available_at.max(start);
            }
            new_run.first_item.available_at -= priority_offset_ms(engine, config, &event);
            kept.push(new_run);
        }
        item.runs = kept;
    }
    Ok(debounces)
}

/// Fire every due debounce: one run, carrying the last event.
pub async fn fire_due_debounces(engine: &Arc<Engine>) -> Result<usize, EngineError> {
    let now = engine.now();
    let mut fired = 0;
    for pending in engine.store.debounce_due(now, 100).await? {
        let Some(f) = engine.registry.function(&pending.function_id) else {
            continue;
        };
        let Some(event) = engine.store.get_event(&pending.event_id).await? else { continue };
        let new_run = crate::ingest::new_run(&engine.registry, &f, &event.event.to_sdk_json(&event.id), &event.id, now);
        if engine.store.debounce_fire(&pending, new_run).await? {
            fired += 1;
        }
    }
    if fired > 0 {
        engine.notify_work();
    }
    Ok(fired)
}

/// Fire every batch that is full or past its timeout: one run with all its events.
pub async fn fire_due_batches(engine: &Arc<Engine>) -> Result<usize, EngineError> {
    let now = engine.now();
    let mut fired = 0;
    for batch in engine.store.batch_due(now, 100).await? {
        let Some(f) = engine.registry.function(&batch.function_id) else { continue };
        let Some(first) = batch.event_ids.first() else { continue };
        let Some(event) = engine.store.get_event(first).await? else { continue };
        let new_run = crate::ingest::new_run(&engine.registry, &f, &event.event.to_sdk_json(&event.id), &event.id, now);
        if engine.store.batch_fire(&batch.key, &batch.id, new_run).await? {
            fired += 1;
        }
    }
    if fired > 0 {
        engine.notify_work();
    }
    Ok(fired)
}
