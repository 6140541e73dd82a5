//! End-to-end: `sluice doctor` against real sluice processes, a real TypeScript SDK worker and the
//! real Redis on 127.0.0.1:6379. Each finding is produced for real, diagnosed (exit code 1), repaired
//! with `--fix --apply`, diagnosed again (clean, exit 0), and the repair applied a second time
//! changes nothing.
//!
//! The interrupted finalization is simulated by deleting a finished run's `inngest/function.finished`
//! row from the database of a stopped sluice: it stands in for a crash between the last step's
//! commit and the finish (sluice writes both in one transaction, so a real crash cannot split them;
//! the doctor must still find and repair the state if anything ever does).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// `sluice doctor ARGS --json --api URL --db DB` against this sluice's database.
async fn doctor(s: &Sluice, args: &[&str]) -> (i32, Value) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("doctor").args(args).arg("--json").arg("--api").arg(s.url());
    match &s.schema {
        Some((schema, _)) => cmd.arg("--db").arg(pg_url()).env("SLUICE_DB_SCHEMA", schema),
        None => cmd.arg("--db").arg(s.db_path()).env_remove("SLUICE_DB_SCHEMA"),
    };
    cmd.env_remove("SLUICE_DOCTOR_CONFIG").env_remove("SLUICE_SIGNING_KEY").current_dir(s.dir.path());
    let out = cmd.output().await.expect("run sluice doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("doctor {args:?} printed no envelope ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap_or(-1), v)
}

