//! Error semantics with the real TypeScript SDK: retries, NonRetriableError, RetryAfterError,
//! onFailure handlers, unhandled step errors and the `inngest/function.finished` event.

mod support;
use support::*;

use serde_json::{json, Value};

/// The side effects `fn_id`/`step` recorded for `run_id`, in the order they were written.
fn effects_of(worker: &Worker, run_id: &str, fn_id: &str, step: &str) -> Vec<Value> {
    worker.effects().into_iter().filter(|e| e["run"] == run_id && e["fn"] == fn_id && e["step"] == step).collect()
}

#[tokio::test]
async fn retry_then_success_runs_the_step_once_per_attempt() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/retry", json!({"failTimes": 2}), "Completed").await;
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["output"], "recovered", "{run}");
    let attempts: Vec<_> = effects_of(&worker, run_id, "retry-then-succeed", "flaky")
        .iter()
        .map(|e| e["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, vec![0, 1, 2], "flaky ran once per attempt");
}

#[tokio::test]
async fn non_retriable_error_fails_without_retrying() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/nonretriable", json!({}), "Failed").await;
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["error"]["name"], "NonRetriableError", "{run}");
    assert_eq!(run["error"]["message"], "no point retrying", "{run}");
    assert_eq!(worker.count(run_id, "non-retriable", "boom"), 1, "{:?}", worker.effects());
}

#[tokio::test]
async fn retry_after_error_is_honoured() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/retry-after", json!({}), "Completed").await;
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["output"], "ok", "{run}");
    let waits = effects_of(&worker, run_id, "retry-after", "wait");
    assert_eq!(waits.len(), 2, "{waits:?}");
    assert_eq!(waits[0]["attempt"], 0);
    assert_eq!(waits[1]["attempt"], 1);
    let gap = waits[1]["t"].as_i64().unwrap() - waits[0]["t"].as_i64().unwrap();
    assert!(gap >= 1900, "retried after {gap} ms, Retry-After asked for 2s (retry-interval is 300ms)");
}

#[tokio::test]
async fn on_failure_handler_runs_with_the_error_and_original_event() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let data = json!({"marker": "fails-1", "n": 7});
    let failed = sluice.run_to("test/fails", data.clone(), "Failed").await;
    let failed_id = failed["run_id"].as_str().unwrap().to_string();
    assert_eq!(failed["function_id"], "ts-app-with-failure");
    assert_eq!(failed["error"]["message"], "kaboom", "{failed}");
    assert_eq!(worker.count(&failed_id, "with-failure", "explode"), 1, "retries: 0");

    let api = sluice.get_run(&failed_id).await;
    assert!(api["error"]["name"].is_string(), "error has a name: {api}");
    assert!(!api["error"]["name"].as_str().unwrap().is_empty(), "{api}");
    assert_eq!(api["error"]["message"], "kaboom", "{api}");

    let handler_id = eventually("the onFailure run", DEADLINE, || async {
        let runs = sluice.runs_of("ts-app-with-failure-failure").await;
        runs.first().and_then(|r| r["run_id"].as_str().map(String::from))
    })
    .await;
    let handler = sluice.wait_status(&handler_id, "Completed").await;
    assert_eq!(handler["output"], "handled", "{handler}");
    assert_eq!(sluice.runs_of("ts-app-with-failure-failure").await.len(), 1);

    let effects = effects_of(&worker, &handler_id, "with-failure-onfailure", "handler");
    assert_eq!(effects.len(), 1, "{:?}", worker.effects());
    assert_eq!(effects[0]["message"], "kaboom");
    assert_eq!(effects[0]["original"], data);
}

#[tokio::test]
async fn unhandled_step_error_fails_after_its_retries() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/step-error", json!({}), "Failed").await;
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["error"]["message"], "always", "{run}");
    let attempts: Vec<_> = effects_of(&worker, run_id, "unhandled-step-error", "always-fails")
        .iter()
        .map(|e| e["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, vec![0, 1], "one try plus one retry");
}

#[tokio::test]
async fn function_finished_event_carries_the_result() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/hello", json!({"name": "grace"}), "Completed").await;
    let run_id = run["run_id"].as_str().unwrap().to_string();
    assert_eq!(run["output"], json!({"message": "hello grace", "variant": "v1"}));
    let finished = eventually("inngest/function.finished for the run", DEADLINE, || async {
        let (status, body) = sluice.get("/v1/events?name=inngest/function.finished&limit=1000").await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().and_then(|evs| evs.iter().find(|e| e["data"]["run_id"] == run_id.as_str()).cloned())
    })
    .await;
    assert_eq!(finished["name"], "inngest/function.finished");
    assert_eq!(finished["data"]["result"], run["output"], "{finished}");
    assert_eq!(finished["data"]["function_id"], "ts-app-hello");
    assert_eq!(finished["data"]["event"]["data"]["name"], "grace", "{finished}");
}
