//! The one place that turns an SDK answer (or a fired timer) into a run transition. Pure: it reads
//! the run as loaded and returns what to write; the worker applies it atomically and, if the run
//! changed meanwhile, reloads and asks again.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_protocol::call::normalize_error;
use sluice_protocol::duration::{parse_duration, sleep_until, MAX_DURATION_MS};
use sluice_protocol::event::{names, Event};
use sluice_protocol::opcode::{GeneratorOp, Opcode};
use sluice_protocol::run::{RunStatus, RunTransition};
use sluice_store::{ItemKind, PauseKind, PauseRecord, QueueItem, RunRecord, StepRecord};

use crate::admission::run_timeout_item;
use crate::error::run_codes;
use crate::retry::step_backoff;

/// A classified SDK answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200: the function returned this output.
    Completed(Value),
    /// 206: opcodes, with the response's retry headers (they apply to a `StepError`).
    Ops { ops: Vec<GeneratorOp>, no_retry: bool, retry_at: Option<i64> },
    /// Any other status, or an answer that is not valid protocol.
    Error { error: Value, retriable: bool, retry_at: Option<i64> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Completed(Value),
    Failed(Value),
}

/// What to write for one transition.
#[derive(Debug, Clone)]
pub struct Decision {
    pub run: RunRecord,
    pub steps: Vec<StepRecord>,
    pub enqueue: Vec<QueueItem>,
    pub finish: Option<Finish>,
    /// Pauses to create (waitForEvent, invoke).
    pub new_pauses: Vec<PauseRecord>,
    /// Events the run emits (an invoke's `inngest/function.invoked`).
    pub emit: Vec<Event>,
}

pub struct TransitionContext<'a> {
    pub now: i64,
    /// Step ids already memoized for this run.
    pub stored: &'a HashSet<String>,
    pub retry_interval: Option<Duration>,
    /// The run's trigger event as the SDK sees it (the `event` of pause expressions).
    pub trigger_event: &'a Value,
    /// Whether a function id is registered (invoke targets).
    pub function_exists: &'a (dyn Fn(&str) -> bool + Sync),
}

/// The pause id of a step: deterministic, so re-planning a wait never creates a second pause.
pub fn pause_id(run_id: &str, step_id: &str) -> String {
    format!("{run_id}:p:{step_id}")
}

pub fn pause_timeout_item(run_id: &str, pause_id: &str, at: i64, now: i64) -> QueueItem {
    QueueItem {
        id: format!("{pause_id}:timeout"),
        kind: ItemKind::PauseTimeout,
        step_id: pause_id.to_string(),
        created_at: now,
        ..call_item(run_id, pause_id, at, 0)
    }
}

/// The value a pause resolves its step with when it times out.
pub fn pause_timeout_value(kind: PauseKind) -> Value {
    match kind {
        PauseKind::Invoke => json!({"error": {
            "name": "InngestInvokeTimeoutError",
            "message": "Timed out waiting for invoked function to complete"
        }}),
        _ => Value::Null,
    }
}

pub fn discovery_item(run_id: &str, now: i64, attempt: u32) -> QueueItem {
    QueueItem {
        // Discovery ids are unique: two rediscoveries (race mode) must not collapse into one.
        id: format!("{run_id}:d:{}", ulid::Ulid::new()),
        ..call_item(run_id, "step", now, attempt)
    }
}

/// The item that runs one planned step. Its id is deterministic, so a step planned twice is queued once.
pub fn call_item(run_id: &str, step_id: &str, at: i64, attempt: u32) -> QueueItem {
    QueueItem { attempt, ..QueueItem::new(format!("{run_id}:c:{step_id}"), run_id, ItemKind::Call, step_id, at, at) }
}

pub fn wake_item(run_id: &str, step_id: &str, at: i64, now: i64) -> QueueItem {
    QueueItem {
        id: format!("{run_id}:w:{step_id}"),
        kind: ItemKind::Wake,
        created_at: now,
        ..call_item(run_id, step_id, at, 0)
    }
}

fn step_record(run: &RunRecord, id: &str, name: Option<&str>, value: Value, now: i64) -> StepRecord {
    StepRecord {
        run_id: run.id.clone(),
        step_id: id.to_string(),
        seq: 0,
        name: name.map(str::to_string),
        value,
        created_at: now,
    }
}

fn sluice_error(code: &str, message: String) -> Value {
    json!({"name": "SluiceError", "message": message, "code": code})
}

