//! The workload features beyond plain steps, with the real TypeScript SDK: waitForEvent, invoke,
//! cancelOn, timeouts, singleton, idempotency and rate limits.

mod support;

use serde_json::{json, Value};
use support::*;

fn unique() -> String {
    ulid::Ulid::new().to_string()
}

#[tokio::test]
async fn wait_for_event_resumes_on_a_matching_event_but_not_on_another() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let id = unique();
    let event_id = sluice.send("test/wait.start", json!({"id": id, "timeout": "30s"})).await;
    let run_id = sluice.run_of_event(&event_id).await;
    worker.wait_effect("the step before the wait", |e| e["run"] == run_id.as_str() && e["step"] == "before").await;
    // The wait exists once the run has planned it; an event before that would rightly not count.
    eventually("the wait to be registered", DEADLINE, || async {
        let (_, steps) = sluice.get(&format!("/v1/runs/{run_id}")).await;
        (steps["data"]["pending_steps"].as_array().map(|p| !p.is_empty()) == Some(true)).then_some(())
    })
    .await;
    // A non-matching event (other id) does not resume it.
    sluice.send("test/wait.approve", json!({"id": "someone-else", "ok": false})).await;
    sluice.send("test/wait.approve", json!({"id": id, "ok": true})).await;
    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["output"]["approved"], json!({"id": id, "ok": true}));
    assert_eq!(worker.count(&run_id, "wait-approval", "after"), 1);
}

#[tokio::test]
async fn wait_for_event_times_out_to_null() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/wait.start", json!({"id": unique(), "timeout": "1s"}), "Completed").await;
    assert_eq!(run["output"], json!({"approved": null}));
    let run_id = run["run_id"].as_str().unwrap();
    let after = worker.effects().into_iter().find(|e| e["run"] == run_id && e["step"] == "after").unwrap();
    assert_eq!(after["approved"], Value::Null);
}

#[tokio::test]
async fn invoke_returns_the_child_result() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/invoke.start", json!({"n": 21}), "Completed").await;
    assert_eq!(run["output"], json!({"child": {"doubled": 42}}));
    let child_runs = sluice.runs_of("ts-app-invoke-child").await;
    assert_eq!(child_runs.len(), 1);
    assert_eq!(child_runs[0]["status"], "Completed");
    let child_id = child_runs[0]["run_id"].as_str().unwrap();
    assert_eq!(worker.count(child_id, "invoke-child", "double"), 1);
}

#[tokio::test]
async fn invoke_times_out_with_the_invoke_timeout_error() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let run =
        sluice.run_to("test/invoke.start", json!({"n": 1, "childSleep": "4s", "timeout": "1s"}), "Completed").await;
    let out = &run["output"];
    assert!(out["child"].is_null(), "{out}");
    assert!(
        out["error"].as_str().unwrap_or("").contains("Timeout")
            || out["message"].as_str().unwrap_or("").contains("Timed out"),
        "the parent saw the invoke timeout: {out}"
    );
}

#[tokio::test]
async fn cancel_on_stops_a_sleeping_run_and_the_step_after_never_runs() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let id = unique();
    let event_id = sluice.send("test/cancel.start", json!({"id": id, "duration": "3s"})).await;
    let run_id = sluice.run_of_event(&event_id).await;
    worker.wait_effect("the step before the sleep", |e| e["run"] == run_id.as_str() && e["step"] == "before").await;
    // Another id's stop event must not cancel it; ours must.
    sluice.send("test/cancel.stop", json!({"id": "other"})).await;
    sluice.send("test/cancel.stop", json!({"id": id})).await;
    sluice.wait_status(&run_id, "Cancelled").await;
    // A control run, started now with the same sleep, finishing proves the cancelled run's nap is over.
    let control = sluice.run_to("test/cancel.start", json!({"id": unique(), "duration": "3s"}), "Completed").await;
    assert_eq!(control["output"], "finished");
    assert_eq!(worker.count(&run_id, "cancellable", "after"), 0);
    assert_eq!(sluice.get_run(&run_id).await["status"], "Cancelled");
}

