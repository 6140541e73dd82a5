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

/// Millisecond timestamp `t` of the one side effect `fn_id`/`step` recorded for `run_id`.
fn effect_time(worker: &Worker, run_id: &str, fn_id: &str, step: &str) -> i64 {
    let hits: Vec<_> =
        worker.effects().into_iter().filter(|e| e["run"] == run_id && e["fn"] == fn_id && e["step"] == step).collect();
    assert_eq!(hits.len(), 1, "expected exactly one {fn_id}/{step} effect: {hits:?}");
    hits[0]["t"].as_i64().expect("effect has a numeric t")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn promise_all_of_steps_runs_each_step_once() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/parallel", json!({}), "Completed").await;
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["output"], 6, "1 + 2 + 3: {run}");
    for step in ["p1", "p2", "p3", "after"] {
        assert_eq!(worker.count(run_id, "parallel", step), 1, "step {step}: {:?}", worker.effects());
    }
    let steps = sluice.steps(run_id).await;
    let mut names: Vec<_> = steps.iter().map(|s| s["name"].as_str().unwrap_or("").to_string()).collect();
    names.sort();
    assert_eq!(names, vec!["after", "p1", "p2", "p3"], "memoized steps: {steps:?}");
}

#[tokio::test]
async fn race_returns_the_fast_step() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/race", json!({}), "Completed").await;
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["output"], "fast", "{run}");
    assert_eq!(worker.count(run_id, "race", "fast"), 1, "{:?}", worker.effects());
    assert!(worker.count(run_id, "race", "slow") <= 1, "slow ran more than once: {:?}", worker.effects());
}

#[tokio::test]
async fn sleep_keeps_the_run_running_then_resumes_after_the_duration() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let event_id = sluice.send("test/sleep", json!({"duration": "2s"})).await;
    let run_id = sluice.run_of_event(&event_id).await;

    // While napping: `before` is done and memoized, `after` has not run, the run is Running.
    let during = eventually("the run to be asleep after `before`", DEADLINE, || async {
        if worker.count(&run_id, "sleeper", "before") != 1 {
            return None;
        }
        let run = sluice.get_run(&run_id).await;
        let steps = sluice.steps(&run_id).await;
        // Read the run first, then check `after` has not happened: the read was mid-sleep.
        let asleep = worker.count(&run_id, "sleeper", "after") == 0;
        (asleep && steps.iter().any(|s| s["name"] == "before")).then_some(run)
    })
    .await;
    assert_eq!(during["status"], "Running", "mid-sleep run: {during}");
    assert_eq!(during["run_id"], run_id.as_str());
    assert!(during["output"].is_null(), "no output yet: {during}");

    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["output"], "slept");
    let before = effect_time(&worker, &run_id, "sleeper", "before");
    let after = effect_time(&worker, &run_id, "sleeper", "after");
    assert!(after - before >= 1900, "slept only {} ms (before={before}, after={after})", after - before);
}

#[tokio::test]
async fn sleep_until_wakes_at_the_given_time() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let until_ms = now_ms() + 2000;
    let until = sluice_protocol::duration::format_rfc3339_ms(until_ms);
    let run = sluice.run_to("test/sleep-until", json!({"until": until}), "Completed").await;
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(run["output"], "woke", "{run}");
    let after = effect_time(&worker, run_id, "sleep-until", "after");
    assert!(after >= until_ms - 100, "woke {} ms early (until={until})", until_ms - after);
}

#[tokio::test]
async fn send_event_chain_fans_out_to_both_leaves() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let origin = format!("origin-{}-{}", std::process::id(), now_ms());
    let event_a = sluice.send("test/chain.a", json!({"origin": origin})).await;
    let run_a_id = sluice.run_of_event(&event_a).await;
    let run_a = sluice.wait_status(&run_a_id, "Completed").await;
    assert_eq!(run_a["function_id"], "ts-app-chain-a");
    let ids = run_a["output"]["ids"].as_array().unwrap_or_else(|| panic!("chain-a output has ids: {run_a}"));
    assert_eq!(ids.len(), 1, "one event sent: {run_a}");
    let event_b = ids[0].as_str().unwrap().to_string();

    let (status, ev_b) = sluice.get(&format!("/v1/events/{event_b}")).await;
    assert_eq!(status, 200, "{ev_b}");
    assert_eq!(ev_b["data"]["name"], "test/chain.b");
    assert_eq!(ev_b["data"]["data"]["origin"], origin.as_str());

    let runs_b = sluice.runs_for_event(&event_b).await;
    assert_eq!(runs_b.len(), 1, "event b triggers one run: {runs_b:?}");
    assert_eq!(runs_b[0]["function_id"], "ts-app-chain-b");
    let run_b_id = runs_b[0]["run_id"].as_str().unwrap().to_string();
    let run_b = sluice.wait_status(&run_b_id, "Completed").await;
    let event_c = run_b["output"]["ids"][0].as_str().unwrap_or_else(|| panic!("chain-b output: {run_b}")).to_string();

    let runs_c = eventually("both leaves to be triggered", DEADLINE, || async {
        let runs = sluice.runs_for_event(&event_c).await;
        (runs.len() >= 2).then_some(runs)
    })
    .await;
    let mut fns: Vec<_> = runs_c.iter().map(|r| r["function_id"].as_str().unwrap().to_string()).collect();
    fns.sort();
    assert_eq!(fns, vec!["ts-app-chain-c1", "ts-app-chain-c2"], "{runs_c:?}");

    for leaf in ["chain-c1", "chain-c2"] {
        let runs = sluice.runs_of(&format!("ts-app-{leaf}")).await;
        assert_eq!(runs.len(), 1, "{leaf} runs: {runs:?}");
        let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
        assert_eq!(runs[0]["event_id"], event_c.as_str());
        let run = sluice.wait_status(&run_id, "Completed").await;
        assert_eq!(run["output"], json!({"leaf": leaf, "origin": origin}));
        let leaf_effects: Vec<_> = worker
            .effects()
            .into_iter()
            .filter(|e| e["fn"] == leaf && e["step"] == "leaf" && e["origin"] == origin.as_str())
            .collect();
        assert_eq!(leaf_effects.len(), 1, "{leaf} leaf ran once: {leaf_effects:?}");
        assert_eq!(leaf_effects[0]["run"], run_id.as_str());
    }
}

#[tokio::test]
async fn wildcard_trigger_matches_a_nested_event_name() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/wild/abc", json!({}), "Completed").await;
    assert_eq!(run["function_id"], "ts-app-wildcard");
    assert_eq!(run["output"], "test/wild/abc");
}

#[tokio::test]
async fn expression_trigger_runs_only_when_the_condition_holds() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    // The non-matching event first, so that by the time the matching one has finished the
    // non-matching one has long been processed.
    let no = sluice.send("test/expr", json!({"ok": false})).await;
    let yes = sluice.send("test/expr", json!({"ok": true})).await;
    let run_id = sluice.run_of_event(&yes).await;
    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["function_id"], "ts-app-expr");
    assert_eq!(run["output"], "matched");

    let (status, ev) = sluice.get(&format!("/v1/events/{no}")).await;
    assert_eq!(status, 200, "the ok:false event was stored: {ev}");
    assert_eq!(ev["data"]["data"]["ok"], false);
    assert!(sluice.runs_for_event(&no).await.is_empty(), "ok:false must not start a run");
    let runs = sluice.runs_of("ts-app-expr").await;
    assert_eq!(runs.len(), 1, "only the ok:true run: {runs:?}");
}