impl Decision {
    fn new(run: &RunRecord, now: i64) -> Decision {
        let mut run = run.clone();
        run.updated_at = now;
        if run.started_at.is_none() {
            run.started_at = Some(now);
        }
        let mut enqueue = vec![];
        if run.status == RunStatus::Queued {
            if let Some(ms) = run.state.finish_timeout_ms {
                enqueue.push(run_timeout_item(&run.id, "finish", now + ms, now));
            }
        }
        if let Some(next) = run.status.apply(RunTransition::Start) {
            run.status = next;
        }
        Decision { run, steps: vec![], enqueue, finish: None, new_pauses: vec![], emit: vec![] }
    }

    fn finish(mut self, finish: Finish, now: i64) -> Decision {
        let (transition, output, error) = match &finish {
            Finish::Completed(v) => (RunTransition::Complete, Some(v.clone()), None),
            Finish::Failed(e) => (RunTransition::Fail, None, Some(e.clone())),
        };
        if let Some(next) = self.run.status.apply(transition) {
            self.run.status = next;
        }
        self.run.output = output;
        self.run.error = error;
        self.run.ended_at = Some(now);
        self.run.parked_reason = None;
        self.enqueue.clear();
        self.new_pauses.clear();
        self.emit.clear();
        self.finish = Some(finish);
        self
    }

    fn fail(self, error: Value, now: i64) -> Decision {
        self.finish(Finish::Failed(error), now)
    }

    /// A step result was stored: leave the pending set and decide whether to rediscover.
    fn step_settled(&mut self, step_id: &str, now: i64) {
        let state = &mut self.run.state;
        state.pending.retain(|p| p != step_id);
        if state.pending.is_empty() {
            state.force_step_plan = false;
            state.race = false;
            self.enqueue.push(discovery_item(&self.run.id, now, 0));
        } else if state.race {
            self.enqueue.push(discovery_item(&self.run.id, now, 0));
        }
    }

    fn add_pending(&mut self, step_id: &str) {
        if !self.run.state.pending.iter().any(|p| p == step_id) {
            self.run.state.pending.push(step_id.to_string());
        }
    }
}

impl Decision {
    /// Only the run record changes and one item is queued again (unreachable retries, failover).
    pub fn requeue(run: RunRecord, item: QueueItem) -> Decision {
        Decision { run, steps: vec![], enqueue: vec![item], finish: None, new_pauses: vec![], emit: vec![] }
    }
}

/// A pause resolved (matching event, child finished, or its timeout): memoize `value` and move on.
pub fn on_pause_resolved(run: &RunRecord, step_id: &str, value: Value, ctx: &TransitionContext<'_>) -> Decision {
    let mut d = Decision::new(run, ctx.now);
    d.steps.push(step_record(run, step_id, None, value, ctx.now));
    d.step_settled(step_id, ctx.now);
    d
}

/// A durable sleep fired: memoize `null` and move on.
pub fn on_wake(run: &RunRecord, item: &QueueItem, ctx: &TransitionContext<'_>) -> Decision {
    let mut d = Decision::new(run, ctx.now);
    d.steps.push(step_record(run, &item.step_id, None, Value::Null, ctx.now));
    // Already stored: this timer fired twice (two nodes on a stale lease); the first moved the run on.
    if !ctx.stored.contains(&item.step_id) {
        d.step_settled(&item.step_id, ctx.now);
    }
    d
}

