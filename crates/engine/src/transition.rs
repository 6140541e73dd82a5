//! The one place that turns an SDK answer (or a fired timer) into a run transition. Pure: it reads
//! the run as loaded and returns what to write; the worker applies it atomically and, if the run
//! changed meanwhile, reloads and asks again.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_protocol::call::normalize_error;
use sluice_protocol::duration::sleep_until;
use sluice_protocol::opcode::{GeneratorOp, Opcode};
use sluice_protocol::run::RunTransition;
use sluice_store::{ItemKind, QueueItem, RunRecord, StepRecord};

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
}

pub struct TransitionContext<'a> {
    pub now: i64,
    /// Step ids already memoized for this run.
    pub stored: &'a HashSet<String>,
    pub retry_interval: Option<Duration>,
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
    QueueItem {
        id: format!("{run_id}:c:{step_id}"),
        run_id: run_id.to_string(),
        kind: ItemKind::Call,
        step_id: step_id.to_string(),
        attempt,
        available_at: at,
        lease_owner: None,
        lease_expires_at: None,
        unreachable_count: 0,
        unreachable_since: None,
        parked: false,
        created_at: at,
    }
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
        if let Some(next) = run.status.apply(RunTransition::Start) {
            run.status = next;
        }
        Decision { run, steps: vec![], enqueue: vec![], finish: None }
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

/// A durable sleep fired: memoize `null` and move on.
pub fn on_wake(run: &RunRecord, item: &QueueItem, ctx: &TransitionContext<'_>) -> Decision {
    let mut d = Decision::new(run, ctx.now);
    d.steps.push(step_record(run, &item.step_id, None, Value::Null, ctx.now));
    d.step_settled(&item.step_id, ctx.now);
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
                        d.step_settled(&op.id, now);
                    }
                    Opcode::StepError | Opcode::StepFailed => {
                        let error = normalize_error(op.error.as_ref().unwrap_or(&Value::Null), "step failed");
                        let final_failure =
                            op.opcode() == Opcode::StepFailed || no_retry || item.attempt + 1 >= max_attempts;
                        if final_failure {
                            d.steps.push(step_record(run, &op.id, Some(op.label()), json!({ "error": error }), now));
                            d.step_settled(&op.id, now);
                        } else {
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

#[cfg(test)]
mod tests;
