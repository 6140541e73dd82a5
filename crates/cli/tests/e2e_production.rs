//! Production mode (`sluice start`): signed requests to a cloud-mode TypeScript SDK, hashed-key
//! Bearer auth on the SDK and REST routes, event keys on `/e`, and refusing to start without keys.

mod support;
use support::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const EVENT_KEY: &str = "evkey-1";

fn signing_key() -> String {
    format!("signkey-test-{}", "0123456789abcdef".repeat(4))
}

fn other_signing_key() -> String {
    format!("signkey-test-{}", "fedcba9876543210".repeat(4))
}

/// A `sluice start` with `signing_key()` and the event key `evkey-1`.
async fn production_sluice() -> Sluice {
    let key = signing_key();
    let mut args = SluiceOptions::default().args;
    args.extend(["--signing-key".to_string(), key.clone(), "--event-key".to_string(), EVENT_KEY.to_string()]);
    Sluice::start(SluiceOptions {
        mode: "start",
        args,
        signing_key: Some(key),
        event_key: EVENT_KEY.into(),
        ..Default::default()
    })
    .await
}

/// A TypeScript worker in cloud mode (no INNGEST_DEV) with the given signing key.
async fn cloud_worker(sluice: &Sluice, key: &str, extra: &[(&str, &str)]) -> Worker {
    let mut env = vec![
        ("INNGEST_SIGNING_KEY".to_string(), key.to_string()),
        ("INNGEST_BASE_URL".to_string(), sluice.url()),
        ("INNGEST_EVENT_KEY".to_string(), EVENT_KEY.to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Worker::start(WorkerKind::TypeScript, env).await
}

/// A raw HTTP call with an optional `Authorization: Bearer` token; returns status and JSON body.
async fn call(method: reqwest::Method, url: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut r = http().request(method, url);
    if let Some(token) = bearer {
        r = r.bearer_auth(token);
    }
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn app_ids(sluice: &Sluice) -> Vec<String> {
    let (status, body) = sluice.get("/v1/apps").await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn cloud_mode_sdk_accepts_signed_calls_and_runs_steps_and_chains() {
    let sluice = production_sluice().await;
    let worker = cloud_worker(&sluice, &signing_key(), &[]).await;
    // The SDK verifies sluice's JCS+HMAC signature on the sync PUT, then registers with its hashed
    // key as Bearer; sluice accepts it.
    let synced = sluice.sync(&worker.url()).await;
    assert_eq!(synced["app_id"], "ts-app", "{synced}");
    assert!(app_ids(&sluice).await.contains(&"ts-app".to_string()));

    // Every call to the SDK is signed; the SDK's signed answers are verified.
    let run = sluice.run_to("test/steps", json!({}), "Completed").await;
    assert_eq!(run["output"], "ABC", "{run}\n{}", worker.log());
    let run_id = run["run_id"].as_str().unwrap();
    for step in ["a", "b", "c"] {
        assert_eq!(worker.count(run_id, "steps", step), 1, "step {step}");
    }

    // step.sendEvent from a cloud-mode SDK goes to /e/<event key>: the chain a -> b -> (c1, c2).
    let origin = "prod-chain-1";
    let run_a = sluice.run_to("test/chain.a", json!({"origin": origin}), "Completed").await;
    assert_eq!(run_a["function_id"], "ts-app-chain-a");
    for leaf in ["chain-c1", "chain-c2"] {
        let function_id = format!("ts-app-{leaf}");
        let done = eventually(&format!("a Completed {function_id} run"), DEADLINE, || {
            let sluice = &sluice;
            let function_id = function_id.clone();
            async move { sluice.runs_of(&function_id).await.into_iter().find(|r| r["status"] == "Completed") }
        })
        .await;
        assert_eq!(done["output"], json!({"leaf": leaf, "origin": origin}), "{done}");
    }
    assert!(!worker.log().contains("Invalid signature"), "the SDK refused a request from sluice: {}", worker.log());
    let (_, chain_b) = sluice.get("/v1/events?name=test/chain.b").await;
    let chain_b = chain_b["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(chain_b.len(), 1, "{chain_b:?}");
    assert_eq!(chain_b[0]["data"]["origin"], origin);
}

#[tokio::test]
async fn a_worker_with_a_different_signing_key_is_not_registered() {
    let sluice = production_sluice().await;
    let worker = cloud_worker(&sluice, &other_signing_key(), &[("APP_ID", "wrong-key-app")]).await;
    let (status, body) = call(
        reqwest::Method::POST,
        &format!("{}/v1/apps/sync", sluice.url()),
        Some(&sluice_protocol::signing::hashed_signing_key(&signing_key())),
        Some(json!({ "url": worker.url() })),
    )
    .await;
    assert_ne!(status, 200, "a sync to an SDK with another key must fail: {body}\n{}", sluice.log());
    assert!(status >= 400, "{status} {body}");
    assert_eq!(body["ok"], false, "{body}");
    assert!(body["code"].as_str().is_some_and(|c| c.starts_with("SLUICE-")), "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("401")), "the error names the SDK's refusal: {body}");
    // The refusal is the SDK rejecting sluice's signature (made with another key).
    assert!(worker.log().contains("Invalid signature"), "worker log: {}", worker.log());
    let apps = app_ids(&sluice).await;
    assert!(!apps.contains(&"wrong-key-app".to_string()), "{apps:?}");
    let (_, dev) = sluice.get("/dev").await;
    let fns = dev["functions"].as_array().cloned().unwrap_or_default();
    assert!(fns.iter().all(|f| !f["id"].as_str().unwrap_or("").starts_with("wrong-key-app")), "{fns:?}");
    // And the SDK's own register attempt (if it made one with its hashed key) was refused: events for
    // its functions trigger nothing.
    let event_id = sluice.send("test/hello", json!({"name": "nobody"})).await;
    assert!(sluice.runs_for_event(&event_id).await.is_empty());
}

#[tokio::test]
async fn the_event_api_needs_a_configured_event_key() {
    let sluice = production_sluice().await;
    let (status, body) =
        sluice.post_events_raw("wrong-key", json!({"name": "test/unauthorised", "data": {}}).to_string(), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "SLUICE-4001", "{body}");
    assert_eq!(body["status"], 401, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    let (status, events) = sluice.get("/v1/events?name=test/unauthorised").await;
    assert_eq!(status, 200);
    assert_eq!(events["data"], json!([]), "an unauthorised event was stored: {events}");

    let (status, body) =
        sluice.post_events_raw(EVENT_KEY, json!({"name": "test/authorised", "data": {"n": 1}}).to_string(), &[]).await;
    assert_eq!(status, 200, "{body}");
    let id = body["ids"][0].as_str().expect("an id").to_string();
    let (status, event) = sluice.get(&format!("/v1/events/{id}")).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["data"]["name"], "test/authorised");
    assert_eq!(event["data"]["data"]["n"], 1);
}

#[tokio::test]
async fn rest_and_register_routes_need_the_hashed_signing_key() {
    let sluice = production_sluice().await;
    let runs_url = format!("{}/v1/runs", sluice.url());
    let (status, body) = call(reqwest::Method::GET, &runs_url, None, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "SLUICE-4001", "{body}");
    let (status, body) = call(reqwest::Method::GET, &runs_url, Some("signkey-test-not-the-key"), None).await;
    assert_eq!(status, 401, "a wrong Bearer must be refused: {body}");
    let hashed = sluice_protocol::signing::hashed_signing_key(&signing_key());
    let (status, body) = call(reqwest::Method::GET, &runs_url, Some(&hashed), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"].is_array(), "{body}");

    // A well-formed register body without a Bearer token is refused and registers nothing.
    let register = json!({
        "url": "http://127.0.0.1:9/api/inngest",
        "appName": "unauthed-app",
        "framework": "nodejs",
        "functions": [{
            "id": "unauthed-app-hello",
            "name": "hello",
            "triggers": [{"event": "test/unauthed"}],
            "steps": {"step": {"id": "step", "name": "step",
                "runtime": {"type": "http", "url": "http://127.0.0.1:9/api/inngest?fnId=unauthed-app-hello&stepId=step"}}}
        }]
    });
    let register_url = format!("{}/fn/register", sluice.url());
    let (status, body) = call(reqwest::Method::POST, &register_url, None, Some(register.clone())).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "SLUICE-4001", "{body}");
    assert!(!app_ids(&sluice).await.contains(&"unauthed-app".to_string()));
    let (status, body) = call(reqwest::Method::POST, &register_url, Some("signkey-test-00"), Some(register)).await;
    assert_eq!(status, 401, "{body}");
    assert!(!app_ids(&sluice).await.contains(&"unauthed-app".to_string()));
}

#[test]
fn sluice_start_without_a_signing_key_exits_with_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("start")
        .arg("--port")
        .arg(free_port().to_string())
        .arg("--db")
        .arg(dir.path().join("sluice.db"))
        .arg("--event-key")
        .arg(EVENT_KEY)
        .env_remove("SLUICE_SIGNING_KEY")
        .env_remove("SLUICE_SIGNING_KEY_FALLBACK")
        .env_remove("SLUICE_CONFIG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sluice start without a signing key kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "exit status {status:?}; stderr: {stderr}");
    assert!(stderr.contains("[SLUICE-5002]"), "stderr: {stderr}");
    assert!(stderr.contains("signing key"), "stderr: {stderr}");
    assert!(!dir.path().join("sluice.db").exists(), "no database is created by a refused start");
}
