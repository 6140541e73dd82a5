//! `sluice deploy` end to end: real sluice, real TypeScript workers v1/v2, a load generator
//! sending events the whole time, and `sluice deploy` run as a real process.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::*;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

struct Deploy {
    code: i32,
    out: Value,
    stderr: String,
}

fn deploy_cmd(sluice: &Sluice, state: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    deploy_cmd_at(&sluice.url(), state, args)
}

fn deploy_cmd_at(api: &str, state: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.arg("deploy")
        .args(args)
        .arg("--api")
        .arg(api)
        .arg("--state-dir")
        .arg(state)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    c
}

async fn finish(c: &mut tokio::process::Command) -> Deploy {
    let o = c.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    Deploy {
        code: o.status.code().unwrap_or(-1),
        out: serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}")),
        stderr: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}

const FAST: &[&str] =
    &["--warm-window", "1s", "--check-interval", "250ms", "--bake-window", "3s", "--probe-deadline", "20s"];

fn gate<'a>(out: &'a Value, name: &str) -> &'a Value {
    out["result"]["gates"].as_array().unwrap().iter().find(|g| g["gate"] == name).unwrap()
}

fn schema_validate(v: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("docs/schemas/verify-runtime.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator.iter_errors(v).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "schema errors: {errors:?}\n{v:#}");
}

/// Sends `test/hello` every 100 ms until stopped; remembers (event id, sent at).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<(String, i64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(vec![]));
        let (s, st) = (stop.clone(), sent.clone());
        let task = tokio::spawn(async move {
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                let at = now_ms();
                let r = http()
                    .post(format!("{url}/e/test-key"))
                    .json(&json!({"name": "test/hello", "data": {"name": format!("load-{n}")}}))
                    .send()
                    .await;
                if let Ok(r) = r {
                    if let Ok(v) = r.json::<Value>().await {
                        if let Some(id) = v["ids"][0].as_str() {
                            st.lock().unwrap().push((id.to_string(), at));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Load { stop, sent, task }
    }

    /// Stop, then wait for every run to complete; returns (sent at, variant) per event.
    async fn finish(self, sluice: &Sluice) -> Vec<(i64, String)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let sent = self.sent.lock().unwrap().clone();
        assert!(sent.len() > 10, "the load generator sent {} events", sent.len());
        let mut out = vec![];
        for (id, at) in sent {
            let run = sluice.run_of_event(&id).await;
            let done = sluice.wait_status(&run, "Completed").await;
            out.push((at, done["output"]["variant"].as_str().unwrap_or("").to_string()));
        }
        out
    }
}

async fn current_of(sluice: &Sluice) -> String {
    let (_, list) = sluice.get("/v1/deployments?app_id=ts-app").await;
    list["data"].as_array().unwrap().iter().find(|d| d["current"] == true).unwrap()["id"].as_str().unwrap().to_string()
}

async fn no_run_left_running(sluice: &Sluice) {
    let (_, runs) = sluice.get("/v1/runs?limit=1000").await;
    let bad: Vec<_> = runs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] != "Completed" && r["function_id"] != "ts-app-probe")
        .cloned()
        .collect();
    assert!(bad.is_empty(), "runs not completed: {bad:?}");
}

#[tokio::test]
async fn a_clean_deploy_passes_every_gate_loses_nothing_and_exports_otel_events() {
    let mut collector = fake_opentelemetry_collector::FakeCollectorServer::start().await.unwrap();
    let sluice = Sluice::dev_with(&["--failover-grace", "1s"]).await;
    let v1 = Worker::ts(&sluice, &[("VARIANT", "v1")]).await;
    let v1_id = sluice.sync(&v1.url()).await["deployment_id"].as_str().unwrap().to_string();
    let load = Load::start(sluice.url());
    // A run in flight on v1 when the deploy starts.
    let slow = sluice.send("test/slow", json!({"ms": 3000})).await;
    let slow_run = sluice.run_of_event(&slow).await;
    v1.wait_effect("the slow step on v1", |e| e["run"] == slow_run.as_str() && e["step"] == "long").await;

    let v2 = Worker::ts(&sluice, &[("VARIANT", "v2")]).await;
    let state = tempfile::tempdir().unwrap();
    let mut c = deploy_cmd(&sluice, state.path(), FAST);
    c.arg("--url").arg(v2.url());
    c.env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()).env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let marker = state.path().join("cutover-hook");
    c.arg("--on-cutover")
        .arg(format!("echo $SLUICE_NEW_DEPLOYMENT_ID $SLUICE_PREVIOUS_DEPLOYMENT_ID > {}", marker.display()));
    let d = finish(&mut c).await;
    assert_eq!(d.code, 0, "{:#}\n{}", d.out, d.stderr);
    assert_eq!(d.out["ok"], true);
    assert_eq!(d.out["result"]["verdict"], "healthy");
    for g in ["warm", "callback_probe", "drain", "cutover", "bake"] {
        assert_eq!(gate(&d.out, g)["status"], "pass", "{g}: {:#}", d.out);
    }
    assert_eq!(gate(&d.out, "rollback")["status"], "skipped");
    schema_validate(&d.out);
    for g in ["warm", "callback_probe", "drain", "cutover", "bake"] {
        assert!(d.stderr.contains(g), "progress line for {g} on stderr: {}", d.stderr);
    }
    let v2_id = d.out["result"]["new_deployment_id"].as_str().unwrap().to_string();
    assert_eq!(d.out["result"]["previous_deployment_id"], v1_id.as_str());
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), format!("{v2_id} {v1_id}"), "hook env");
    assert_eq!(current_of(&sluice).await, v2_id);
    let cutover_at = gate(&d.out, "cutover")["evidence"]["activated_at_ms"].as_i64().unwrap();

    // Runs in flight on v1 finished on v1; new runs land on v2; nothing lost, failed or left running.
    sluice.wait_status(&slow_run, "Completed").await;
    assert!(v2.effects().iter().all(|e| e["run"] != slow_run.as_str()));
    let after = load.finish(&sluice).await;
    let late: Vec<_> = after.iter().filter(|(at, _)| *at > cutover_at + 200).collect();
    assert!(!late.is_empty());
    assert!(late.iter().all(|(_, v)| v == "v2"), "runs after cutover ran on v2: {late:?}");
    assert!(after.iter().any(|(_, v)| v == "v1"), "runs before cutover ran on v1");
    no_run_left_running(&sluice).await;

    // verify-runtime reports the same deploy, healthy, and validates.
    let v = finish(&mut deploy_cmd(&sluice, state.path(), &["verify-runtime"])).await;
    assert_eq!(v.code, 0, "{:#}", v.out);
    assert_eq!(v.out["command"], "sluice deploy verify-runtime");
    assert_eq!(v.out["result"]["deploy_id"], d.out["result"]["deploy_id"]);
    schema_validate(&v.out);
    let live = finish(&mut deploy_cmd(&sluice, state.path(), &["verify-runtime", "--live"])).await;
    schema_validate(&live.out);
    assert_eq!(live.code, 0, "{:#}", live.out);
    assert_eq!(live.out["result"]["verdict"], "healthy");

    // OTEL: one span per gate, with the deployment ids and the gate status.
    let spans = collector.exported_spans(5, Duration::from_secs(20)).await;
    let names: Vec<_> = spans.iter().map(|s| s.name.clone()).collect();
    for g in ["warm", "callback_probe", "drain", "cutover", "bake"] {
        let s =
            spans.iter().find(|s| s.name == format!("deploy.runtime.{g}")).unwrap_or_else(|| panic!("{g}: {names:?}"));
        // The collector renders values as `Some(AnyValue { value: Some(StringValue("...")) })`.
        let attr = |k: &str| s.attributes.get(k).cloned().unwrap_or_default();
        assert!(attr("deploy.gate.status").contains("\"pass\""), "{s:?}");
        assert!(attr("deploy.gate").contains(&format!("\"{g}\"")), "{s:?}");
        assert!(attr("deploy.deployment.new").contains(&v2_id), "{s:?}");
        assert!(attr("deploy.deployment.previous").contains(&v1_id), "{s:?}");
        assert!(s.attributes.contains_key("deploy.evidence"), "{s:?}");
    }
}

