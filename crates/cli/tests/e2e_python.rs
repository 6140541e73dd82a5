//! The real Python SDK (PyPI `inngest`, Flask) against sluice: plain functions, memoized steps,
//! sleeps, step.send_event triggering another function, and a Python and a TypeScript app synced
//! to the same sluice at once.

mod support;
use support::*;

use serde_json::{json, Value};

async fn dev_with_py_worker() -> (Sluice, Worker) {
    let sluice = Sluice::dev().await;
    let worker = Worker::py(&sluice, &[]).await;
    sluice.sync(&worker.url()).await;
    (sluice, worker)
}

async fn apps(sluice: &Sluice) -> Vec<Value> {
    let (status, body) = sluice.get("/v1/apps").await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn python_hello_completes_with_the_function_output() {
    let (sluice, _worker) = dev_with_py_worker().await;
    let event_id = sluice.send("test/py.hello", json!({"name": "grace"})).await;
    let run_id = sluice.run_of_event(&event_id).await;
    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["output"], json!({"message": "hello grace"}), "{run}");
    assert_eq!(run["function_id"], "py-app-py-hello");
    assert_eq!(run["app_id"], "py-app");
}

#[tokio::test]
async fn python_steps_each_run_exactly_once() {
    let (sluice, worker) = dev_with_py_worker().await;
    let run = sluice.run_to("test/py.steps", json!({}), "Completed").await;
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["output"], json!({"sum": 3}), "{run}");
    for step in ["one", "two"] {
        assert_eq!(worker.count(run_id, "py-steps", step), 1, "step {step}");
    }
    let steps = sluice.steps(run_id).await;
    let names: Vec<_> = steps.iter().map(|s| s["name"].as_str().unwrap_or("")).collect();
    assert_eq!(names, vec!["one", "two"], "{steps:?}");
    let values: Vec<_> = steps.iter().map(|s| s["value"].clone()).collect();
    assert_eq!(values, vec![json!({"data": 1}), json!({"data": 2})], "memoized step results");
}

#[tokio::test]
async fn python_sleep_waits_before_the_next_step() {
    let (sluice, worker) = dev_with_py_worker().await;
    let run = sluice.run_to("test/py.sleep", json!({}), "Completed").await;
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["output"], "slept", "{run}");
    assert_eq!(worker.count(run_id, "py-sleep", "before"), 1);
    assert_eq!(worker.count(run_id, "py-sleep", "after"), 1);
    let effects = worker.effects();
    let t = |step: &str| {
        effects
            .iter()
            .find(|e| e["run"] == run_id && e["fn"] == "py-sleep" && e["step"] == step)
            .and_then(|e| e["t"].as_i64())
            .unwrap()
    };
    let gap = t("after") - t("before");
    assert!(gap >= 1900, "the 2 s sleep was honoured: {gap} ms");
}

#[tokio::test]
async fn python_send_event_triggers_another_function() {
    let (sluice, worker) = dev_with_py_worker().await;
    let run = sluice.run_to("test/py.send", json!({}), "Completed").await;
    let sent_ids = run["output"].as_array().cloned().unwrap_or_default();
    assert_eq!(sent_ids.len(), 1, "send_event returns the sent event's id: {run}");
    let sent_id = sent_ids[0].as_str().unwrap().to_string();

    let (status, event) = sluice.get(&format!("/v1/events/{sent_id}")).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["data"]["name"], "test/py.sent");
    assert_eq!(event["data"]["data"]["from"], "py");

    let sent_run_id = sluice.run_of_event(&sent_id).await;
    let sent_run = sluice.wait_status(&sent_run_id, "Completed").await;
    assert_eq!(sent_run["function_id"], "py-app-py-sent");
    assert_eq!(sent_run["output"], "got", "{sent_run}");
    assert_eq!(worker.count(&sent_run_id, "py-sent", "got"), 1);
    let all = sluice.runs_of("py-app-py-sent").await;
    assert_eq!(all.len(), 1, "one py-sent run: {all:?}");
}

#[tokio::test]
async fn python_and_typescript_apps_side_by_side() {
    let sluice = Sluice::dev().await;
    let ts = Worker::ts(&sluice, &[]).await;
    let py = Worker::py(&sluice, &[]).await;
    sluice.sync(&ts.url()).await;
    sluice.sync(&py.url()).await;

    let apps = apps(&sluice).await;
    let mut ids: Vec<_> = apps.iter().map(|a| a["id"].as_str().unwrap_or("").to_string()).collect();
    ids.sort();
    assert_eq!(ids, vec!["py-app", "ts-app"], "{apps:?}");
    for a in &apps {
        assert_eq!(a["status"], "Synced", "{a}");
    }

    // Both at once, then wait for both.
    let ts_event = sluice.send("test/steps", json!({})).await;
    let py_event = sluice.send("test/py.steps", json!({})).await;
    let ts_run_id = sluice.run_of_event(&ts_event).await;
    let py_run_id = sluice.run_of_event(&py_event).await;
    let ts_run = sluice.wait_status(&ts_run_id, "Completed").await;
    let py_run = sluice.wait_status(&py_run_id, "Completed").await;
    assert_eq!(ts_run["output"], "ABC", "{ts_run}");
    assert_eq!(ts_run["app_id"], "ts-app");
    assert_eq!(py_run["output"], json!({"sum": 3}), "{py_run}");
    assert_eq!(py_run["app_id"], "py-app");
    for step in ["a", "b", "c"] {
        assert_eq!(ts.count(&ts_run_id, "steps", step), 1, "ts step {step}");
    }
    for step in ["one", "two"] {
        assert_eq!(py.count(&py_run_id, "py-steps", step), 1, "py step {step}");
    }
    // Each worker only ran its own app's steps.
    assert!(ts.effects().iter().all(|e| e["run"] == ts_run_id.as_str()), "{:?}", ts.effects());
    assert!(py.effects().iter().all(|e| e["run"] == py_run_id.as_str()), "{:?}", py.effects());

    let hello = sluice.run_to("test/hello", json!({"name": "ts"}), "Completed").await;
    assert_eq!(hello["output"], json!({"message": "hello ts", "variant": "v1"}));
    let hello = sluice.run_to("test/py.hello", json!({"name": "py"}), "Completed").await;
    assert_eq!(hello["output"], json!({"message": "hello py"}));
}
