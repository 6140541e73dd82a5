//! Step semantics with the real TypeScript SDK: each step body runs once, parallel and race
//! steps, sleeps, sendEvent chains with fan-out.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn hello_world_completes_with_the_function_output() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let event_id = sluice.send("test/hello", json!({"name": "ada"})).await;
    let run_id = sluice.run_of_event(&event_id).await;
    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["output"], json!({"message": "hello ada", "variant": "v1"}));
    assert_eq!(run["function_id"], "ts-app-hello");
    assert_eq!(run["event_id"], event_id.as_str());
    let (status, event) = sluice.get(&format!("/v1/events/{event_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(event["data"]["name"], "test/hello");
    assert_eq!(event["data"]["data"]["name"], "ada");
}

#[tokio::test]
async fn sequential_steps_each_run_exactly_once() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/steps", json!({}), "Completed").await;
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["output"], "ABC");
    for step in ["a", "b", "c"] {
        assert_eq!(worker.count(run_id, "steps", step), 1, "step {step} ran more than once");
    }
    let steps = sluice.steps(run_id).await;
    let names: Vec<_> = steps.iter().map(|s| s["name"].as_str().unwrap_or("")).collect();
    assert_eq!(names, vec!["a", "b", "c"], "memoized in completion order");
}