fn findings(v: &Value) -> Vec<(String, String)> {
    let r = if v["result"]["after"].is_object() { &v["result"]["after"] } else { &v["result"] };
    let mut out: Vec<(String, String)> = r["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| (f["code"].as_str().unwrap_or("").to_string(), f["subject"].as_str().unwrap_or("").to_string()))
        .collect();
    out.sort();
    out
}

fn repairs(v: &Value) -> Vec<(String, String)> {
    v["result"]["repairs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["action"].as_str().unwrap_or("").to_string(), r["outcome"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// Diagnose clean, and a second `--fix --apply` finds nothing to do.
async fn assert_clean_and_idempotent(s: &Sluice, extra: &[&str]) {
    let (code, v) = doctor(s, extra).await;
    assert_eq!(code, 0, "doctor is clean after the repair: {v:#}");
    assert_eq!(v["ok"], true);
    let mut again_args = vec!["--fix", "--apply"];
    again_args.extend_from_slice(extra);
    let (code, again) = doctor(s, &again_args).await;
    assert_eq!(code, 0, "{again:#}");
    assert_eq!(repairs(&again), vec![], "applying twice changes nothing the second time: {again:#}");
}

/// Only the options given: the defaults' --poll-interval would clash with a test's own.
fn options(args: &[&str]) -> SluiceOptions {
    SluiceOptions { args: args.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

#[tokio::test]
async fn a_worker_killed_mid_step_parks_its_runs_and_the_doctor_resyncs_them_back() {
    // No automatic re-sync (poll interval 1 h): the doctor's repair is what brings the app back.
    let sluice =
        Sluice::start(options(&["--retry-interval", "300ms", "--poll-interval", "1h", "--unreachable-budget", "1s"]))
            .await;
    let mut worker = Worker::ts(&sluice, &[]).await;
    sluice.sync(&worker.url()).await;
    let event = sluice.send("test/slow", json!({"ms": 1500})).await;
    let run_id = sluice.run_of_event(&event).await;
    worker.wait_effect("the long step to start", |e| e["fn"] == "slow-step" && e["phase"] == "start").await;
    worker.kill9();
    sluice.wait_status_for(&run_id, "PausedUnreachable", Duration::from_secs(30)).await;

    let (code, v) = doctor(&sluice, &[]).await;
    assert_eq!(code, 1, "something needs attention: {v:#}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], "SLUICE-6000");
    assert_eq!(
        findings(&v),
        vec![
            ("PAUSED_UNREACHABLE".to_string(), run_id.clone()),
            ("UNREACHABLE_DEPLOYMENT".to_string(), "ts-app".into())
        ]
    );
    let commands: Vec<&str> =
        v["next_actions"].as_array().unwrap().iter().filter_map(|a| a["command"].as_str()).collect();
    assert!(commands.iter().any(|c| c.starts_with("sluice doctor --fix --apply")), "{commands:?}");
    assert!(commands.iter().any(|c| c.starts_with("sluice doctor sweep --older-than 30m --function ts-app-slow-step")));

    // The bake gate's view is the same.
    let (status, body) = sluice.get("/v1/doctor").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["clean"], false);
    assert_eq!(body["data"]["summary"]["PAUSED_UNREACHABLE"], 1);

    // The preview plans a re-sync and changes nothing.
    let (_, preview) = doctor(&sluice, &["--fix"]).await;
    assert_eq!(preview["result"]["mode"], "preview");
    assert_eq!(preview["result"]["plan"][0]["repair"]["action"], "resync_app");
    assert_eq!(sluice.get_run(&run_id).await["status"], "PausedUnreachable");

    // Applied while the worker is still down: the re-sync fails and is recorded; nothing changes.
    let (code, failed) = doctor(&sluice, &["--fix", "--apply"]).await;
    assert_eq!(code, 1, "{failed:#}");
    assert_eq!(repairs(&failed), vec![("resync_app".to_string(), "failed".to_string())]);

    // The deployment is back: the repair re-syncs it and the run resumes where it stopped.
    worker.restart().await;
    let (code, fixed) = doctor(&sluice, &["--fix", "--apply"]).await;
    assert_eq!(repairs(&fixed), vec![("resync_app".to_string(), "applied".to_string())], "{fixed:#}");
    assert_eq!(code, 0, "{fixed:#}");
    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["output"], "slow-done");
    assert_eq!(worker.count(&run_id, "slow-step", "first"), 1, "a stored step never runs again");
    assert_clean_and_idempotent(&sluice, &[]).await;

    let (code, audit) = doctor(&sluice, &["audit"]).await;
    assert_eq!(code, 0);
    let entries = audit["result"]["entries"].as_array().unwrap();
    let outcomes: Vec<&str> = entries.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["applied", "failed"], "newest first: {audit:#}");
    assert_eq!(entries[0]["finding_code"], "UNREACHABLE_DEPLOYMENT");
}

#[tokio::test]
async fn a_sluice_node_killed_holding_a_lease_leaves_an_orphaned_claim_the_doctor_releases() {
    let mut sluice = Sluice::dev().await;
    let worker = Worker::ts(&sluice, &[]).await;
    sluice.sync(&worker.url()).await;
    let event = sluice.send("test/slow", json!({"ms": 1500})).await;
    let run_id = sluice.run_of_event(&event).await;
    worker.wait_effect("the long step to start", |e| e["fn"] == "slow-step" && e["phase"] == "start").await;
    // The node dies with the call's lease held (valid for call timeout + 60 s).
    sluice.kill9();

    // Diagnosed while sluice is down. SQLite: nobody holds the database's lock file, so the
    // lease's holder is gone. PostgreSQL: the dead node's heartbeat goes stale.
    let pg = sluice.schema.is_some();
    let node_timeout: &[&str] = if pg { &["--node-timeout", "1s"] } else { &[] };
    if pg {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let (code, v) = doctor(&sluice, node_timeout).await;
    assert_eq!(code, 1, "{v:#}");
    let found = findings(&v);
    assert_eq!(found.len(), 1, "{v:#}");
    assert_eq!(found[0].0, "ORPHANED_CLAIM");
    let finding = &v["result"]["findings"][0];
    assert_eq!(finding["run_id"], run_id.as_str());
    assert_eq!(finding["subject_kind"], "queue_item");
    assert_eq!(finding["repair"]["action"], "release_lease");

    let mut apply = vec!["--fix", "--apply"];
    apply.extend_from_slice(node_timeout);
    let (code, fixed) = doctor(&sluice, &apply).await;
    assert_eq!(repairs(&fixed), vec![("release_lease".to_string(), "applied".to_string())], "{fixed:#}");
    assert_eq!(code, 0, "clean right after the release: {fixed:#}");
    assert_eq!(fixed["result"]["via_api"], false, "sluice is down: repaired in the store");
    assert_clean_and_idempotent(&sluice, node_timeout).await;

    // The node comes back and the run goes on from its stored steps.
    sluice.restart().await;
    let run = sluice.wait_status(&run_id, "Completed").await;
    assert_eq!(run["output"], "slow-done");
    assert_eq!(worker.count(&run_id, "slow-step", "first"), 1);
    assert_clean_and_idempotent(&sluice, node_timeout).await;
}

#[tokio::test]
async fn a_chain_broken_by_a_downstream_function_removed_in_a_resync_is_reemitted_once_it_is_back() {
    let sluice = Sluice::dev().await;
    let full = Worker::ts(&sluice, &[]).await;
    sluice.sync(&full.url()).await;
    // A re-sync from a deployment that no longer has chain-b (nor anything after it).
    let partial = Worker::ts(&sluice, &[("FUNCTIONS", "chain-a")]).await;
    sluice.sync(&partial.url()).await;

    let origin = format!("doctor-{}", std::process::id());
    let run_a = sluice.run_to("test/chain.a", json!({"origin": origin}), "Completed").await;
    let event_b = run_a["output"]["ids"][0].as_str().unwrap().to_string();
    assert!(sluice.runs_for_event(&event_b).await.is_empty(), "nobody listens to test/chain.b any more");

    let expect = ["--expect", "test/chain.a=>test/chain.c@1s"];
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (code, v) = doctor(&sluice, &expect).await;
    assert_eq!(code, 1, "{v:#}");
    let found = findings(&v);
    assert_eq!(found.len(), 2, "{v:#}");
    assert!(found.iter().all(|(c, _)| c == "CHAIN_BROKEN"));
    let unmatched =
        v["result"]["findings"].as_array().unwrap().iter().find(|f| f["subject"] == event_b.as_str()).unwrap();
    assert_eq!(unmatched["evidence"]["kind"], "event_matched_no_function");
    assert_eq!(unmatched["evidence"]["sent_by_function"], "ts-app-chain-a");
    assert!(unmatched["repair"].is_null(), "nothing consumes it yet: {unmatched:#}");
    let (_, gate) = sluice.get("/v1/doctor").await;
    assert_eq!(gate["data"]["summary"]["CHAIN_BROKEN"], 1, "the bake gate sees the break: {gate}");

    // A deployment with chain-b again (a new worker: the old ones are drained and never take
    // traffic back on their own): the doctor re-emits the lost hop.
    let redeployed = Worker::ts(&sluice, &[]).await;
    sluice.sync(&redeployed.url()).await;
    let mut apply = vec!["--fix", "--apply"];
    apply.extend_from_slice(&expect);
    let (_, fixed) = doctor(&sluice, &apply).await;
    assert_eq!(repairs(&fixed), vec![("reemit_event".to_string(), "applied".to_string())], "{fixed:#}");
    let runs_b = sluice.runs_of("ts-app-chain-b").await;
    assert_eq!(runs_b.len(), 1, "{runs_b:?}");
    let run_b = sluice.wait_status(runs_b[0]["run_id"].as_str().unwrap(), "Completed").await;
    let event_c = run_b["output"]["ids"][0].as_str().unwrap().to_string();
    for leaf in ["chain-c1", "chain-c2"] {
        redeployed.wait_effect(leaf, |e| e["fn"] == leaf && e["origin"] == origin.as_str()).await;
    }
    let runs_c = sluice.runs_for_event(&event_c).await;
    for r in &runs_c {
        sluice.wait_status(r["run_id"].as_str().unwrap(), "Completed").await;
    }
    assert_clean_and_idempotent(&sluice, &expect).await;
    assert_eq!(sluice.runs_of("ts-app-chain-b").await.len(), 1, "re-emitted once");
    let (_, gate) = sluice.get("/v1/doctor").await;
    assert_eq!(gate["data"]["clean"], true, "{gate}");
}

#[tokio::test]
async fn a_claim_left_in_redis_by_a_failed_run_is_orphaned_and_deleted() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let prefix = format!("agent-loop-doctor-{}-{}", std::process::id(), sluice.port);
    let run =
        sluice.run_to("test/claim.fail", json!({"prefix": prefix, "loopId": "loop1", "storyId": "s1"}), "Failed").await;
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let claim = worker.wait_effect("the claim", |e| e["fn"] == "claim-then-fail" && e["step"] == "claim").await;
    assert_eq!(claim["reply"], "+OK", "{claim}");
    let key = format!("{prefix}:loop1:s1");
    let pattern = format!("{prefix}:*");
    let args = ["--redis", "redis://127.0.0.1:6379", "--claim-pattern", pattern.as_str()];

    let (code, v) = doctor(&sluice, &args).await;
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(findings(&v), vec![("ORPHANED_CLAIM".to_string(), key.clone())]);
    let f = &v["result"]["findings"][0];
    assert_eq!(f["run_id"], run_id.as_str(), "the claim names the failed run's event: {f:#}");
    assert!(f["evidence"]["value"].as_str().unwrap().starts_with("event:"));

    let mut apply = vec!["--fix", "--apply"];
    apply.extend_from_slice(&args);
    let (code, fixed) = doctor(&sluice, &apply).await;
    assert_eq!(repairs(&fixed), vec![("delete_claim".to_string(), "applied".to_string())], "{fixed:#}");
    assert_eq!(code, 0, "{fixed:#}");
    assert_clean_and_idempotent(&sluice, &args).await;

    // Reversible: undo puts the claim back (then it is orphaned again, and cleaned up for good).
    let (_, audit) = doctor(&sluice, &["audit"]).await;
    let id = audit["result"]["entries"][0]["id"].as_str().unwrap().to_string();
    let (code, undone) = doctor(&sluice, &["undo", id.as_str()]).await;
    assert_eq!(code, 0, "{undone:#}");
    assert_eq!(undone["result"]["restored"], true);
    let (code, v) = doctor(&sluice, &args).await;
    assert_eq!((code, findings(&v)), (1, vec![("ORPHANED_CLAIM".to_string(), key.clone())]));
    let (code, _) = doctor(&sluice, &apply).await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn an_interrupted_finalization_is_found_and_its_finish_events_emitted() {
    let (mut sluice, worker) = dev_with_ts_worker().await;
    let run = sluice.run_to("test/steps", json!({}), "Completed").await;
    let run_id = run["run_id"].as_str().unwrap().to_string();
    sluice.kill9();
    // Stands in for a crash between the last step and the finish: the finished event is gone.
    let deleted = delete_finished_event(&sluice, &run_id).await;
    assert_eq!(deleted, 1);

    let (code, v) = doctor(&sluice, &[]).await;
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(findings(&v), vec![("FINALIZATION_FAILED".to_string(), run_id.clone())]);
    assert_eq!(v["result"]["findings"][0]["evidence"]["missing"], json!(["inngest/function.finished"]));
    let (code, fixed) = doctor(&sluice, &["--fix", "--apply"]).await;
    assert_eq!(repairs(&fixed), vec![("emit_finish_events".to_string(), "applied".to_string())], "{fixed:#}");
    assert_eq!(code, 0, "{fixed:#}");
    assert_clean_and_idempotent(&sluice, &[]).await;

    sluice.restart().await;
    let (_, events) = sluice.get("/v1/events?name=inngest/function.finished").await;
    let finished: Vec<&Value> =
        events["data"].as_array().unwrap().iter().filter(|e| e["source_run_id"] == run_id.as_str()).collect();
    assert_eq!(finished.len(), 1, "{events:#}");
    assert_eq!(finished[0]["data"]["result"], "ABC");
    assert_eq!(finished[0]["data"]["run_id"], run_id.as_str());
    assert_eq!(worker.count(&run_id, "steps", "a"), 1);
    assert_clean_and_idempotent(&sluice, &[]).await;
}

async fn delete_finished_event(s: &Sluice, run_id: &str) -> usize {
    let sql = "DELETE FROM events WHERE name = 'inngest/function.finished' AND source_run_id = ";
    match &s.schema {
        Some((schema, _)) => {
            let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.batch_execute(&format!("SET search_path = \"{schema}\"")).await.unwrap();
            client.execute(&format!("{sql}$1"), &[&run_id]).await.unwrap() as usize
        }
        None => {
            let conn = rusqlite::Connection::open(s.db_path()).unwrap();
            conn.execute(&format!("{sql}?1"), [run_id]).unwrap()
        }
    }
}