#[tokio::test]
async fn a_failing_probe_blocks_the_release_and_v1_stays_current() {
    let sluice = Sluice::dev().await;
    let v1 = Worker::ts(&sluice, &[("VARIANT", "v1")]).await;
    let v1_id = sluice.sync(&v1.url()).await["deployment_id"].as_str().unwrap().to_string();
    let load = Load::start(sluice.url());
    let v2 = Worker::ts(&sluice, &[("VARIANT", "v2"), ("PROBE_FAIL", "1")]).await;
    let state = tempfile::tempdir().unwrap();
    let mut c = deploy_cmd(&sluice, state.path(), FAST);
    c.arg("--url").arg(v2.url());
    let d = finish(&mut c).await;
    assert_eq!(d.code, 1, "{:#}", d.out);
    assert_eq!(d.out["ok"], false);
    assert_eq!(d.out["result"]["verdict"], "blocked");
    assert_eq!(d.out["error"]["code"], "SLUICE-7201");
    assert_eq!(gate(&d.out, "callback_probe")["status"], "fail");
    assert_eq!(gate(&d.out, "cutover")["status"], "skipped");
    schema_validate(&d.out);
    assert_eq!(current_of(&sluice).await, v1_id);
    let runs = load.finish(&sluice).await;
    assert!(runs.iter().all(|(_, v)| v == "v1"), "every run stayed on v1");
    let v = finish(&mut deploy_cmd(&sluice, state.path(), &["verify-runtime"])).await;
    assert_eq!(v.code, 1);
    schema_validate(&v.out);
}

