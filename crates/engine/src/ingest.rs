//! From accepted events to stored events plus the runs they trigger, in one write.

use serde_json::{json, Value};
use sluice_protocol::event::{names, Event};
use sluice_protocol::run::RunStatus;
use sluice_store::{EventRecord, IngestItem, NewRun, RunRecord, RunState};

use crate::admission;
use crate::registry::Registry;
use crate::transition::{discovery_item, Finish};

/// Client ids deduplicate for this long (Inngest's window).
pub const DEDUP_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Build the ingest item for one event: the runs of every function whose trigger matches.
pub fn ingest_item(
    registry: &Registry,
    event: Event,
    id: ulid::Ulid,
    now: i64,
    source_run_id: Option<String>,
) -> IngestItem {
    let event_id = id.to_string();
    let sdk_event = event.to_sdk_json(&event_id);
    let targets = if event.name == names::FUNCTION_INVOKED {
        // An invocation names its target; triggers do not matter.
        event.data["_inngest"]["fn_id"].as_str().and_then(|id| registry.function(id)).into_iter().collect()
    } else {
        registry.matching(&event.name, &sdk_event)
    };
    let runs = targets.into_iter().map(|f| new_run(registry, &f, &sdk_event, &event_id, now)).collect();
    let dedup_key = (!event.id.is_empty()).then(|| format!("{}\u{0}{}", event.name, event.id));
    IngestItem {
        record: EventRecord { id: event_id, event, received_at: now, source_run_id },
        dedup_key,
        dedup_until: now + DEDUP_WINDOW_MS,
        runs,
    }
}

/// A new run of `f` for the stored event `event_id` (`sdk_event` is that event as the SDK sees it),
/// pinned to the app's current deployment, with its cancelOn pauses, admission guards and timeouts.
pub fn new_run(
    registry: &Registry,
    f: &crate::registry::RegisteredFunction,
    sdk_event: &Value,
    event_id: &str,
    now: i64,
) -> NewRun {
    let run_id = ulid::Ulid::new().to_string();
    let config = f.config();
    NewRun {
        first_item: discovery_item(&run_id, now, 0),
        pauses: admission::cancel_pauses(config, &run_id, sdk_event, now),
        guards: admission::guards(registry.exprs(), config, sdk_event, now),
        extra_items: admission::start_timeout_item(config, &run_id, now).into_iter().collect(),
        run: RunRecord {
            id: run_id,
            function_id: f.record.id.clone(),
            app_id: f.record.app_id.clone(),
            event_id: event_id.to_string(),
            event_ids: vec![event_id.to_string()],
            status: RunStatus::Queued,
            state: RunState {
                max_attempts: config.max_attempts(),
                finish_timeout_ms: admission::finish_timeout_ms(config),
                deployment_id: registry.current_deployment(&f.record.app_id),
                ..Default::default()
            },
            output: None,
            error: None,
            parked_reason: None,
            created_at: now,
            started_at: None,
            ended_at: None,
            updated_at: now,
            rev: 0,
        },
    }
}

/// The events a run's end emits: `inngest/function.finished` always, `inngest/function.failed`
/// on failure (its event id is the run id, as Inngest does, and its data is what JS's onFailure
/// validates) and `inngest/function.cancelled` on cancel.
pub fn finish_events(
    registry: &Registry,
    run: &RunRecord,
    trigger_events: &[Value],
    outcome: &FinishOutcome,
    now: i64,
) -> Vec<IngestItem> {
    let first = trigger_events.first().cloned().unwrap_or(Value::Null);
    let mut base = json!({
        "function_id": run.function_id,
        "run_id": run.id,
        "event": first,
        "events": trigger_events,
    });
    let status = match outcome {
        FinishOutcome::Finished(Finish::Completed(output)) => {
            base["result"] = output.clone();
            "Completed"
        }
        FinishOutcome::Finished(Finish::Failed(error)) => {
            base["error"] = error.clone();
            "Failed"
        }
        FinishOutcome::Cancelled => {
            base["error"] = json!({"name": "FunctionCancelledError", "message": "function cancelled"});
            "Cancelled"
        }
    };
    let mut finished = base.clone();
    finished["_inngest"] = json!({ "status": status });
    // An invoked run's end resumes its caller, which waits on this correlation id.
    if let Some(correlation) = first.pointer("/data/_inngest/correlation_id").and_then(Value::as_str) {
        finished["correlation_id"] = json!(correlation);
    }
    let mut out = vec![emitted(registry, names::FUNCTION_FINISHED, finished, ulid::Ulid::new(), now, &run.id)];
    match outcome {
        FinishOutcome::Finished(Finish::Failed(_)) => {
            let id = run.id.parse().unwrap_or_else(|_| ulid::Ulid::new());
            out.push(emitted(registry, names::FUNCTION_FAILED, base, id, now, &run.id));
        }
        FinishOutcome::Cancelled => {
            out.push(emitted(registry, names::FUNCTION_CANCELLED, base, ulid::Ulid::new(), now, &run.id));
        }
        _ => {}
    }
    out
}

pub enum FinishOutcome {
    Finished(Finish),
    Cancelled,
}

fn emitted(registry: &Registry, name: &str, data: Value, id: ulid::Ulid, now: i64, run_id: &str) -> IngestItem {
    let event = Event { name: name.to_string(), data, id: String::new(), ts: now, user: json!({}), v: None };
    ingest_item(registry, event, id, now, Some(run_id.to_string()))
}
