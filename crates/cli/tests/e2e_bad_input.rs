//! Bad input at every door: malformed and oversize events, bad app definitions, unknown ids,
//! cancels, an SDK URL that is not an SDK. Each is refused with its coded error, and nothing
//! already accepted is lost.

mod support;
use support::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw HTTP call against sluice; returns status and JSON body.
async fn call(sluice: &Sluice, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = http().request(method, format!("{}{}", sluice.url(), path));
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Assert a coded error body: `{"ok":false,"status":N,"error":msg,"code":CODE}`.
#[track_caller]
fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert_eq!(body["status"], want_status, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
}

async fn events_named(sluice: &Sluice, name: &str) -> Vec<Value> {
    let (status, body) = sluice.get(&format!("/v1/events?name={name}&limit=1000")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

async fn apps(sluice: &Sluice) -> Vec<Value> {
    let (status, body) = sluice.get("/v1/apps").await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

/// One function definition in the JS register shape.
fn function(app: &str, name: &str, triggers: Value, url: &str, retries: Option<u32>) -> Value {
    let id = format!("{app}-{name}");
    let mut step = json!({"id": "step", "name": "step",
        "runtime": {"type": "http", "url": format!("{url}?fnId={id}&stepId=step")}});
    if let Some(n) = retries {
        step["retries"] = json!({ "attempts": n });
    }
    json!({"id": id, "name": name, "triggers": triggers, "steps": {"step": step}})
}

#[tokio::test]
async fn malformed_and_oversize_events_are_refused_and_nothing_accepted_is_lost() {
    let sluice = Sluice::dev_with(&["--max-event-bytes", "1024", "--max-request-bytes", "4096"]).await;
    let worker = Worker::ts(&sluice, &[]).await;
    sluice.sync(&worker.url()).await;
    let key = sluice.event_key.clone();

    // Accepted first.
    let good_id = sluice.send("test/hello", json!({"name": "before"})).await;

    // Not JSON.
    let (status, body) = sluice.post_events_raw(&key, r#"{"name": "test/hello", "data": {"#, &[]).await;
    assert_error(status, &body, 400, "SLUICE-1001");
    // No name; an empty name.
    let (status, body) = sluice.post_events_raw(&key, json!({"data": {"name": "x"}}).to_string(), &[]).await;
    assert_error(status, &body, 400, "SLUICE-1002");
    let (status, body) = sluice.post_events_raw(&key, json!({"name": "  ", "data": {}}).to_string(), &[]).await;
    assert_error(status, &body, 400, "SLUICE-1002");
    // data that is not an object.
    let (status, body) =
        sluice.post_events_raw(&key, json!({"name": "test/hello", "data": [1, 2, 3]}).to_string(), &[]).await;
    assert_error(status, &body, 400, "SLUICE-1001");
    // A body that is neither an object nor an array.
    let (status, body) = sluice.post_events_raw(&key, "42", &[]).await;
    assert_error(status, &body, 400, "SLUICE-1001");
    // One event over --max-event-bytes 1024, in a request under --max-request-bytes 4096.
    let big = json!({"name": "test/hello", "data": {"name": "x".repeat(2000)}}).to_string();
    assert!(big.len() > 1024 && big.len() < 4096);
    let (status, body) = sluice.post_events_raw(&key, big, &[]).await;
    assert_error(status, &body, 413, "SLUICE-1003");
    // A request over 4096 bytes made of events each under 1024.
    let many: Vec<Value> =
        (0..10).map(|i| json!({"name": "test/hello", "data": {"name": format!("{i}-{}", "y".repeat(500))}})).collect();
    let many = Value::Array(many).to_string();
    assert!(many.len() > 4096);
    let (status, body) = sluice.post_events_raw(&key, many, &[]).await;
    assert_error(status, &body, 413, "SLUICE-1004");

    // The event accepted before all that is still there, its run completed, and no bad event was stored.
    let run_id = sluice.run_of_event(&good_id).await;
    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["output"], json!({"message": "hello before", "variant": "v1"}));
    let stored = events_named(&sluice, "test/hello").await;
    assert_eq!(stored.len(), 1, "only the good event is stored: {stored:?}");
    assert_eq!(stored[0]["id"], good_id.as_str());
    let runs = sluice.runs_of("ts-app-hello").await;
    assert_eq!(runs.len(), 1, "{runs:?}");

    // And sluice still accepts good events.
    let after = sluice.run_to("test/hello", json!({"name": "after"}), "Completed").await;
    assert_eq!(after["output"]["message"], "hello after");
}

#[tokio::test]
async fn a_batch_with_one_bad_event_stores_nothing() {
    let sluice = Sluice::dev().await;
    let batch = json!([
        {"name": "test/batch-good", "data": {"n": 1}},
        {"data": {"n": 2}},
        {"name": "test/batch-good", "data": {"n": 3}},
    ]);
    let (status, body) = sluice.post_events_raw("k", batch.to_string(), &[]).await;
    assert_error(status, &body, 400, "SLUICE-1002");
    assert!(events_named(&sluice, "test/batch-good").await.is_empty());

    let batch = json!([
        {"name": "test/batch-good", "data": {"n": 1}},
        {"name": "test/batch-good", "data": "not an object"},
    ]);
    let (status, body) = sluice.post_events_raw("k", batch.to_string(), &[]).await;
    assert_error(status, &body, 400, "SLUICE-1001");
    assert!(events_named(&sluice, "test/batch-good").await.is_empty());

    // The same batch without the bad event is stored whole.
    let batch = json!([
        {"name": "test/batch-good", "data": {"n": 1}},
        {"name": "test/batch-good", "data": {"n": 3}},
    ]);
    let (status, body) = sluice.post_events_raw("k", batch.to_string(), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ids"].as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(events_named(&sluice, "test/batch-good").await.len(), 2);
}

#[tokio::test]
async fn an_event_id_deduplicates_sends() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let event_again = || json!({"name": "test/hello", "id": "dup-1", "data": {"name": "dup"}}).to_string();
    let event = event_again();
    let (s1, b1) = sluice.post_events_raw("k", event.clone(), &[]).await;
    let (s2, b2) = sluice.post_events_raw("k", event, &[]).await;
    assert_eq!((s1, s2), (200, 200), "{b1} {b2}");
    let id = b1["ids"][0].as_str().expect("an id").to_string();
    assert_eq!(b2["ids"][0], id.as_str(), "the second send returns the first id: {b1} {b2}");
    let run_id = sluice.run_of_event(&id).await;
    sluice.wait_status(&run_id, "Completed").await;
    // A resend after the run ended is deduplicated too.
    let (s3, b3) = sluice.post_events_raw("k", event_again(), &[]).await;
    assert_eq!(s3, 200, "{b3}");
    assert_eq!(b3["ids"][0], id.as_str(), "{b3}");
    assert_eq!(sluice.runs_of("ts-app-hello").await.len(), 1);
    assert_eq!(events_named(&sluice, "test/hello").await.len(), 1);
}

#[tokio::test]
async fn an_event_id_seed_makes_a_resend_idempotent() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let seed = [("x-inngest-event-id-seed", "1700000000000,AAECAwQFBgcICQ==")];
    let body = json!([{"name": "test/hello", "data": {"name": "seeded"}}]).to_string();
    let (s1, b1) = sluice.post_events_raw("k", body.clone(), &seed).await;
    let (s2, b2) = sluice.post_events_raw("k", body, &seed).await;
    assert_eq!((s1, s2), (200, 200), "{b1} {b2}");
    assert_eq!(b1["ids"], b2["ids"], "same seed, same ids");
    let id = b1["ids"][0].as_str().expect("an id").to_string();
    let run_id = sluice.run_of_event(&id).await;
    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["output"]["message"], "hello seeded");
    assert_eq!(sluice.runs_of("ts-app-hello").await.len(), 1);
    assert_eq!(events_named(&sluice, "test/hello").await.len(), 1);
}

#[tokio::test]
async fn bad_app_definitions_are_refused_and_the_synced_app_keeps_working() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let before = apps(&sluice).await;
    assert_eq!(before.len(), 1, "{before:?}");
    let function_count = before[0]["function_count"].clone();
    let config_hash = before[0]["config_hash"].clone();

    // The recorded JS register body, re-sent as app "ts-app" (runtime URLs pointing at a dead port)
    // with one bad function added: if sluice applied any of it, test/hello would break.
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("fixtures/ts-worker/register-sample.json")).unwrap(),
    )
    .unwrap();
    let with_bad = |bad: Value| {
        let mut body = sample.clone();
        body["functions"].as_array_mut().unwrap().push(bad);
        body
    };
    let url = "http://127.0.0.1:9/api/inngest";
    let mut hello = sample["functions"][0].clone();
    assert_eq!(hello["id"], "ts-app-hello");

    hello["id"] = json!("ts-app-bad-cron");
    hello["triggers"] = json!([{ "cron": "not a cron" }]);
    let (status, body) = call(&sluice, reqwest::Method::POST, "/fn/register", Some(with_bad(hello.clone()))).await;
    assert_error(status, &body, 400, "SLUICE-1102");

    let deep = format!("{}event.data.ok == true{}", "(".repeat(100), ")".repeat(100));
    hello["id"] = json!("ts-app-deep-expr");
    hello["triggers"] = json!([{ "event": "test/deep", "expression": deep }]);
    let (status, body) = call(&sluice, reqwest::Method::POST, "/fn/register", Some(with_bad(hello.clone()))).await;
    assert_error(status, &body, 400, "SLUICE-1401");

    hello["id"] = json!("ts-app-no-trigger");
    hello["triggers"] = json!([{}]);
    let (status, body) = call(&sluice, reqwest::Method::POST, "/fn/register", Some(with_bad(hello.clone()))).await;
    assert_error(status, &body, 400, "SLUICE-1101");

    // An https step URL is refused at sync (this build calls SDKs over plain HTTP).
    hello["id"] = json!("ts-app-https");
    hello["triggers"] = json!([{ "event": "test/https" }]);
    hello["steps"]["step"]["runtime"]["url"] =
        json!("https://worker.example/api/inngest?fnId=ts-app-https&stepId=step");
    let (status, body) = call(&sluice, reqwest::Method::POST, "/fn/register", Some(with_bad(hello.clone()))).await;
    assert_error(status, &body, 400, "SLUICE-1101");
    assert!(body["error"].as_str().unwrap().contains("https"), "{body}");

    // A brand-new app with a bad function is not created either.
    let fresh = json!({"url": url, "appName": "bad-app", "framework": "nodejs",
        "functions": [function("bad-app", "f", json!([{"cron": "not a cron"}]), url, None)]});
    let (status, body) = call(&sluice, reqwest::Method::POST, "/fn/register", Some(fresh)).await;
    assert_error(status, &body, 400, "SLUICE-1102");

    let after = apps(&sluice).await;
    assert_eq!(after.len(), 1, "no app was added: {after:?}");
    assert_eq!(after[0]["id"], "ts-app");
    assert_eq!(after[0]["function_count"], function_count, "{after:?}");
    assert_eq!(after[0]["config_hash"], config_hash, "the previous configuration stays: {after:?}");
    assert_eq!(after[0]["url"], worker.url().as_str(), "{after:?}");

    let run = sluice.run_to("test/hello", json!({"name": "still"}), "Completed").await;
    assert_eq!(run["output"], json!({"message": "hello still", "variant": "v1"}));
    let run = sluice.run_to("test/steps", json!({}), "Completed").await;
    assert_eq!(run["output"], "ABC");
}