/// Apply an SDK answer to a call item.
pub fn on_answer(run: &RunRecord, item: &QueueItem, answer: Answer, ctx: &TransitionContext<'_>) -> Decision {
    let now = ctx.now;
    let mut d = Decision::new(run, now);
    let max_attempts = run.state.max_attempts.max(1);
    let retry_same_item = |retry_at: Option<i64>| {
        let attempt = item.attempt + 1;
        let at = retry_at.unwrap_or_else(|| now + step_backoff(attempt, ctx.retry_interval).as_millis() as i64);
        QueueItem {
            attempt,
            available_at: at,
            lease_owner: None,
            lease_expires_at: None,
            unreachable_count: 0,
            unreachable_since: None,
            ..item.clone()
        }
    };
    match answer {
        Answer::Completed(output) => d.finish(Finish::Completed(output), now),
        Answer::Error { error, retriable, retry_at } => {
            if retriable && item.attempt + 1 < max_attempts {
                d.enqueue.push(retry_same_item(retry_at));
                d
            } else {
                d.fail(error, now)
            }
        }
        Answer::Ops { ops, no_retry, retry_at } => {
            if ops.is_empty() {
                // Nothing to do. If nothing else is outstanding the run would stall: rediscover,
                // counting it as a failed attempt so a misbehaving SDK cannot loop forever.
                if run.state.pending.is_empty() {
                    if item.attempt + 1 < max_attempts {
                        let mut retry = retry_same_item(None);
                        retry.id = discovery_item(&run.id, now, 0).id;
                        retry.step_id = "step".into();
                        d.enqueue.push(retry);
                        return d;
                    }
                    return d.fail(
                        sluice_error(
                            run_codes::STALLED,
                            "the SDK reported nothing to do and no step is outstanding".into(),
                        ),
                        now,
                    );
                }
                return d;
            }
            let parallel =
                ops.iter().filter(|o| !matches!(o.opcode(), Opcode::DeferAdd | Opcode::DeferAbort)).count() > 1;
            if parallel {
                d.run.state.force_step_plan = true;
            }
            if ops.iter().any(GeneratorOp::is_race) {
                d.run.state.race = true;
            }
            for op in &ops {
                match op.opcode() {
                    Opcode::StepRun | Opcode::Step => {
                        let data = op.data.clone().unwrap_or(Value::Null);
                        d.steps.push(step_record(run, &op.id, Some(op.label()), json!({ "data": data }), now));
                        // A result for a step already stored (two executions raced on a stale
                        // lease) is only recorded as a duplicate: the first one moved the run on.
                        if !ctx.stored.contains(&op.id) {
                            d.step_settled(&op.id, now);
                        }
                    }
                    Opcode::StepError | Opcode::StepFailed => {
                        let error = normalize_error(op.error.as_ref().unwrap_or(&Value::Null), "step failed");
                        let final_failure =
                            op.opcode() == Opcode::StepFailed || no_retry || item.attempt + 1 >= max_attempts;
                        if final_failure {
                            d.steps.push(step_record(run, &op.id, Some(op.label()), json!({ "error": error }), now));
                            if !ctx.stored.contains(&op.id) {
                                d.step_settled(&op.id, now);
                            }
                        } else if !ctx.stored.contains(&op.id) {
                            // Retry this step, targeted, consuming an attempt.
                            d.add_pending(&op.id);
                            let mut retry = retry_same_item(retry_at);
                            retry.id = call_item(&run.id, &op.id, now, 0).id;
                            retry.step_id = op.id.clone();
                            d.enqueue.push(retry);
                        }
                    }
                    Opcode::StepPlanned => {
                        if ctx.stored.contains(&op.id) {
                            continue;
                        }
                        d.add_pending(&op.id);
                        d.enqueue.push(call_item(&run.id, &op.id, now, 0));
                    }
                    Opcode::Sleep => {
                        let spec = op.opt_str("duration").or(op.name.as_deref()).unwrap_or_default();
                        match sleep_until(spec, now) {
                            Ok(at) => {
                                d.add_pending(&op.id);
                                d.enqueue.push(wake_item(&run.id, &op.id, at, now));
                            }
                            Err(e) => {
                                return d.fail(
                                    sluice_error(
                                        run_codes::INVALID_SDK_RESPONSE,
                                        format!("sleep {:?}: {e}", op.label()),
                                    ),
                                    now,
                                )
                            }
                        }
                    }
                    Opcode::WaitForEvent => {
                        if ctx.stored.contains(&op.id) {
                            continue;
                        }
                        if let Err(e) = plan_wait(&mut d, op, ctx) {
                            return d.fail(sluice_error(run_codes::INVALID_SDK_RESPONSE, e), now);
                        }
                    }
                    Opcode::InvokeFunction => {
                        if ctx.stored.contains(&op.id) {
                            continue;
                        }
                        if let Err(e) = plan_invoke(&mut d, op, ctx) {
                            return d.fail(sluice_error(run_codes::INVALID_SDK_RESPONSE, e), now);
                        }
                    }
                    Opcode::RunComplete | Opcode::SyncRunComplete => {
                        return d.finish(Finish::Completed(op.data.clone().unwrap_or(Value::Null)), now);
                    }
                    Opcode::DiscoveryRequest => {
                        d.enqueue.push(discovery_item(&run.id, now, 0));
                    }
                    Opcode::None | Opcode::DeferAdd | Opcode::DeferAbort => {}
                    other => {
                        return d.fail(
                            sluice_error(
                                run_codes::OPCODE_UNSUPPORTED,
                                format!("opcode {other:?} is not supported by this sluice version"),
                            ),
                            now,
                        );
                    }
                }
            }
            d
        }
    }
}

