//! The queue worker: claims due items under a lease, runs them, and commits each outcome
//! atomically. A crash at any point leaves the item leased; on restart it runs again, and the SDK
//! gets every step stored so far, so no stored step runs twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sluice_protocol::call::{
    error_is_retriable, normalize_error, CallContext, CallRequest, CallStack, ResponseKind, DEFAULT_REQUEST_VERSION,
};
use sluice_protocol::opcode::parse_ops;
use sluice_protocol::run::{RunStatus, RunTransition};
use sluice_store::{AppStatus, Commit, CommitOutcome, ItemKind, QueueItem, RunRecord};
use tokio::sync::Semaphore;

use crate::error::{run_codes, EngineError};
use crate::ingest::{finish_events, FinishOutcome};
use crate::retry::{retry_after_at, unreachable_backoff};
use crate::sdk_client::{step_url, SdkResponse};
use crate::transition::{self, Answer, Decision, TransitionContext};
use crate::Engine;

/// Longest the worker sleeps between polls; also bounds how late a clock jump is noticed.
const MAX_IDLE: Duration = Duration::from_millis(500);

pub(crate) async fn run_worker(engine: Arc<Engine>) {
    let slots = Arc::new(Semaphore::new(engine.config.max_inflight));
    loop {
        let free = slots.available_permits();
        let mut claimed = 0;
        if free > 0 {
            let now = engine.now();
            let lease_until = now + engine.config.call_timeout.as_millis() as i64 + 60_000;
            match engine.store.claim_due(now, &engine.config.node_id, lease_until, free).await {
                Ok(items) => {
                    claimed = items.len();
                    for item in items {
                        let permit = slots.clone().acquire_owned().await.expect("never closed");
                        let engine = engine.clone();
                        tokio::spawn(async move {
                            let id = item.id.clone();
                            let _in_flight = crate::cluster::InFlight::enter(&engine, &id);
                            if let Err(e) = process_item(&engine, item).await {
                                tracing::error!(item = %id, code = e.code(), error = %e, "queue item failed; it will be retried when its lease expires");
                            }
                            drop(permit);
                            engine.notify_work();
                        });
                    }
                }
                Err(e) => tracing::error!(code = e.code(), error = %e, "claiming queue items failed"),
            }
        }
        if claimed > 0 && claimed == free {
            continue;
        }
        let wait = match engine.store.next_due_at().await {
            Ok(Some(at)) => Duration::from_millis((at - engine.now()).clamp(0, MAX_IDLE.as_millis() as i64) as u64),
            _ => MAX_IDLE,
        };
        if wait.is_zero() && free == 0 {
            // Everything is busy: wait for a slot to free up.
            engine.work.notified().await;
            continue;
        }
        if !wait.is_zero() {
            tokio::select! {
                _ = engine.work.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

async fn process_item(engine: &Arc<Engine>, item: QueueItem) -> Result<(), EngineError> {
    match item.kind {
        ItemKind::MatchPauses => return crate::pauses::match_event(engine, &item).await,
        ItemKind::CronTick => return crate::cron::tick(engine, &item).await,
        _ => {}
    }
    let Some(run) = engine.store.get_run(&item.run_id).await? else {
        return drop_item(engine, &item).await;
    };
    if run.status.is_terminal() {
        return drop_item(engine, &item).await;
    }
    match item.kind {
        ItemKind::Wake => {
            apply(engine, &item.run_id, Some(&item.id), None, |run, ctx| Some(transition::on_wake(run, &item, ctx)))
                .await
                .map(drop)
        }
        ItemKind::Call => call(engine, run, item).await,
        ItemKind::PauseTimeout => crate::pauses::time_out(engine, &item).await,
        ItemKind::RunTimeout => crate::pauses::run_timeout(engine, &run, &item).await,
        ItemKind::MatchPauses | ItemKind::CronTick => Ok(()),
    }
}

pub(crate) async fn drop_item(engine: &Engine, item: &QueueItem) -> Result<(), EngineError> {
    engine
        .store
        .commit(Commit { run_id: item.run_id.clone(), done_item: Some(item.id.clone()), ..Default::default() })
        .await?;
    Ok(())
}

async fn drop_item_id(engine: &Engine, run_id: &str, item_id: Option<&str>) -> Result<(), EngineError> {
    if let Some(id) = item_id {
        engine
            .store
            .commit(Commit { run_id: run_id.to_string(), done_item: Some(id.to_string()), ..Default::default() })
            .await?;
    }
    Ok(())
}

/// Compute a decision against the latest run and commit it; on a concurrent change, recompute.
/// `done_item` is deleted by the commit; `consume_pause` must still exist (else nothing happens).
/// Returns whether a decision was applied.
pub(crate) async fn apply<F>(
    engine: &Arc<Engine>,
    run_id: &str,
    done_item: Option<&str>,
    consume_pause: Option<&str>,
    decide: F,
) -> Result<bool, EngineError>
where
    F: Fn(&RunRecord, &TransitionContext<'_>) -> Option<Decision>,
{
    loop {
        let Some(run) = engine.store.get_run(run_id).await? else {
            drop_item_id(engine, run_id, done_item).await?;
            return Ok(false);
        };
        if run.status.is_terminal() {
            // Cancelled (or otherwise ended) while the call was in flight: the answer is discarded.
            drop_item_id(engine, run_id, done_item).await?;
            return Ok(false);
        }
        let stored: HashSet<String> = engine.store.get_steps(&run.id).await?.into_iter().map(|s| s.step_id).collect();
        let events = engine.trigger_events(&run).await?;
        let trigger_event = events.first().cloned().unwrap_or(Value::Null);
        let registry = engine.registry.clone();
        let function_exists = move |id: &str| registry.function(id).is_some();
        let ctx = TransitionContext {
            now: engine.now(),
            stored: &stored,
            retry_interval: engine.config.retry_interval,
            trigger_event: &trigger_event,
            function_exists: &function_exists,
        };
        let Some(mut decision) = decide(&run, &ctx) else {
            return Ok(false);
        };
        if decision.run.status == RunStatus::PausedUnreachable {
            for i in &mut decision.enqueue {
                if i.kind == ItemKind::Call {
                    i.parked = true;
                }
            }
        }
        let mut emit: Vec<_> = decision
            .emit
            .drain(..)
            .map(|event| {
                crate::ingest::ingest_item(&engine.registry, event, ulid::Ulid::new(), ctx.now, Some(run.id.clone()))
            })
            .collect();
        if let Some(finish) = &decision.finish {
            emit.extend(finish_events(
                &engine.registry,
                &decision.run,
                &events,
                &FinishOutcome::Finished(finish.clone()),
                ctx.now,
            ));
        }
        let commit = Commit {
            run_id: run.id.clone(),
            expected_rev: run.rev,
            clear_items: decision.finish.is_some(),
            run: Some(decision.run),
            steps: decision.steps,
            done_item: done_item.map(str::to_string),
            enqueue: decision.enqueue,
            emit,
            new_pauses: decision.new_pauses,
            consume_pause: consume_pause.map(str::to_string),
        };
        match engine.store.commit(commit).await? {
            CommitOutcome::Applied { duplicate_steps } => {
                if !duplicate_steps.is_empty() {
                    tracing::warn!(run = %run.id, steps = ?duplicate_steps, "step results arrived for steps already stored; the first result was kept");
                }
                engine.notify_work();
                return Ok(true);
            }
            CommitOutcome::Conflict => {
                if let Some(pause) = consume_pause {
                    if engine.store.get_pause(pause).await?.is_none() {
                        // Someone else resolved the pause first (a match racing its timeout).
                        drop_item_id(engine, run_id, done_item).await?;
                        return Ok(false);
                    }
                }
                continue;
            }
        }
    }
}

async fn call(engine: &Arc<Engine>, run: RunRecord, item: QueueItem) -> Result<(), EngineError> {
    crate::cluster::know_function_of(engine, &run).await;
    let Some(function) = engine.registry.function_for_run(&run) else {
        let error = json!({"name": "SluiceError", "code": run_codes::FUNCTION_REMOVED,
            "message": format!("function {} is no longer registered by its app", run.function_id)});
        return apply(engine, &run.id, Some(&item.id), None, |run, ctx| {
            let answer = Answer::Error { error: error.clone(), retriable: false, retry_at: None };
            Some(transition::on_answer(run, &item, answer, ctx))
        })
        .await
        .map(drop);
    };
    let Some(base_url) = function.step_url() else {
        return Ok(());
    };
    let url = step_url(base_url, &item.step_id);
    let body = call_request(engine, &run, &item).await?;
    // Concurrency limits steps executing: each call holds a slot of every limit while in flight.
    let limits = crate::flow::concurrency_limits(engine, &function, &body["event"]);
    if !limits.is_empty() {
        let now = engine.now();
        let until = item.lease_expires_at.unwrap_or(now + engine.config.call_timeout.as_millis() as i64);
        if !engine.store.try_acquire_slots(&limits, &item.id, until, now).await? {
            return wait_for_slot(engine, item).await;
        }
    }
    let outcome = engine.client.call(&url, &body, &run.id).await;
    let result = match outcome {
        Err(unreachable) => on_unreachable(engine, &run, item.clone(), unreachable.0).await,
        Ok(resp) => {
            mark_reachable(engine, &run.app_id).await;
            let answer = classify(engine, &resp);
            apply(engine, &run.id, Some(&item.id), None, |run, ctx| {
                Some(transition::on_answer(run, &item, answer.clone(), ctx))
            })
            .await
            .map(drop)
        }
    };
    if !limits.is_empty() {
        engine.store.release_slots(&item.id).await?;
        engine.notify_work();
    }
    result
}

/// Every slot of a concurrency key is taken: snooze the item briefly. It keeps its `available_at`,
/// so waiting items are claimed again in their original (FIFO, priority-adjusted) order; the
/// snooze is a lease with no owner. No attempt is used and the run is not touched.
async fn wait_for_slot(engine: &Arc<Engine>, item: QueueItem) -> Result<(), EngineError> {
    const SLOT_POLL_MS: i64 = 100;
    let snoozed = QueueItem { lease_owner: None, lease_expires_at: Some(engine.now() + SLOT_POLL_MS), ..item.clone() };
    engine
        .store
        .commit(Commit {
            run_id: item.run_id.clone(),
            done_item: Some(item.id.clone()),
            enqueue: vec![snoozed],
            ..Default::default()
        })
        .await?;
    Ok(())
}

async fn call_request(engine: &Engine, run: &RunRecord, item: &QueueItem) -> Result<Value, EngineError> {
    let events = engine.trigger_events(run).await?;
    let steps = engine.store.get_steps(&run.id).await?;
    let mut memo = Map::new();
    let mut stack = Vec::with_capacity(steps.len());
    for s in steps {
        stack.push(s.step_id.clone());
        memo.insert(s.step_id, s.value);
    }
    let req = CallRequest {
        event: events.first().cloned().unwrap_or(json!({})),
        events,
        steps: memo,
        version: run.state.req_version.unwrap_or(DEFAULT_REQUEST_VERSION),
        use_api: false,
        ctx: CallContext {
            run_id: run.id.clone(),
            attempt: item.attempt,
            max_attempts: run.state.max_attempts,
            disable_immediate_execution: run.state.force_step_plan,
            use_api: false,
            stack: CallStack { current: stack.len(), stack },
            env: "dev".into(),
        },
    };
    Ok(serde_json::to_value(req).unwrap_or(Value::Null))
}

/// Read an SDK answer into an `Answer`. Anything that is not valid protocol is a retriable error.
fn classify(engine: &Engine, resp: &SdkResponse) -> Answer {
    let invalid = |message: String| Answer::Error {
        error: json!({"name": "SluiceError", "code": run_codes::INVALID_SDK_RESPONSE, "message": message}),
        retriable: true,
        retry_at: None,
    };
    if let Err(e) = engine.client.verify_answer(resp) {
        return invalid(e);
    }
    let retry_at = resp.header("retry-after").and_then(|h| retry_after_at(h, engine.now()));
    match ResponseKind::from_status(resp.status) {
        ResponseKind::Completed | ResponseKind::Ops if resp.header("x-inngest-sdk").is_none() => invalid(format!(
            "HTTP {} without an X-Inngest-Sdk header: the URL does not serve an Inngest SDK",
            resp.status
        )),
        ResponseKind::Completed => {
            let output = if resp.body.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                serde_json::from_slice(&resp.body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&resp.body).into_owned()))
            };
            Answer::Completed(output)
        }
        ResponseKind::Ops => match parse_ops(&resp.body) {
            Ok(ops) => Answer::Ops { ops, no_retry: resp.header("x-inngest-no-retry") == Some("true"), retry_at },
            Err(e) => invalid(e.to_string()),
        },
        ResponseKind::Error => {
            let body: Value = serde_json::from_slice(&resp.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&resp.body).into_owned()));
            Answer::Error {
                error: normalize_error(&body, &format!("the SDK answered HTTP {}", resp.status)),
                retriable: error_is_retriable(resp.status, resp.header("x-inngest-no-retry")),
                retry_at,
            }
        }
    }
}

