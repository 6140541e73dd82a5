//! Pauses: runs waiting for an event. A stored event whose name has pauses gets a match item; the
//! worker matches it against each pause (the `if` expression with `event` = the run's trigger and
//! `async` = the new event, or an invoke's correlation id) and resolves the ones that match. Each
//! resolution consumes its pause in the same commit as the run change, so a pause resolves once
//! even when its event and its timeout race.

use std::sync::Arc;

use serde_json::{json, Value};
use sluice_expr::Vars;
use sluice_protocol::run::RunStatus;
use sluice_store::{PauseKind, PauseRecord, QueueItem, RunRecord};

use crate::error::EngineError;
use crate::transition::{self, pause_timeout_value};
use crate::worker::{apply, drop_item};
use crate::Engine;

fn matches(engine: &Engine, pause: &PauseRecord, event: &Value) -> bool {
    if let Some(key) = &pause.match_key {
        return event["data"]["correlation_id"].as_str() == Some(key.as_str());
    }
    match &pause.expression {
        None => true,
        Some(source) => match engine.registry.exprs().get(source) {
            Ok(expr) => expr.matches(&Vars {
                event: Some(&pause.trigger_event),
                async_event: Some(event),
                ..Default::default()
            }),
            Err(e) => {
                tracing::warn!(pause = %pause.id, error = %e, "pause expression does not compile; it never matches");
                false
            }
        },
    }
}

/// What a matching event resolves a pause's step with.
fn resolution(kind: PauseKind, event: &Value) -> Value {
    match kind {
        PauseKind::Invoke => match event["data"].get("error").filter(|e| !e.is_null()) {
            Some(error) => json!({ "error": error }),
            None => json!({ "data": event["data"].get("result").cloned().unwrap_or(Value::Null) }),
        },
        // waitForEvent memoizes the whole event, unwrapped.
        _ => event.clone(),
    }
}

pub(crate) async fn match_event(engine: &Arc<Engine>, item: &QueueItem) -> Result<(), EngineError> {
    let Some(stored) = engine.store.get_event(&item.run_id).await? else {
        return drop_item(engine, item).await;
    };
    let event = stored.event.to_sdk_json(&stored.id);
    for pause in engine.store.pauses_for_event(&stored.event.name).await? {
        // Only events that arrive after the wait began, and before it expired.
        if pause.created_at > stored.received_at || pause.expires_at < stored.received_at {
            continue;
        }
        if pause.run_id == stored.source_run_id.clone().unwrap_or_default() && pause.kind == PauseKind::CancelOn {
            continue;
        }
        if !matches(engine, &pause, &event) {
            continue;
        }
        match pause.kind {
            PauseKind::CancelOn => match engine.cancel_run(&pause.run_id).await {
                Ok(()) => tracing::info!(run = %pause.run_id, event = %stored.id, "cancelled by cancelOn"),
                Err(EngineError::RunEnded(_)) | Err(EngineError::RunNotFound(_)) => {}
                Err(e) => return Err(e),
            },
            kind => {
                let step_id = pause.step_id.clone().unwrap_or_default();
                let value = resolution(kind, &event);
                let timeout_item = format!("{}:timeout", pause.id);
                apply(engine, &pause.run_id, Some(&timeout_item), Some(&pause.id), |run, ctx| {
                    Some(transition::on_pause_resolved(run, &step_id, value.clone(), ctx))
                })
                .await?;
            }
        }
    }
    drop_item(engine, item).await
}

/// A pause's deadline passed: resolve it with its timeout value, unless it was resolved already.
pub(crate) async fn time_out(engine: &Arc<Engine>, item: &QueueItem) -> Result<(), EngineError> {
    let Some(pause) = engine.store.get_pause(&item.step_id).await? else {
        return drop_item(engine, item).await;
    };
    let step_id = pause.step_id.clone().unwrap_or_default();
    let value = pause_timeout_value(pause.kind);
    apply(engine, &pause.run_id, Some(&item.id), Some(&pause.id), |run, ctx| {
        Some(transition::on_pause_resolved(run, &step_id, value.clone(), ctx))
    })
    .await?;
    Ok(())
}

/// `timeouts.start` / `timeouts.finish`: cancel the run if it has not started / ended in time.
pub(crate) async fn run_timeout(engine: &Arc<Engine>, run: &RunRecord, item: &QueueItem) -> Result<(), EngineError> {
    let expired = match item.step_id.as_str() {
        // A run counts as started once its first call is in flight, not only once it committed.
        "start" => {
            let now = engine.now();
            let in_flight = engine.store.items_for_run(&run.id).await?.iter().any(|i| {
                i.kind == sluice_store::ItemKind::Call && i.lease_owner.is_some() && i.lease_expires_at > Some(now)
            });
            run.status == RunStatus::Queued && !in_flight
        }
        _ => !run.status.is_terminal(),
    };
    if expired {
        tracing::info!(run = %run.id, which = %item.step_id, "run timed out; cancelling");
        match engine.cancel_run(&run.id).await {
            Ok(()) | Err(EngineError::RunEnded(_)) => {}
            Err(e) => return Err(e),
        }
        return Ok(());
    }
    drop_item(engine, item).await
}
