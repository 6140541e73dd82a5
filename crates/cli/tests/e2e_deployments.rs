//! Deployments on the server side: staged syncs, the callback probe, cutover, pinning of runs in
//! flight, failover of runs whose pinned deployment dies, and rollback.

mod support;

use serde_json::{json, Value};
use support::*;

async fn post(sluice: &Sluice, path: &str, body: Value) -> (u16, Value) {
    let r = http().post(format!("{}{}", sluice.url(), path)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn stage(sluice: &Sluice, worker: &Worker) -> Value {
    let (status, body) = post(sluice, "/v1/apps/sync", json!({"url": worker.url(), "activate": false})).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

#[tokio::test]
async fn a_staged_deployment_takes_no_traffic_until_cutover_and_pinned_runs_finish_where_they_started() {
    let sluice = Sluice::dev_with(&["--failover-grace", "1s"]).await;
    let v1 = Worker::ts(&sluice, &[("VARIANT", "v1")]).await;
    let first = sluice.sync(&v1.url()).await;
    assert_eq!(first["deployment_status"], "current");
    let v1_id = first["deployment_id"].as_str().unwrap().to_string();

    // A long run starts on v1 before the new version arrives.
    let slow_event = sluice.send("test/slow", json!({"ms": 2500})).await;
    let slow_run = sluice.run_of_event(&slow_event).await;
    v1.wait_effect("the slow step on v1", |e| e["run"] == slow_run.as_str() && e["step"] == "long").await;

    let v2 = Worker::ts(&sluice, &[("VARIANT", "v2")]).await;
    let staged = stage(&sluice, &v2).await;
    assert_eq!(staged["deployment_status"], "registered");
    let v2_id = staged["deployment_id"].as_str().unwrap().to_string();
    assert_ne!(v1_id, v2_id);

    // Still v1 for new runs.
    let before = sluice.run_to("test/hello", json!({"name": "a"}), "Completed").await;
    assert_eq!(before["output"]["variant"], "v1");

    // The callback probe runs on v2 only.
    let (status, probe) = post(&sluice, &format!("/v1/deployments/{v2_id}/probe"), json!({})).await;
    assert_eq!(status, 200, "{probe}");
    assert_eq!(probe["data"]["mode"], "function");
    let probe_run = probe["data"]["run_id"].as_str().unwrap();
    let done = sluice.wait_status(probe_run, "Completed").await;
    assert_eq!(done["output"]["variant"], "v2");
    assert_eq!(v1.effects().iter().filter(|e| e["fn"] == "probe").count(), 0, "v1 never ran the probe");

    // Cutover.
    let (status, cut) = post(&sluice, &format!("/v1/deployments/{v2_id}/activate"), json!({})).await;
    assert_eq!(status, 200, "{cut}");
    assert_eq!(cut["data"]["previous"], v1_id.as_str());
    let after = sluice.run_to("test/hello", json!({"name": "b"}), "Completed").await;
    assert_eq!(after["output"]["variant"], "v2");
    let (_, old) = sluice.get(&format!("/v1/deployments/{v1_id}")).await;
    assert_eq!(old["data"]["status"], "draining");

    // The run in flight on v1 finished on v1: every step of it ran in v1's process.
    sluice.wait_status(&slow_run, "Completed").await;
    let pids: Vec<_> =
        v1.effects().iter().filter(|e| e["run"] == slow_run.as_str()).map(|e| e["pid"].clone()).collect();
    assert!(pids.len() >= 4, "first, long start/end and last ran on v1: {pids:?}");
    assert!(v2.effects().iter().all(|e| e["run"] != slow_run.as_str()));
    let (_, old) = sluice.get(&format!("/v1/deployments/{v1_id}")).await;
    assert_eq!(old["data"]["in_flight_runs"], 0);
}

#[tokio::test]
async fn runs_pinned_to_a_dead_deployment_fail_over_to_the_current_one() {
    let sluice = Sluice::dev_with(&["--failover-grace", "1s"]).await;
    let mut v1 = Worker::ts(&sluice, &[("VARIANT", "v1")]).await;
    sluice.sync(&v1.url()).await;
    let ev = sluice.send("test/sleep", json!({"duration": "2s"})).await;
    let run = sluice.run_of_event(&ev).await;
    v1.wait_effect("before the sleep", |e| e["run"] == run.as_str() && e["step"] == "before").await;
    let v2 = Worker::ts(&sluice, &[("VARIANT", "v2")]).await;
    let staged = stage(&sluice, &v2).await;
    let v2_id = staged["deployment_id"].as_str().unwrap();
    let (status, _) = post(&sluice, &format!("/v1/deployments/{v2_id}/activate"), json!({})).await;
    assert_eq!(status, 200);
    v1.kill9();
    let done = sluice.wait_status(&run, "Completed").await;
    assert_eq!(done["output"], "slept");
    assert_eq!(v2.count(&run, "sleeper", "after"), 1, "the step after the sleep ran on v2");
}

#[tokio::test]
async fn rollback_makes_the_prior_deployment_current_again() {
    let sluice = Sluice::dev().await;
    let v1 = Worker::ts(&sluice, &[("VARIANT", "v1")]).await;
    let v1_id = sluice.sync(&v1.url()).await["deployment_id"].as_str().unwrap().to_string();
    let v2 = Worker::ts(&sluice, &[("VARIANT", "v2"), ("FUNCTIONS", "hello")]).await;
    let staged = stage(&sluice, &v2).await;
    let v2_id = staged["deployment_id"].as_str().unwrap().to_string();
    assert!(staged["diff"]["removed"].as_array().unwrap().iter().any(|f| f == "ts-app-steps"), "{staged}");
    post(&sluice, &format!("/v1/deployments/{v2_id}/activate"), json!({})).await;
    assert_eq!(sluice.run_to("test/hello", json!({}), "Completed").await["output"]["variant"], "v2");
    let (status, _) =
        post(&sluice, &format!("/v1/deployments/{v1_id}/activate"), json!({"previous_status": "rolled_back"})).await;
    assert_eq!(status, 200);
    assert_eq!(sluice.run_to("test/hello", json!({}), "Completed").await["output"]["variant"], "v1");
    let (_, d2) = sluice.get(&format!("/v1/deployments/{v2_id}")).await;
    assert_eq!(d2["data"]["status"], "rolled_back");
    // A rolled-back worker that re-syncs does not take traffic back.
    sluice.sync(&v2.url()).await;
    assert_eq!(sluice.run_to("test/hello", json!({}), "Completed").await["output"]["variant"], "v1");
    let (_, list) = sluice.get("/v1/deployments?app_id=ts-app").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn auto_upgrade_moves_runs_in_flight_to_the_new_deployment_and_survives_a_restart() {
    let mut sluice = Sluice::dev().await;
    let v1 = Worker::ts(&sluice, &[("VARIANT", "v1")]).await;
    sluice.sync(&v1.url()).await;
    let r = http()
        .put(format!("{}/v1/apps/ts-app/routing", sluice.url()))
        .json(&json!({"policy": "auto-upgrade"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The policy is stored: it outlives a crash.
    sluice.kill9();
    sluice.restart().await;
    let ev = sluice.send("test/sleep", json!({"duration": "2s"})).await;
    let run = sluice.run_of_event(&ev).await;
    v1.wait_effect("before the sleep on v1", |e| e["run"] == run.as_str() && e["step"] == "before").await;
    let v2 = Worker::ts(&sluice, &[("VARIANT", "v2")]).await;
    let staged = stage(&sluice, &v2).await;
    let v2_id = staged["deployment_id"].as_str().unwrap();
    let (status, _) = post(&sluice, &format!("/v1/deployments/{v2_id}/activate"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(sluice.wait_status(&run, "Completed").await["output"], "slept");
    assert_eq!(v2.count(&run, "sleeper", "after"), 1, "with auto-upgrade the next step ran on v2 while v1 was alive");
    assert_eq!(v1.count(&run, "sleeper", "after"), 0);
}