#[tokio::test]
async fn unknown_run_ids_are_404() {
    let sluice = Sluice::dev().await;
    let (status, body) = sluice.get("/v1/runs/NOPE").await;
    assert_error(status, &body, 404, "SLUICE-4004");
    let (status, body) = call(&sluice, reqwest::Method::DELETE, "/v1/runs/NOPE", None).await;
    assert_error(status, &body, 404, "SLUICE-3101");
}

#[tokio::test]
async fn a_cancelled_run_makes_no_further_calls_and_emits_function_cancelled() {
    let (sluice, worker) = dev_with_ts_worker().await;
    // A short nap, so that "the nap would have ended by now" can be observed within the test.
    let event_id = sluice.send("test/sleep", json!({"duration": "3s"})).await;
    let run_id = sluice.run_of_event(&event_id).await;
    worker.wait_effect("the sleeper's before step", |e| e["run"] == run_id.as_str() && e["step"] == "before").await;

    let (status, body) = call(&sluice, reqwest::Method::DELETE, &format!("/v1/runs/{run_id}"), None).await;
    assert_eq!(status, 200, "{body}");
    let run = sluice.wait_status(&run_id, "Cancelled").await;
    assert!(!run["ended_at"].is_null(), "{run}");

    // A second sleeper started after the cancel naps as long; once it completed, the cancelled
    // run's nap is over too, and it must not have resumed.
    let second = sluice.run_to("test/sleep", json!({"duration": "3s"}), "Completed").await;
    let second_id = second["run_id"].as_str().unwrap();
    assert_eq!(worker.count(second_id, "sleeper", "after"), 1);
    assert_eq!(worker.count(&run_id, "sleeper", "before"), 1);
    assert_eq!(worker.count(&run_id, "sleeper", "after"), 0, "a cancelled run resumed: {:?}", worker.effects());
    let run = sluice.get_run(&run_id).await;
    assert_eq!(run["status"], "Cancelled", "{run}");

    let cancelled = events_named(&sluice, "inngest/function.cancelled").await;
    let mine: Vec<_> = cancelled.iter().filter(|e| e["data"]["run_id"] == run_id.as_str()).collect();
    assert_eq!(mine.len(), 1, "{cancelled:?}");
    assert_eq!(mine[0]["data"]["function_id"], "ts-app-sleeper");

    let (status, body) = call(&sluice, reqwest::Method::DELETE, &format!("/v1/runs/{run_id}"), None).await;
    assert_error(status, &body, 409, "SLUICE-3102");
    assert_eq!(events_named(&sluice, "inngest/function.cancelled").await.len(), 1);
}

