//! The `sluice` inspection commands against a running sluice, `GET /dev`, and re-sync `modified`.

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::*;

fn sluice_cli(api: &str, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--api")
        .arg(api)
        .env_remove("SLUICE_SIGNING_KEY")
        .output()
        .expect("run sluice");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, String::from_utf8_lossy(&out.stderr).to_string())
}

/// The function count the TS worker itself reports (its introspection), so the fixture can grow.
async fn ts_function_count() -> u64 {
    let sluice = Sluice::dev().await;
    let worker = Worker::ts(&sluice, &[]).await;
    let intro: Value = http().get(worker.url()).send().await.unwrap().json().await.unwrap();
    intro["function_count"].as_u64().unwrap()
}

#[tokio::test]
async fn cli_sends_events_and_shows_runs_and_apps_as_json_envelopes() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let api = sluice.url();

    let (code, sent, _) = sluice_cli(&api, &["events", "send", "test/steps", "--data", "{}", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(sent["ok"], true);
    assert_eq!(sent["command"], "sluice events send");
    assert_eq!(sent["result"]["status"], "accepted");
    let event_id = sent["result"]["event_id"].as_str().unwrap().to_string();
    let run_id = sluice.run_of_event(&event_id).await;
    sluice.wait_status(&run_id, "Completed").await;

    let (code, list, _) = sluice_cli(&api, &["runs", "list", "--function", "ts-app-steps", "--json"]);
    assert_eq!(code, 0);
    let runs = list["result"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["status"], "Completed");

    let (code, show, _) = sluice_cli(&api, &["runs", "show", &run_id, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(show["result"]["output"], "ABC");
    let names: Vec<_> = show["result"]["steps"].as_array().unwrap().iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, vec![json!("a"), json!("b"), json!("c")]);
    assert!(!show["next_actions"].as_array().unwrap().is_empty());

    let (code, apps, _) = sluice_cli(&api, &["apps", "list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(apps["result"][0]["id"], "ts-app");
    assert_eq!(apps["result"][0]["status"], "Synced");
    assert_eq!(apps["result"][0]["function_count"], ts_function_count().await);

    // Tables on stdout without --json: one header line, one line per run.
    let (code, _, _) = sluice_cli(&api, &["runs", "list"]);
    assert_eq!(code, 0);
}

#[tokio::test]
async fn cli_errors_carry_a_code_and_a_fix_and_exit_non_zero() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (code, env, _) = sluice_cli(&dead, &["runs", "list", "--json"]);
    assert_eq!(code, 1);
    assert_eq!(env["ok"], false);
    assert_eq!(env["error"]["code"], "SLUICE-5001");
    assert!(env["fix"].as_str().unwrap().contains("sluice dev"));

    let (code, stdout, stderr) = sluice_cli(&dead, &["runs", "list"]);
    assert_eq!(code, 1);
    assert_eq!(stdout, Value::Null, "errors go to stderr, stdout stays data-only");
    assert!(stderr.contains("[SLUICE-5001]"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");

    let sluice = Sluice::dev().await;
    let (code, env, _) = sluice_cli(&sluice.url(), &["runs", "show", "NOPE", "--json"]);
    assert_eq!(code, 1);
    assert_eq!(env["error"]["code"], "SLUICE-4004");
}

#[tokio::test]
async fn dev_lists_functions_with_their_step_uris() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let (status, dev) = sluice.get("/dev").await;
    assert_eq!(status, 200);
    let functions = dev["functions"].as_array().unwrap();
    assert_eq!(functions.len() as u64, ts_function_count().await);
    let steps = functions.iter().find(|f| f["slug"] == "ts-app-steps").unwrap();
    assert_eq!(steps["name"], "steps");
    assert_eq!(steps["triggers"][0]["event"], "test/steps");
    let uri = steps["steps"][0]["uri"].as_str().unwrap();
    assert!(uri.starts_with(&worker.url()), "{uri}");
    assert!(uri.contains("fnId=ts-app-steps&stepId=step"), "{uri}");
    assert_eq!(dev["handlers"][0]["id"], "ts-app");
}

#[tokio::test]
async fn a_resync_reports_modified_only_when_the_configuration_changed() {
    let sluice = Sluice::dev().await;
    let mut body: Value =
        serde_json::from_str(include_str!("../../../fixtures/ts-worker/register-sample.json")).unwrap();
    let register = |body: Value| {
        let url = format!("{}/fn/register", sluice.url());
        async move {
            let r = http().post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(register(body.clone()).await["modified"], true);
    assert_eq!(register(body.clone()).await["modified"], false);
    body["functions"][0]["name"] = json!("renamed");
    assert_eq!(register(body.clone()).await["modified"], true);
    assert_eq!(register(body).await["modified"], false);
}

#[tokio::test]
async fn the_v0_api_serves_a_runs_events_and_memoized_steps_to_use_api_sdks() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/steps", json!({"k": 1}), "Completed").await;
    let run_id = run["run_id"].as_str().unwrap();
    let (status, batch) = sluice.get(&format!("/v0/runs/{run_id}/batch")).await;
    assert_eq!(status, 200);
    assert_eq!(batch[0]["name"], "test/steps");
    assert_eq!(batch[0]["data"]["k"], 1);
    let (status, actions) = sluice.get(&format!("/v0/runs/{run_id}/actions")).await;
    assert_eq!(status, 200);
    let a = sluice_protocol::ids::hashed_step_id("a");
    assert_eq!(actions[&a], json!({"data": "A"}));
    assert_eq!(actions.as_object().unwrap().len(), 3);
}