#[tokio::test]
async fn a_v2_missing_a_function_is_a_warm_breach() {
    let sluice = Sluice::dev().await;
    let v1 = Worker::ts(&sluice, &[("VARIANT", "v1")]).await;
    let v1_id = sluice.sync(&v1.url()).await["deployment_id"].as_str().unwrap().to_string();
    let v2 = Worker::ts(&sluice, &[("VARIANT", "v2"), ("FUNCTIONS", "hello,probe,slow-step")]).await;
    let state = tempfile::tempdir().unwrap();
    let mut c = deploy_cmd(&sluice, state.path(), FAST);
    c.arg("--url").arg(v2.url());
    let d = finish(&mut c).await;
    assert_eq!(d.code, 1, "{:#}", d.out);
    assert_eq!(d.out["result"]["verdict"], "blocked");
    assert_eq!(d.out["error"]["code"], "SLUICE-7101");
    let warm = gate(&d.out, "warm");
    assert_eq!(warm["status"], "fail");
    assert!(warm["evidence"]["removed_not_allowed"].as_array().unwrap().iter().any(|f| f == "ts-app-steps"), "{warm}");
    assert_eq!(gate(&d.out, "callback_probe")["status"], "skipped");
    assert_eq!(current_of(&sluice).await, v1_id);
    assert_eq!(sluice.run_to("test/hello", json!({}), "Completed").await["output"]["variant"], "v1");
}