/// A tiny HTTP/1.1 server that answers every request `200 OK` with an HTML page and no
/// `X-Inngest-Sdk` header. Returns its base URL and the number of POSTs it received.
async fn fake_non_sdk_server() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let posts = Arc::new(AtomicUsize::new(0));
    let counter = posts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then Content-Length bytes of body.
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if head.starts_with("post ") {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                let page = "<html>not an sdk</html>";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://127.0.0.1:{port}/api/inngest"), posts)
}

#[tokio::test]
async fn an_answer_that_is_not_the_sdk_protocol_fails_the_run_with_1201() {
    let sluice = Sluice::dev().await;
    let (url, posts) = fake_non_sdk_server().await;
    let register = json!({"url": url, "appName": "fake-app", "framework": "nodejs",
        "functions": [function("fake-app", "f", json!([{"event": "test/fake"}]), &url, Some(1))]});
    let (status, body) = call(&sluice, reqwest::Method::POST, "/fn/register", Some(register)).await;
    assert_eq!(status, 200, "{body}");

    let run = sluice.run_to("test/fake", json!({}), "Failed").await;
    assert_eq!(run["error"]["code"], "SLUICE-1201", "{run}");
    assert!(run["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{run}");
    assert_eq!(run["function_id"], "fake-app-f");
    // retries: 1 means two attempts, both answered by the fake.
    assert_eq!(posts.load(Ordering::SeqCst), 2, "{}", sluice.log());
    let failed = events_named(&sluice, "inngest/function.failed").await;
    assert!(failed.iter().any(|e| e["data"]["run_id"] == run["run_id"]), "{failed:?}");
}

#[tokio::test]
async fn an_event_no_function_listens_to_is_stored_with_no_runs() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let (status, body) =
        sluice.post_events_raw("k", json!({"name": "test/nobody-listens", "data": {"x": 1}}).to_string(), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("error").is_none(), "{body}");
    let id = body["ids"][0].as_str().expect("an id").to_string();
    assert!(sluice.runs_for_event(&id).await.is_empty());
    let (status, event) = sluice.get(&format!("/v1/events/{id}")).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["data"]["name"], "test/nobody-listens");
    let (_, runs) = sluice.get("/v1/runs").await;
    assert_eq!(runs["data"], json!([]), "{runs}");
}