#[tokio::test]
async fn timeouts_finish_cancels_a_run_that_runs_too_long() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let event_id = sluice.send("test/timeout.finish", json!({})).await;
    let run_id = sluice.run_of_event(&event_id).await;
    sluice.wait_status(&run_id, "Cancelled").await;
    assert_eq!(worker.count(&run_id, "timeout-finish", "before"), 1);
    assert_eq!(worker.count(&run_id, "timeout-finish", "after"), 0);
}

#[tokio::test]
async fn singleton_skip_drops_a_second_run_while_the_first_is_active() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let first = sluice.send("test/singleton.skip", json!({"key": "k", "n": 1})).await;
    let first_run = sluice.run_of_event(&first).await;
    let second = sluice.send("test/singleton.skip", json!({"key": "k", "n": 2})).await;
    let other_key = sluice.send("test/singleton.skip", json!({"key": "other", "n": 3})).await;
    assert!(sluice.runs_for_event(&second).await.is_empty(), "a second run with the same key was skipped");
    let other_run = sluice.run_of_event(&other_key).await;
    assert_eq!(sluice.wait_status(&first_run, "Completed").await["output"], json!({"n": 1}));
    sluice.wait_status(&other_run, "Completed").await;
    // Once the first has ended, the key is free again.
    let third = sluice.run_to("test/singleton.skip", json!({"key": "k", "n": 4}), "Completed").await;
    assert_eq!(third["output"], json!({"n": 4}));
}

#[tokio::test]
async fn singleton_cancel_replaces_the_active_run() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let first = sluice.send("test/singleton.cancel", json!({"key": "k", "n": 1, "hold": "5s"})).await;
    let first_run = sluice.run_of_event(&first).await;
    worker.wait_effect("the first run working", |e| e["run"] == first_run.as_str()).await;
    let second = sluice.send("test/singleton.cancel", json!({"key": "k", "n": 2, "hold": "1s"})).await;
    let second_run = sluice.run_of_event(&second).await;
    sluice.wait_status(&first_run, "Cancelled").await;
    assert_eq!(sluice.wait_status(&second_run, "Completed").await["output"], json!({"n": 2}));
}

#[tokio::test]
async fn idempotency_allows_one_run_per_key() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let a = sluice.send("test/idempotent", json!({"userId": "u1", "n": 1})).await;
    let b = sluice.send("test/idempotent", json!({"userId": "u1", "n": 2})).await;
    let c = sluice.send("test/idempotent", json!({"userId": "u2", "n": 3})).await;
    let run_a = sluice.run_of_event(&a).await;
    let run_c = sluice.run_of_event(&c).await;
    assert!(sluice.runs_for_event(&b).await.is_empty());
    assert_eq!(sluice.wait_status(&run_a, "Completed").await["output"], json!({"userId": "u1", "n": 1}));
    sluice.wait_status(&run_c, "Completed").await;
    assert_eq!(sluice.runs_of("ts-app-idempotent").await.len(), 2);
}

#[tokio::test]
async fn rate_limit_skips_events_over_the_limit() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let mut with_runs = 0;
    for n in 0..5 {
        let id = sluice.send("test/rate", json!({"n": n})).await;
        if !sluice.runs_for_event(&id).await.is_empty() {
            with_runs += 1;
        }
    }
    assert_eq!(with_runs, 2, "limit 2 per minute");
    assert_eq!(sluice.runs_of("ts-app-rate-limited").await.len(), 2);
}

#[tokio::test]
async fn timeouts_start_cancels_a_run_that_could_not_start_in_time() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let first = sluice.send("test/start.timeout", json!({"n": 1, "ms": 3000})).await;
    let first = sluice.run_of_event(&first).await;
    worker.wait_effect("the first run holding the only slot", |e| e["run"] == first.as_str()).await;
    let second = sluice.send("test/start.timeout", json!({"n": 2})).await;
    let second = sluice.run_of_event(&second).await;
    sluice.wait_status(&second, "Cancelled").await;
    assert_eq!(sluice.wait_status(&first, "Completed").await["output"], json!({"n": 1}));
    assert!(worker.effects().iter().all(|e| e["run"] != second.as_str()), "the cancelled run never ran a step");
}
