//! JSON views of stored records (the REST v1 shapes, plus sluice's own fields).

use serde_json::{json, Value};
use sluice_protocol::duration::format_rfc3339_ms;
use sluice_store::{AppRecord, EventRecord, RunRecord, StepRecord};

fn ts(ms: Option<i64>) -> Value {
    ms.map(|m| Value::String(format_rfc3339_ms(m))).unwrap_or(Value::Null)
}

pub fn run(r: &RunRecord) -> Value {
    json!({
        "run_id": r.id,
        "function_id": r.function_id,
        "app_id": r.app_id,
        "event_id": r.event_id,
        "event_ids": r.event_ids,
        "status": r.status.as_str(),
        "run_started_at": ts(Some(r.created_at)),
        "started_at": ts(r.started_at),
        "ended_at": ts(r.ended_at),
        "updated_at": ts(Some(r.updated_at)),
        "output": r.output,
        "error": r.error,
        "parked_reason": r.parked_reason,
        "pending_steps": r.state.pending,
    })
}

pub fn event(e: &EventRecord) -> Value {
    json!({
        "internal_id": e.id,
        "id": e.id,
        "name": e.event.name,
        "data": e.event.data,
        "ts": e.event.ts,
        "user": e.event.user,
        "client_id": if e.event.id.is_empty() { Value::Null } else { Value::String(e.event.id.clone()) },
        "received_at": ts(Some(e.received_at)),
        "source_run_id": e.source_run_id,
    })
}

pub fn step(s: &StepRecord) -> Value {
    json!({
        "step_id": s.step_id,
        "name": s.name,
        "seq": s.seq,
        "value": s.value,
        "stored_at": ts(Some(s.created_at)),
    })
}

pub fn app(a: &AppRecord, function_count: usize) -> Value {
    json!({
        "id": a.id,
        "url": a.url,
        "status": a.status.as_str(),
        "framework": a.framework,
        "sdk": a.sdk,
        "deploy_id": a.deploy_id,
        "app_version": a.app_version,
        "config_hash": a.config_hash,
        "last_error": a.last_error,
        "synced_at": ts(a.synced_at),
        "function_count": function_count,
    })
}

/// REST v1 wraps payloads as `{"data": …, "metadata": {…}}`.
pub fn wrap(data: Value, now: i64) -> Value {
    json!({ "data": data, "metadata": { "fetched_at": format_rfc3339_ms(now) } })
}
