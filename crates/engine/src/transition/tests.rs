use super::*;
use sluice_protocol::run::RunStatus;
use sluice_store::RunState;

fn run() -> RunRecord {
    RunRecord {
        id: "r".into(),
        function_id: "f".into(),
        app_id: "a".into(),
        event_id: "e".into(),
        event_ids: vec!["e".into()],
        status: RunStatus::Queued,
        state: RunState { max_attempts: 3, ..Default::default() },
        output: None,
        error: None,
        parked_reason: None,
        created_at: 0,
        started_at: None,
        ended_at: None,
        updated_at: 0,
        rev: 0,
    }
}

fn op(kind: &str, id: &str) -> GeneratorOp {
    serde_json::from_value(json!({"op": kind, "id": id, "name": id, "data": id})).unwrap()
}

static TRIGGER: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| json!({"name": "t", "data": {}}));

fn ctx(stored: &HashSet<String>) -> TransitionContext<'_> {
    TransitionContext {
        now: 1_000,
        stored,
        retry_interval: Some(Duration::from_millis(10)),
        trigger_event: &TRIGGER,
        function_exists: &|id| id == "app-child",
    }
}

fn ops(ops: Vec<GeneratorOp>) -> Answer {
    Answer::Ops { ops, no_retry: false, retry_at: None }
}

#[test]
fn a_step_run_is_stored_and_the_run_rediscovered() {
    let stored = HashSet::new();
    let item = discovery_item("r", 0, 0);
    let d = on_answer(&run(), &item, ops(vec![op("StepRun", "s1")]), &ctx(&stored));
    assert_eq!(d.run.status, RunStatus::Running);
    assert_eq!(d.steps[0].value, json!({"data": "s1"}));
    assert_eq!(d.enqueue.len(), 1);
    assert_eq!(d.enqueue[0].step_id, "step");
    assert!(d.finish.is_none());
}

#[test]
fn parallel_plans_force_step_plan_and_rediscover_once_drained() {
    let stored = HashSet::new();
    let item = discovery_item("r", 0, 0);
    let d = on_answer(&run(), &item, ops(vec![op("StepPlanned", "p1"), op("StepPlanned", "p2")]), &ctx(&stored));
    assert!(d.run.state.force_step_plan);
    assert_eq!(d.run.state.pending, vec!["p1", "p2"]);
    let ids: Vec<_> = d.enqueue.iter().map(|i| i.step_id.as_str()).collect();
    assert_eq!(ids, vec!["p1", "p2"]);

    let after_p1 = on_answer(&d.run, &d.enqueue[0], ops(vec![op("StepRun", "p1")]), &ctx(&stored));
    assert!(after_p1.enqueue.is_empty(), "no discovery while p2 is pending");
    assert!(after_p1.run.state.force_step_plan);
    let after_p2 = on_answer(&after_p1.run, &d.enqueue[1], ops(vec![op("StepRun", "p2")]), &ctx(&stored));
    assert_eq!(after_p2.enqueue.len(), 1);
    assert_eq!(after_p2.enqueue[0].step_id, "step");
    assert!(!after_p2.run.state.force_step_plan);
}

#[test]
fn race_mode_rediscovers_after_each_step_and_skips_stored_plans() {
    let mut stored = HashSet::new();
    let item = discovery_item("r", 0, 0);
    let mut fast = op("StepPlanned", "fast");
    fast.opts = Some(json!({"parallelMode": "race"}));
    let mut slow = op("StepPlanned", "slow");
    slow.opts = Some(json!({"parallelMode": "race"}));
    let d = on_answer(&run(), &item, ops(vec![fast.clone(), slow]), &ctx(&stored));
    assert!(d.run.state.race);
    let after_fast = on_answer(&d.run, &d.enqueue[0], ops(vec![op("StepRun", "fast")]), &ctx(&stored));
    assert_eq!(after_fast.enqueue.len(), 1, "race rediscovers while slow is pending");
    stored.insert("fast".to_string());
    let replan = on_answer(&after_fast.run, &after_fast.enqueue[0], ops(vec![fast]), &ctx(&stored));
    assert!(replan.enqueue.is_empty(), "a stored step is never planned again");
}

#[test]
fn step_errors_retry_targeted_until_attempts_run_out() {
    let stored = HashSet::new();
    let item = discovery_item("r", 0, 0);
    let d = on_answer(&run(), &item, ops(vec![op("StepError", "s")]), &ctx(&stored));
    assert!(d.steps.is_empty());
    assert_eq!(d.enqueue[0].step_id, "s");
    assert_eq!(d.enqueue[0].attempt, 1);
    assert_eq!(d.enqueue[0].available_at, 1_010);
    let last = QueueItem { attempt: 2, ..d.enqueue[0].clone() };
    let d = on_answer(&d.run, &last, ops(vec![op("StepError", "s")]), &ctx(&stored));
    assert_eq!(d.steps[0].value["error"]["message"], "step failed");
    assert_eq!(d.enqueue[0].step_id, "step", "a final step error is memoized and the run rediscovered");
    let no_retry = Answer::Ops { ops: vec![op("StepError", "s")], no_retry: true, retry_at: None };
    let d = on_answer(&run(), &item, no_retry, &ctx(&stored));
    assert!(d.steps[0].value.get("error").is_some());
}

