//! Durability with real crashes: sluice and SDK workers are SIGKILLed mid-run and restarted;
//! accepted events and stored steps survive, stored steps never run again, and an SDK outage is
//! neither a failure nor an attempt.

mod support;
use support::*;

use std::time::Duration;

use serde_json::{json, Value};

/// Effects of `fn_id`/`step` for `run_id`, in the order they were recorded.
fn effects_of(worker: &Worker, run_id: &str, fn_id: &str, step: &str) -> Vec<Value> {
    worker.effects().into_iter().filter(|e| e["run"] == run_id && e["fn"] == fn_id && e["step"] == step).collect()
}

fn phase_count(effects: &[Value], phase: &str) -> usize {
    effects.iter().filter(|e| e["phase"] == phase).count()
}

async fn app_status(sluice: &Sluice, app_id: &str) -> Option<Value> {
    let (status, body) = sluice.get("/v1/apps").await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array()?.iter().find(|a| a["id"] == app_id).map(|a| a["status"].clone())
}

#[tokio::test]
async fn sluice_killed_mid_step_resumes_without_rerunning_stored_steps() {
    let (mut sluice, worker) = dev_with_ts_worker().await;
    let event_id = sluice.send("test/slow", json!({"ms": 4000})).await;
    let run_id = sluice.run_of_event(&event_id).await;

    worker
        .wait_effect("the long step to start", |e| {
            e["run"] == run_id.as_str() && e["fn"] == "slow-step" && e["step"] == "long" && e["phase"] == "start"
        })
        .await;
    // `long` only runs once `first` is stored.
    assert_eq!(worker.count(&run_id, "slow-step", "first"), 1);

    sluice.kill9();
    sluice.restart().await;

    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["output"], "slow-done", "{run}");
    assert_eq!(worker.count(&run_id, "slow-step", "first"), 1, "first was stored before the crash");
    assert_eq!(worker.count(&run_id, "slow-step", "last"), 1);
    let long = effects_of(&worker, &run_id, "slow-step", "long");
    let starts = phase_count(&long, "start");
    assert!(
        (1..=2).contains(&starts),
        "long started {starts} times (its result was never stored, so at most twice): {long:?}"
    );
    // The run finished only after some execution of `long` finished.
    let ends = eventually("the long step to have ended at least once", DEADLINE, || {
        let n = phase_count(&effects_of(&worker, &run_id, "slow-step", "long"), "end");
        async move { (n >= 1).then_some(n) }
    })
    .await;
    assert!(ends <= starts, "long ended {ends} times but started {starts} times");

    let steps = sluice.steps(&run_id).await;
    let names: Vec<_> = steps.iter().map(|s| s["name"].as_str().unwrap_or("")).collect();
    assert_eq!(names, vec!["first", "long", "last"], "each step stored once: {steps:?}");
}

#[tokio::test]
async fn accepted_events_survive_a_kill() {
    let (mut sluice, _worker) = dev_with_ts_worker().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(sluice.send("test/hello", json!({"name": format!("n{i}")})).await);
    }
    // Immediately after the last 200: no chance for sluice to finish (or even start) the runs.
    sluice.kill9();
    sluice.restart().await;

    for (i, event_id) in ids.iter().enumerate() {
        let run_id = sluice.run_of_event(event_id).await;
        let run = sluice.wait_status(&run_id, "Completed").await;
        assert_eq!(run["output"], json!({"message": format!("hello n{i}"), "variant": "v1"}), "{run}");
    }
    // Exactly one run per event, after everything has settled.
    for event_id in &ids {
        let runs = sluice.runs_for_event(event_id).await;
        assert_eq!(runs.len(), 1, "event {event_id}: {runs:?}");
        assert_eq!(runs[0]["status"], "Completed", "{runs:?}");
    }
    let all = sluice.runs_of("ts-app-hello").await;
    assert_eq!(all.len(), 20, "exactly 20 hello runs: {all:?}");
}