fn timeout_ms(op: &GeneratorOp, default: i64) -> Result<i64, String> {
    match op.opt_str("timeout").map(str::trim) {
        None => Ok(default),
        // An empty timeout means "expire immediately" (Inngest).
        Some("") => Ok(0),
        Some(t) => parse_duration(t).map_err(|e| format!("step {:?}: {e}", op.label())),
    }
}

/// `step.waitForEvent`: a pause on the event name (from `opts.event`, or `name` as JS sends it),
/// with the `if` expression, resolved by a matching event or `null` at the timeout.
fn plan_wait(d: &mut Decision, op: &GeneratorOp, ctx: &TransitionContext<'_>) -> Result<(), String> {
    let event_name = op.opt_str("event").or(op.name.as_deref()).unwrap_or_default().to_string();
    if event_name.is_empty() {
        return Err(format!("waitForEvent {:?} names no event", op.label()));
    }
    let expires_at = ctx.now + timeout_ms(op, 0)?;
    let id = pause_id(&d.run.id, &op.id);
    d.add_pending(&op.id);
    d.enqueue.push(pause_timeout_item(&d.run.id, &id, expires_at, ctx.now));
    d.new_pauses.push(PauseRecord {
        id,
        run_id: d.run.id.clone(),
        kind: PauseKind::WaitForEvent,
        step_id: Some(op.id.clone()),
        event_name,
        expression: op.opt_str("if").filter(|s| !s.trim().is_empty()).map(str::to_string),
        match_key: None,
        trigger_event: ctx.trigger_event.clone(),
        expires_at,
        created_at: ctx.now,
    });
    Ok(())
}

/// `step.invoke`: emit `inngest/function.invoked` for the target and wait for its
/// `inngest/function.finished` carrying our correlation id. An unknown target resolves at once
/// with an error, so the caller resumes instead of waiting a year.
fn plan_invoke(d: &mut Decision, op: &GeneratorOp, ctx: &TransitionContext<'_>) -> Result<(), String> {
    let opts = op.opts.clone().unwrap_or(Value::Null);
    let target = opts["function_id"].as_str().unwrap_or_default().to_string();
    if target.is_empty() || !(ctx.function_exists)(&target) {
        let error =
            json!({"error": {"name": "Error", "message": format!("could not find function {target:?} to invoke")}});
        d.steps.push(step_record(&d.run, &op.id, Some(op.label()), error, ctx.now));
        d.step_settled(&op.id, ctx.now);
        return Ok(());
    }
    let expires_at = ctx.now + timeout_ms(op, MAX_DURATION_MS)?;
    let correlation_id = format!("{}.{}", d.run.id, op.id);
    let payload = &opts["payload"];
    let mut data = match &payload["data"] {
        Value::Object(m) => m.clone(),
        _ => Default::default(),
    };
    data.insert(
        "_inngest".into(),
        json!({
            "fn_id": target,
            "correlation_id": correlation_id,
            "source_app_id": d.run.app_id,
            "source_fn_id": d.run.function_id,
            "source_run_id": d.run.id,
            "expire": expires_at,
            "name": names::FUNCTION_INVOKED,
        }),
    );
    d.emit.push(Event {
        name: names::FUNCTION_INVOKED.into(),
        data: Value::Object(data),
        id: String::new(),
        ts: ctx.now,
        user: if payload["user"].is_object() { payload["user"].clone() } else { json!({}) },
        v: payload["v"].as_str().map(str::to_string),
    });
    let id = pause_id(&d.run.id, &op.id);
    d.add_pending(&op.id);
    d.enqueue.push(pause_timeout_item(&d.run.id, &id, expires_at, ctx.now));
    d.new_pauses.push(PauseRecord {
        id,
        run_id: d.run.id.clone(),
        kind: PauseKind::Invoke,
        step_id: Some(op.id.clone()),
        event_name: names::FUNCTION_FINISHED.into(),
        expression: None,
        match_key: Some(correlation_id),
        trigger_event: ctx.trigger_event.clone(),
        expires_at,
        created_at: ctx.now,
    });
    Ok(())
}

#[cfg(test)]
mod tests;