async fn mark_reachable(engine: &Arc<Engine>, app_id: &str) {
    let Some(app) = engine.registry.app(app_id) else { return };
    if app.status == AppStatus::Unreachable {
        if let Err(e) = crate::sync::app_answered(engine, app).await {
            tracing::warn!(app = %app_id, error = %e, "could not mark the app reachable");
        }
    }
}

/// The SDK did not answer. Retry soon without using an attempt; past the budget, park the app's runs.
async fn on_unreachable(
    engine: &Arc<Engine>,
    run: &RunRecord,
    item: QueueItem,
    reason: String,
) -> Result<(), EngineError> {
    let now = engine.now();
    let since = item.unreachable_since.unwrap_or(now);
    let failures = item.unreachable_count + 1;
    // A run pinned to a deployment that is no longer current and stops answering moves to the
    // current deployment after the failover grace, instead of parking.
    let current = engine.registry.current_deployment(&run.app_id);
    let pinned_elsewhere = run.state.deployment_id.is_some() && run.state.deployment_id != current && current.is_some();
    if pinned_elsewhere && now - since >= engine.config.failover_grace.as_millis() as i64 {
        tracing::warn!(run = %run.id, from = ?run.state.deployment_id, to = ?current, %reason,
            "pinned deployment unreachable past the failover grace; moving the run to the current deployment");
        let retry = QueueItem {
            available_at: now,
            lease_owner: None,
            lease_expires_at: None,
            unreachable_count: 0,
            unreachable_since: None,
            ..item.clone()
        };
        apply(engine, &run.id, Some(&item.id), None, |run, _ctx| {
            let mut updated = run.clone();
            updated.state.deployment_id = current.clone();
            updated.updated_at = now;
            Some(Decision::requeue(updated, retry.clone()))
        })
        .await?;
        return Ok(());
    }
    let over_budget = !pinned_elsewhere && now - since >= engine.config.unreachable_budget.as_millis() as i64;
    tracing::warn!(run = %run.id, app = %run.app_id, failures, over_budget, %reason, "SDK unreachable");
    let retry = QueueItem {
        available_at: now + unreachable_backoff(failures, engine.config.unreachable_backoff_max).as_millis() as i64,
        lease_owner: None,
        lease_expires_at: None,
        unreachable_count: failures,
        unreachable_since: Some(since),
        parked: over_budget,
        ..item.clone()
    };
    let reason_text = format!(
        "app {} unreachable since {}: {reason}",
        run.app_id,
        sluice_protocol::duration::format_rfc3339_ms(since)
    );
    apply(engine, &run.id, Some(&item.id), None, |run, _ctx| {
        let mut updated = run.clone();
        if over_budget {
            updated.status = run.status.apply(RunTransition::Park).unwrap_or(run.status);
            updated.parked_reason = Some(reason_text.clone());
        }
        Some(Decision::requeue(updated, retry.clone()))
    })
    .await?;
    if over_budget {
        engine.store.set_app_status(&run.app_id, AppStatus::Unreachable, Some(reason.clone()), now).await?;
        if let Some(mut app) = engine.registry.app(&run.app_id) {
            app.status = AppStatus::Unreachable;
            app.last_error = Some(reason);
            engine.registry.set_app(app);
        }
        engine.store.park_app(&run.app_id, &reason_text, now).await?;
    }
    Ok(())
}