#[tokio::test]
async fn worker_killed_mid_step_is_not_a_failure() {
    let (sluice, mut worker) = dev_with_ts_worker().await;
    let event_id = sluice.send("test/slow", json!({"ms": 3000})).await;
    let run_id = sluice.run_of_event(&event_id).await;

    let first_start = worker
        .wait_effect("the long step to start", |e| {
            e["run"] == run_id.as_str() && e["fn"] == "slow-step" && e["step"] == "long" && e["phase"] == "start"
        })
        .await;
    worker.kill9();
    // Keep the worker down for a while: this sleep *is* the outage.
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.restart().await;

    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["output"], "slow-done", "{run}");
    assert!(run["error"].is_null(), "no error recorded: {run}");
    assert_eq!(worker.count(&run_id, "slow-step", "first"), 1, "first was stored before the crash");
    assert_eq!(worker.count(&run_id, "slow-step", "last"), 1);

    let long = effects_of(&worker, &run_id, "slow-step", "long");
    // The killed execution never ended; the re-run (a new process) did, and it ran as attempt 0.
    let killed_pid = first_start["pid"].clone();
    assert!(
        !long.iter().any(|e| e["pid"] == killed_pid && e["phase"] == "end"),
        "the killed worker cannot have finished long: {long:?}"
    );
    let rerun: Vec<_> = long.iter().filter(|e| e["pid"] != killed_pid).collect();
    assert_eq!(phase_count(&long, "start"), 2, "long ran once before and once after the crash: {long:?}");
    assert!(rerun.iter().any(|e| e["phase"] == "end"), "the re-run finished: {long:?}");
    for e in worker.effects().iter().filter(|e| e["run"] == run_id.as_str()) {
        assert_eq!(e["attempt"], 0, "an unreachable SDK must not use up an attempt: {e}");
    }
}

#[tokio::test]
async fn worker_down_past_the_budget_parks_runs_and_they_resume_when_it_returns() {
    let sluice = Sluice::dev_with(&["--unreachable-budget", "2s"]).await;
    let mut worker = Worker::ts(&sluice, &[]).await;
    sluice.sync(&worker.url()).await;
    assert_eq!(app_status(&sluice, "ts-app").await, Some(json!("Synced")));

    worker.kill9();
    let event_id = sluice.send("test/steps", json!({})).await;
    let run_id = sluice.run_of_event(&event_id).await;

    let run = sluice.wait_status_for(&run_id, "PausedUnreachable", Duration::from_secs(30)).await;
    assert!(run["parked_reason"].as_str().is_some_and(|r| !r.is_empty()), "a parked run says why: {run}");
    assert_eq!(app_status(&sluice, "ts-app").await, Some(json!("Unreachable")));
    assert!(worker.effects().is_empty(), "nothing can have run: {:?}", worker.effects());

    worker.restart().await;
    // No nudge from the test: sluice re-syncs the app on its own and the run resumes.
    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["output"], "ABC", "{run}");
    assert!(run["parked_reason"].is_null(), "no longer parked: {run}");
    for step in ["a", "b", "c"] {
        assert_eq!(worker.count(&run_id, "steps", step), 1, "step {step}");
    }
    for e in worker.effects() {
        assert_eq!(e["attempt"], 0, "the outage used no attempt: {e}");
    }
    let status = eventually("the app to be Synced again", DEADLINE, || async {
        let s = app_status(&sluice, "ts-app").await?;
        (s == "Synced").then_some(s)
    })
    .await;
    assert_eq!(status, "Synced");
}

#[tokio::test]
async fn app_gone_during_a_sleep_parks_the_wake_and_resumes_when_back() {
    let sluice = Sluice::dev_with(&["--unreachable-budget", "2s"]).await;
    let mut worker = Worker::ts(&sluice, &[]).await;
    sluice.sync(&worker.url()).await;

    let event_id = sluice.send("test/sleep", json!({"duration": "2s"})).await;
    let run_id = sluice.run_of_event(&event_id).await;
    let before = worker
        .wait_effect("the step before the sleep", |e| {
            e["run"] == run_id.as_str() && e["fn"] == "sleeper" && e["step"] == "before"
        })
        .await;
    // The app disappears while the run sleeps; its wake-up finds nobody.
    worker.kill9();

    let run = sluice.wait_status_for(&run_id, "PausedUnreachable", Duration::from_secs(30)).await;
    assert!(run["parked_reason"].as_str().is_some_and(|r| !r.is_empty()), "{run}");
    assert_eq!(worker.count(&run_id, "sleeper", "after"), 0);

    worker.restart().await;
    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["output"], "slept", "{run}");
    assert_eq!(worker.count(&run_id, "sleeper", "before"), 1);
    assert_eq!(worker.count(&run_id, "sleeper", "after"), 1);
    let after = effects_of(&worker, &run_id, "sleeper", "after").remove(0);
    let gap = after["t"].as_i64().unwrap() - before["t"].as_i64().unwrap();
    assert!(gap >= 1900, "the sleep was honoured: {gap} ms");
}