#[tokio::test]
async fn v2_killed_during_bake_rolls_back_and_every_run_completes() {
    let sluice = Sluice::dev_with(&["--failover-grace", "1s"]).await;
    let v1 = Worker::ts(&sluice, &[("VARIANT", "v1")]).await;
    let v1_id = sluice.sync(&v1.url()).await["deployment_id"].as_str().unwrap().to_string();
    let load = Load::start(sluice.url());
    let mut v2 = Worker::ts(&sluice, &[("VARIANT", "v2")]).await;
    let state = tempfile::tempdir().unwrap();
    let marker = state.path().join("rollback-hook");
    let mut c = deploy_cmd(
        &sluice,
        state.path(),
        &["--warm-window", "1s", "--check-interval", "250ms", "--bake-window", "30s"],
    );
    c.arg("--url").arg(v2.url());
    c.arg("--on-rollback").arg(format!("echo $SLUICE_DEPLOY_REASON > {}", marker.display()));
    let child = tokio::spawn(async move { finish(&mut c).await });
    // Wait for the bake to start, then kill v2.
    let dir = state.path().to_path_buf();
    eventually("the bake gate to run", DEADLINE, || {
        let dir = dir.clone();
        async move {
            let id = std::fs::read_to_string(dir.join("latest")).ok()?;
            let r: Value =
                serde_json::from_slice(&std::fs::read(dir.join(format!("{}.json", id.trim()))).ok()?).ok()?;
            let bake = r["gates"].as_array()?.iter().find(|g| g["gate"] == "bake")?.clone();
            (bake["status"] == "running").then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    v2.kill9();
    let d = child.await.unwrap();
    assert_eq!(d.code, 1, "{:#}\n{}", d.out, d.stderr);
    assert_eq!(d.out["result"]["verdict"], "rolled_back");
    assert_eq!(d.out["error"]["code"], "SLUICE-7501");
    assert_eq!(gate(&d.out, "bake")["status"], "fail");
    assert_eq!(gate(&d.out, "rollback")["status"], "pass");
    assert!(std::fs::read_to_string(&marker).unwrap().contains("bake"), "the rollback hook ran with the reason");
    schema_validate(&d.out);
    assert_eq!(current_of(&sluice).await, v1_id);
    load.finish(&sluice).await;
    no_run_left_running(&sluice).await;
}

#[tokio::test]
async fn a_drain_that_cannot_finish_is_held_and_the_old_worker_keeps_running() {
    let sluice = Sluice::dev().await;
    let v1 = Worker::ts(&sluice, &[("VARIANT", "v1")]).await;
    sluice.sync(&v1.url()).await;
    let slow = sluice.send("test/slow", json!({"ms": 12000})).await;
    let slow_run = sluice.run_of_event(&slow).await;
    v1.wait_effect("the slow step on v1", |e| e["run"] == slow_run.as_str() && e["step"] == "long").await;
    let v2 = Worker::ts(&sluice, &[("VARIANT", "v2")]).await;
    let state = tempfile::tempdir().unwrap();
    let mut c = deploy_cmd(
        &sluice,
        state.path(),
        &["--warm-window", "500ms", "--bake-window", "1s", "--drain-timeout", "1500ms"],
    );
    c.arg("--url").arg(v2.url());
    let d = finish(&mut c).await;
    assert_eq!(d.code, 2, "{:#}", d.out);
    assert_eq!(d.out["result"]["verdict"], "held");
    assert_eq!(d.out["error"]["code"], "SLUICE-7301");
    let drain = gate(&d.out, "drain");
    assert_eq!(drain["status"], "held");
    assert!(drain["evidence"]["in_flight_calls"].as_u64().unwrap() >= 1, "{drain}");
    schema_validate(&d.out);
    // Nothing was shut down: v1 still answers and finishes its run.
    assert!(http().get(v1.url()).send().await.is_ok());
    sluice.wait_status_for(&slow_run, "Completed", Duration::from_secs(40)).await;
    assert!(v2.effects().iter().all(|e| e["run"] != slow_run.as_str()));
    let v = finish(&mut deploy_cmd(&sluice, state.path(), &["verify-runtime"])).await;
    assert_eq!(v.code, 2);
}

#[tokio::test]
async fn verify_runtime_without_a_report_and_against_a_dead_runtime() {
    let sluice = Sluice::dev().await;
    let state = tempfile::tempdir().unwrap();
    let v = finish(&mut deploy_cmd(&sluice, state.path(), &["verify-runtime"])).await;
    assert_eq!(v.code, 4);
    assert_eq!(v.out["error"]["code"], "SLUICE-7701");
    schema_validate(&v.out);
    let live = finish(&mut deploy_cmd(&sluice, state.path(), &["verify-runtime", "--live"])).await;
    assert_eq!(live.code, 0, "{:#}", live.out);
    schema_validate(&live.out);
    let mut dead =
        deploy_cmd_at(&format!("http://127.0.0.1:{}", free_port()), state.path(), &["verify-runtime", "--live"]);
    let d = finish(&mut dead).await;
    assert_eq!(d.code, 1);
    assert_eq!(d.out["result"]["verdict"], "unhealthy");
    schema_validate(&d.out);
}

#[tokio::test]
async fn start_launches_the_new_worker_and_stops_the_old_one_only_after_drain() {
    let sluice = Sluice::dev().await;
    let v1 = Worker::ts(&sluice, &[("VARIANT", "v1")]).await;
    sluice.sync(&v1.url()).await;
    let state = tempfile::tempdir().unwrap();
    let worker = repo_root().join("fixtures/ts-worker/worker.mjs");
    let start = |variant: &str| {
        let mut c = deploy_cmd(&sluice, state.path(), FAST);
        c.arg("--start").arg(format!("exec node {}", worker.display()));
        c.env("INNGEST_DEV", sluice.url()).env("VARIANT", variant);
        c
    };
    let d2 = finish(&mut start("v2")).await;
    assert_eq!(d2.code, 0, "{:#}\n{}", d2.out, d2.stderr);
    let pid2 = d2.out["result"]["processes"]["new_worker"]["pid"].as_u64().unwrap();
    assert_eq!(sluice.run_to("test/hello", json!({}), "Completed").await["output"]["variant"], "v2");
    let d3 = finish(&mut start("v3")).await;
    assert_eq!(d3.code, 0, "{:#}\n{}", d3.out, d3.stderr);
    assert_eq!(d3.out["result"]["processes"]["old_worker"]["pid"], pid2, "{:#}", d3.out);
    assert!(d3.out["result"]["processes"]["old_worker"]["stopped"].is_string());
    assert_eq!(sluice.run_to("test/hello", json!({}), "Completed").await["output"]["variant"], "v3");
    let pid3 = d3.out["result"]["processes"]["new_worker"]["pid"].as_u64().unwrap();
    let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid3}")]).status();
}

#[tokio::test]
async fn an_app_without_a_probe_function_gets_a_trust_probe_and_a_degraded_gate() {
    let sluice = Sluice::dev().await;
    let v1 = Worker::ts(&sluice, &[("VARIANT", "v1"), ("FUNCTIONS", "hello,steps")]).await;
    sluice.sync(&v1.url()).await;
    let v2 = Worker::ts(&sluice, &[("VARIANT", "v2"), ("FUNCTIONS", "hello,steps")]).await;
    let state = tempfile::tempdir().unwrap();
    let mut c = deploy_cmd(&sluice, state.path(), FAST);
    c.arg("--url").arg(v2.url());
    let d = finish(&mut c).await;
    schema_validate(&d.out);
    let probe = gate(&d.out, "callback_probe");
    assert_eq!(probe["status"], "degraded", "{probe:#}");
    assert_ne!(d.code, 0, "degraded is not healthy: {:#}", d.out);
    assert_eq!(sluice.run_to("test/hello", json!({}), "Completed").await["output"]["variant"], "v2");
}

#[tokio::test]
async fn a_python_app_deploys_through_its_probe_function() {
    let sluice = Sluice::dev().await;
    let v1 = Worker::py(&sluice, &[("VARIANT", "v1")]).await;
    sluice.sync(&v1.url()).await;
    let v2 = Worker::py(&sluice, &[("VARIANT", "v2")]).await;
    let state = tempfile::tempdir().unwrap();
    let mut c = deploy_cmd(&sluice, state.path(), FAST);
    c.arg("--url").arg(v2.url());
    let d = finish(&mut c).await;
    schema_validate(&d.out);
    assert_eq!(gate(&d.out, "callback_probe")["status"], "pass", "{:#}", d.out);
    assert_eq!(d.code, 0, "{:#}", d.out);
    assert!(v2.effects().iter().any(|e| e["fn"] == "probe"), "the probe ran on v2");
    assert!(v1.effects().iter().all(|e| e["fn"] != "probe"), "and not on v1");
}

#[tokio::test]
async fn another_apps_failures_during_bake_do_not_roll_the_deploy_back() {
    let sluice = Sluice::dev().await;
    let subset = ("FUNCTIONS", "hello,steps,probe");
    let v1 = Worker::ts(&sluice, &[("VARIANT", "v1"), subset]).await;
    sluice.sync(&v1.url()).await;
    let noisy = Worker::ts(&sluice, &[("APP_ID", "noisy"), ("FUNCTIONS", "non-retriable")]).await;
    sluice.sync(&noisy.url()).await;
    let v2 = Worker::ts(&sluice, &[("VARIANT", "v2"), subset]).await;
    let state = tempfile::tempdir().unwrap();
    let mut c = deploy_cmd(&sluice, state.path(), FAST);
    c.arg("--url").arg(v2.url());
    let deploy = tokio::spawn(async move { finish(&mut c).await });
    // The other app fails run after run while ts-app deploys.
    let mut failed = vec![];
    while !deploy.is_finished() {
        let id = sluice.send("test/nonretriable", json!({})).await;
        failed.push(sluice.run_of_event(&id).await);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let d = deploy.await.unwrap();
    assert!(failed.len() > 3, "noise was sent during the deploy");
    assert_eq!(sluice.wait_status(failed.last().unwrap(), "Failed").await["function_id"], "noisy-non-retriable");
    assert_eq!(d.code, 0, "ts-app's bake only looks at ts-app's runs: {:#}", d.out);
    assert_eq!(gate(&d.out, "bake")["status"], "pass");
    assert_eq!(sluice.run_to("test/hello", json!({}), "Completed").await["output"]["variant"], "v2");
}