#[test]
fn function_errors_retry_then_fail_and_complete_ends_the_run() {
    let stored = HashSet::new();
    let item = discovery_item("r", 0, 0);
    let err = || Answer::Error { error: json!({"name":"Error","message":"x"}), retriable: true, retry_at: Some(5_000) };
    let d = on_answer(&run(), &item, err(), &ctx(&stored));
    assert_eq!(d.enqueue[0].available_at, 5_000);
    assert_eq!(d.enqueue[0].id, item.id);
    let last = QueueItem { attempt: 2, ..item.clone() };
    let d = on_answer(&run(), &last, err(), &ctx(&stored));
    assert_eq!(d.run.status, RunStatus::Failed);
    assert!(d.enqueue.is_empty());
    let d = on_answer(&run(), &item, Answer::Completed(json!(7)), &ctx(&stored));
    assert_eq!(d.run.status, RunStatus::Completed);
    assert_eq!(d.finish, Some(Finish::Completed(json!(7))));
}

#[test]
fn sleeps_become_durable_timers_and_waking_memoizes_null() {
    let stored = HashSet::new();
    let item = discovery_item("r", 0, 0);
    let mut sleep = op("Sleep", "nap");
    sleep.name = Some("2s".into());
    let d = on_answer(&run(), &item, ops(vec![sleep]), &ctx(&stored));
    assert_eq!(d.enqueue[0].kind, ItemKind::Wake);
    assert_eq!(d.enqueue[0].available_at, 3_000);
    let woke = on_wake(&d.run, &d.enqueue[0], &ctx(&stored));
    assert_eq!(woke.steps[0].value, Value::Null);
    assert_eq!(woke.enqueue[0].step_id, "step");
}

#[test]
fn wait_for_event_creates_a_pause_with_a_timeout_and_resolves_into_the_step() {
    let stored = HashSet::new();
    let item = discovery_item("r", 0, 0);
    let op: GeneratorOp = serde_json::from_value(json!({"op": "WaitForEvent", "id": "w", "name": "app/approved",
        "opts": {"timeout": "1h", "if": "event.data.id == async.data.id"}}))
    .unwrap();
    let d = on_answer(&run(), &item, ops(vec![op]), &ctx(&stored));
    assert_eq!(d.new_pauses.len(), 1);
    let p = &d.new_pauses[0];
    assert_eq!(p.event_name, "app/approved");
    assert_eq!(p.expires_at, 1_000 + 3_600_000);
    assert_eq!(p.kind, PauseKind::WaitForEvent);
    assert_eq!(d.enqueue[0].kind, ItemKind::PauseTimeout);
    assert_eq!(d.run.state.pending, vec!["w"]);
    let resolved = on_pause_resolved(&d.run, "w", json!({"name": "app/approved"}), &ctx(&stored));
    assert_eq!(resolved.steps[0].value["name"], "app/approved");
    assert_eq!(resolved.enqueue[0].step_id, "step");
}

#[test]
fn invoke_emits_the_invocation_and_unknown_targets_resolve_with_an_error() {
    let stored = HashSet::new();
    let item = discovery_item("r", 0, 0);
    let op: GeneratorOp = serde_json::from_value(json!({"op": "InvokeFunction", "id": "i",
        "opts": {"function_id": "app-child", "payload": {"data": {"n": 21}}, "timeout": "5m"}}))
    .unwrap();
    let d = on_answer(&run(), &item, ops(vec![op]), &ctx(&stored));
    assert_eq!(d.emit[0].name, "inngest/function.invoked");
    assert_eq!(d.emit[0].data["n"], 21);
    assert_eq!(d.emit[0].data["_inngest"]["fn_id"], "app-child");
    assert_eq!(d.emit[0].data["_inngest"]["correlation_id"], "r.i");
    assert_eq!(d.new_pauses[0].match_key.as_deref(), Some("r.i"));
    assert_eq!(d.new_pauses[0].expires_at, 1_000 + 300_000);

    let missing: GeneratorOp = serde_json::from_value(json!({"op": "InvokeFunction", "id": "i",
        "opts": {"function_id": "app-nope", "payload": {"data": {}}}}))
    .unwrap();
    let d = on_answer(&run(), &item, ops(vec![missing]), &ctx(&stored));
    assert!(d.new_pauses.is_empty());
    assert!(d.steps[0].value["error"]["message"].as_str().unwrap().contains("app-nope"));
    assert_eq!(pause_timeout_value(PauseKind::Invoke)["error"]["name"], "InngestInvokeTimeoutError");
}

#[test]
fn unsupported_opcodes_fail_the_run_with_a_code_instead_of_stranding_it() {
    let stored = HashSet::new();
    let item = discovery_item("r", 0, 0);
    let d = on_answer(&run(), &item, ops(vec![op("WaitForSignal", "w")]), &ctx(&stored));
    assert_eq!(d.run.status, RunStatus::Failed);
    assert_eq!(d.run.error.unwrap()["code"], run_codes::OPCODE_UNSUPPORTED);
}

#[test]
fn empty_answers_with_nothing_pending_rediscover_then_fail() {
    let stored = HashSet::new();
    let item = discovery_item("r", 0, 0);
    let d = on_answer(&run(), &item, ops(vec![]), &ctx(&stored));
    assert_eq!(d.enqueue.len(), 1);
    assert_eq!(d.enqueue[0].attempt, 1);
    let last = QueueItem { attempt: 2, ..item };
    let d = on_answer(&run(), &last, ops(vec![]), &ctx(&stored));
    assert_eq!(d.run.status, RunStatus::Failed);
}
