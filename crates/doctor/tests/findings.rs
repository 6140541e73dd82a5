//! Every finding and its repair, against real stores: each test runs on a SQLite file and on a
//! fresh PostgreSQL schema (`SLUICE_TEST_PG_URL`, default postgres://postgres@127.0.0.1:5432/test;
//! `SLUICE_SKIP_PG=1` skips PostgreSQL), and the Redis claim tests on the Redis at 127.0.0.1:6379.
//! The state is built through the `Store` trait the engine uses, then diagnosed, repaired, and
//! diagnosed again; a second apply must change nothing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_doctor::config::{ChainExpectation, ClaimSource};
use sluice_doctor::sweep::{self, SweepScope};
use sluice_doctor::{diagnose, Action, Code, DoctorConfig, Executor, Liveness, Report};
use sluice_protocol::event::Event;
use sluice_protocol::run::RunStatus;
use sluice_store::diagnostics::FUNCTION_FINISHED;
use sluice_store::*;

const MIN: i64 = 60_000;
/// "Now" for every test: far enough from zero that thresholds back into positive time.
const NOW: i64 = 1_800_000_000_000;

struct Backend {
    store: Arc<dyn Store>,
    diag: Arc<dyn Diagnostics>,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<String>,
}

impl Backend {
    async fn drop_schema(&self) {
        if let Some(schema) = &self.pg_schema {
            let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await.unwrap();
        }
    }
}

fn pg_url() -> String {
    std::env::var("SLUICE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("sluice.db")).unwrap();
    Backend { store: Arc::new(store.clone()), diag: Arc::new(store), _dir: Some(dir), pg_schema: None }
}

async fn postgres() -> Option<Backend> {
    if std::env::var("SLUICE_SKIP_PG").as_deref() == Ok("1") {
        eprintln!("SLUICE_SKIP_PG=1: PostgreSQL doctor test skipped");
        return None;
    }
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let schema = format!("sluice_doctor_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let options = PgOptions {
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        schema: Some(schema.clone()),
        ..Default::default()
    };
    let store = PostgresStore::connect(&pg_url(), options)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} for the doctor tests: {e} (SLUICE_SKIP_PG=1 skips)", pg_url()));
    Some(Backend { store: Arc::new(store.clone()), diag: Arc::new(store), _dir: None, pg_schema: Some(schema) })
}

/// One test body on both backends.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test] async fn $name() { super::$name(&super::sqlite()).await; } )* }
        mod on_postgres {
            $( #[tokio::test] async fn $name() {
                let Some(b) = super::postgres().await else { return };
                super::$name(&b).await;
                b.drop_schema().await;
            } )*
        }
    };
}

both!(
    stale_runs_are_told_apart_from_work_in_flight_sleeping_and_waiting,
    orphaned_leases_are_found_by_expiry_dead_node_or_stopped_process_and_released_once,
    finish_events_missing_after_a_run_ended_are_emitted_once,
    every_step_stored_but_never_finished_is_redriven,
    an_emitted_event_nobody_consumes_is_reemitted_once_a_listener_exists,
    a_triggered_run_that_never_started_and_unmet_expectations_are_chain_breaks,
    parked_runs_and_their_unreachable_deployment_are_reported,
    duplicate_step_results_are_reported_until_acknowledged,
    orphaned_singleton_keys_are_released,
    sweep_refuses_unsafe_scopes_backs_up_then_cancels,
    redis_claims_of_ended_or_unknown_runs_are_deleted_and_can_be_put_back,
);

fn function(id: &str, event: &str) -> FunctionRecord {
    let config = serde_json::from_value(json!({
        "id": id, "name": id, "triggers": [{"event": event}],
        "steps": {"step": {"id": "step", "name": "step",
                           "runtime": {"type": "http", "url": format!("http://127.0.0.1:9/api?fnId={id}&stepId=step")}}}
    }))
    .unwrap();
    FunctionRecord { id: id.into(), app_id: "app".into(), name: id.into(), config, updated_at: NOW }
}

async fn sync_app(store: &dyn Store, functions: Vec<FunctionRecord>) {
    let app = AppRecord {
        id: "app".into(),
        url: "http://127.0.0.1:9/api".into(),
        normalized_url: "http://127.0.0.1:9/api".into(),
        framework: None,
        sdk: None,
        deploy_id: None,
        app_version: None,
        config_hash: format!("h{}", functions.len()),
        status: AppStatus::Synced,
        last_error: None,
        synced_at: Some(NOW),
        updated_at: NOW,
    };
    store.upsert_app(app, functions).await.unwrap();
}

fn event(id: &str, name: &str, at: i64, source_run: Option<&str>) -> EventRecord {
    EventRecord {
        id: id.into(),
        event: Event { name: name.into(), data: json!({"k": id}), id: String::new(), ts: at, user: json!({}), v: None },
        received_at: at,
        source_run_id: source_run.map(str::to_string),
    }
}

fn run_record(id: &str, function_id: &str, event_id: &str, status: RunStatus, at: i64) -> RunRecord {
    RunRecord {
        id: id.into(),
        function_id: function_id.into(),
        app_id: "app".into(),
        event_id: event_id.into(),
        event_ids: vec![event_id.into()],
        status,
        state: RunState { max_attempts: 4, ..Default::default() },
        output: None,
        error: None,
        parked_reason: None,
        created_at: at,
        started_at: (status != RunStatus::Queued).then_some(at),
        ended_at: None,
        updated_at: at,
        rev: 0,
    }
}

fn item(id: &str, run_id: &str, kind: ItemKind, due: i64) -> QueueItem {
    QueueItem {
        id: id.into(),
        run_id: run_id.into(),
        kind,
        step_id: "step".into(),
        attempt: 0,
        available_at: due,
        lease_owner: None,
        lease_expires_at: None,
        unreachable_count: 0,
        unreachable_since: None,
        parked: false,
        created_at: due,
    }
}

/// Store an event and one run of it (status as given) with the given first queue item, or none.
async fn seed_run(
    store: &dyn Store,
    run: RunRecord,
    ev: EventRecord,
    first: Option<QueueItem>,
    extra: Vec<QueueItem>,
) -> RunRecord {
    let first_item =
        first.unwrap_or_else(|| item(&format!("{}:seed", run.id), &run.id, ItemKind::Call, run.created_at));
    let drop_first = first_item.id.ends_with(":seed");
    let new_run =
        NewRun { run: run.clone(), first_item: first_item.clone(), pauses: vec![], guards: vec![], extra_items: extra };
    let out = store
        .ingest(vec![IngestItem { record: ev, dedup_key: None, dedup_until: 0, runs: vec![new_run] }])
        .await
        .unwrap();
    assert_eq!(out[0].run_ids, vec![run.id.clone()]);
    if drop_first {
        store
            .commit(Commit { run_id: run.id.clone(), done_item: Some(first_item.id), ..Default::default() })
            .await
            .unwrap();
    }
    store.get_run(&run.id).await.unwrap().unwrap()
}

async fn check(b: &Backend, config: &DoctorConfig, liveness: &Liveness) -> Report {
    diagnose(b.store.as_ref(), b.diag.as_ref(), config, NOW, liveness).await.unwrap()
}

fn executor(b: &Backend) -> Executor {
    Executor::new(b.store.clone(), b.diag.clone(), None, "test@host".into(), "sluice doctor --fix --apply".into())
}

/// Apply every repair of a report; returns the outcomes in order.
async fn apply_all(b: &Backend, report: &Report) -> Vec<String> {
    let ex = executor(b);
    let mut out = Vec::new();
    for (f, r) in report.repairs() {
        out.push(ex.apply(f, r, NOW).await.unwrap().outcome);
    }
    out
}

fn codes(r: &Report) -> Vec<(Code, String)> {
    r.findings.iter().map(|f| (f.code, f.subject.clone())).collect()
}

async fn stale_runs_are_told_apart_from_work_in_flight_sleeping_and_waiting(b: &Backend) {
    let s = b.store.as_ref();
    sync_app(s, vec![function("app-f", "t/e"), function("app-slow", "t/slow")]).await;
    let old = NOW - 60 * MIN;
    // Ghost: running, nothing queued, no pause, idle an hour.
    seed_run(
        s,
        run_record("ghost", "app-f", "e1", RunStatus::Running, old),
        event("e1", "t/e", old, None),
        None,
        vec![],
    )
    .await;
    // In flight: a call leased until the future.
    let mut leased = item("inflight:c", "inflight", ItemKind::Call, old);
    leased.lease_owner = Some("node-a".into());
    leased.lease_expires_at = Some(NOW + 10 * MIN);
    seed_run(
        s,
        run_record("inflight", "app-f", "e2", RunStatus::Running, old),
        event("e2", "t/e", old, None),
        Some(leased),
        vec![],
    )
    .await;
    // Sleeping: a wake item in the future.
    seed_run(
        s,
        run_record("sleeping", "app-f", "e3", RunStatus::Running, old),
        event("e3", "t/e", old, None),
        Some(item("sleeping:w", "sleeping", ItemKind::Wake, NOW + 2 * 3_600_000)),
        vec![],
    )
    .await;
    // Waiting for an event: a pause that expires in the future.
    let w = seed_run(
        s,
        run_record("waiting", "app-f", "e4", RunStatus::Running, old),
        event("e4", "t/e", old, None),
        None,
        vec![],
    )
    .await;
    let pause = PauseRecord {
        id: "waiting:p".into(),
        run_id: "waiting".into(),
        kind: PauseKind::WaitForEvent,
        step_id: Some("wait".into()),
        event_name: "t/approve".into(),
        expression: None,
        match_key: None,
        trigger_event: json!({}),
        expires_at: NOW + 10 * MIN,
        created_at: old,
    };
    s.commit(Commit { run_id: w.id.clone(), new_pauses: vec![pause], ..Default::default() }).await.unwrap();
    // Idle but under its function's longer threshold.
    seed_run(
        s,
        run_record("slow", "app-slow", "e5", RunStatus::Running, old),
        event("e5", "t/slow", old, None),
        None,
        vec![],
    )
    .await;
    // Recent: under the global threshold.
    seed_run(
        s,
        run_record("recent", "app-f", "e6", RunStatus::Running, NOW - MIN),
        event("e6", "t/e", NOW - MIN, None),
        None,
        vec![],
    )
    .await;

    let mut config = DoctorConfig::default();
    config.stale_after_by_function.insert("app-slow".into(), 2 * 3_600_000);
    let report = check(b, &config, &Liveness::default()).await;
    assert_eq!(codes(&report), vec![(Code::StaleRun, "ghost".to_string())], "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_eq!(f.evidence["idle_ms"], json!(60 * MIN));
    assert!(matches!(f.repair.as_ref().unwrap().action, Action::Redrive { .. }));

    assert_eq!(apply_all(b, &report).await, vec!["applied"]);
    let items = s.items_for_run("ghost").await.unwrap();
    assert_eq!(items.len(), 1, "one discovery call queued: {items:?}");
    assert_eq!(items[0].step_id, "step");
    // The run now has work due: no longer stale, and a second apply has nothing to do.
    let again = check(b, &config, &Liveness::default()).await;
    assert!(again.clean, "{:#?}", again.findings);
    // Re-applying the old plan is refused by the compare-and-set... and queues nothing twice.
    assert_eq!(apply_all(b, &report).await, vec!["applied"]);
    assert_eq!(s.items_for_run("ghost").await.unwrap().len(), 1, "same (run, rev) → same item id");
    let audit = b.diag.list_audit(10).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].finding_code, "STALE_RUN");
    assert_eq!(audit[0].action, "redrive");
}

async fn orphaned_leases_are_found_by_expiry_dead_node_or_stopped_process_and_released_once(b: &Backend) {
    let s = b.store.as_ref();
    sync_app(s, vec![function("app-f", "t/e")]).await;
    let at = NOW - 5 * MIN;
    let mut expired = item("x:c", "x", ItemKind::Call, at);
    expired.lease_owner = Some("node-gone".into());
    expired.lease_expires_at = Some(NOW - MIN);
    seed_run(
        s,
        run_record("x", "app-f", "ex", RunStatus::Running, at),
        event("ex", "t/e", at, None),
        Some(expired),
        vec![],
    )
    .await;
    let mut live = item("y:c", "y", ItemKind::Call, at);
    live.lease_owner = Some("node-dead".into());
    live.lease_expires_at = Some(NOW + 30 * MIN);
    seed_run(
        s,
        run_record("y", "app-f", "ey", RunStatus::Running, at),
        event("ey", "t/e", at, None),
        Some(live),
        vec![],
    )
    .await;

    let report = check(b, &DoctorConfig::default(), &Liveness::default()).await;
    assert_eq!(codes(&report), vec![(Code::OrphanedClaim, "x:c".to_string())], "{:#?}", report.findings);

    // A node whose heartbeat is older than the node timeout is dead: its unexpired lease is orphaned.
    s.heartbeat("node-dead", NOW - 10 * MIN, NOW - 5 * MIN).await.unwrap();
    let report = check(b, &DoctorConfig::default(), &Liveness::default()).await;
    let mut found = codes(&report);
    found.sort();
    assert_eq!(found, vec![(Code::OrphanedClaim, "x:c".into()), (Code::OrphanedClaim, "y:c".into())]);
    assert!(report.findings[1].evidence["reason"].as_str().unwrap().contains("heartbeat"), "{:#?}", report.findings);

    // With no process holding the database, every lease is orphaned whatever its expiry.
    s.heartbeat("node-dead", NOW - 10 * MIN, NOW).await.unwrap();
    let stopped = Liveness { no_live_node: Some("no sluice process holds sluice.lock".into()) };
    let report = check(b, &DoctorConfig::default(), &stopped).await;
    assert_eq!(report.findings.len(), 2, "{:#?}", report.findings);
    assert_eq!(apply_all(b, &report).await, vec!["applied", "applied"]);
    for id in ["x", "y"] {
        assert!(s.items_for_run(id).await.unwrap().iter().all(|i| i.lease_owner.is_none()));
    }
    assert!(check(b, &DoctorConfig::default(), &stopped).await.clean);
    // The same plan again: the leases are no longer held as they were, so nothing changes.
    assert_eq!(apply_all(b, &report).await, vec!["noop", "noop"]);
}

async fn finish_events_missing_after_a_run_ended_are_emitted_once(b: &Backend) {
    let s = b.store.as_ref();
    sync_app(s, vec![function("app-f", "t/e"), function("app-on-failed", "inngest/function.failed")]).await;
    let at = NOW - 10 * MIN;
    for (id, status) in
        [("01J0000000000000000000DONE", RunStatus::Completed), ("01J0000000000000000000DEAD", RunStatus::Failed)]
    {
        let r = seed_run(
            s,
            run_record(id, "app-f", &format!("ev-{id}"), RunStatus::Running, at),
            event(&format!("ev-{id}"), "t/e", at, None),
            None,
            vec![],
        )
        .await;
        let mut ended = r.clone();
        ended.status = status;
        ended.ended_at = Some(at);
        ended.output = Some(json!("out"));
        ended.error = (status == RunStatus::Failed).then(|| json!({"name": "Error", "message": "boom"}));
        // The end committed without its events: what a crash between the last step and the finish leaves.
        let out = s
            .commit(Commit {
                run_id: r.id.clone(),
                expected_rev: r.rev,
                run: Some(ended),
                clear_items: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(matches!(out, CommitOutcome::Applied { .. }));
    }
    let report = check(b, &DoctorConfig::default(), &Liveness::default()).await;
    let mut found: Vec<_> =
        report.findings.iter().map(|f| (f.code, f.subject.clone(), f.evidence["missing"].clone())).collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        found,
        vec![
            (
                Code::FinalizationFailed,
                "01J0000000000000000000DEAD".into(),
                json!([FUNCTION_FINISHED, "inngest/function.failed"])
            ),
            (Code::FinalizationFailed, "01J0000000000000000000DONE".into(), json!([FUNCTION_FINISHED])),
        ]
    );
    assert_eq!(apply_all(b, &report).await, vec!["applied", "applied"]);
    let emitted = b.diag.events_from_runs(&["01J0000000000000000000DEAD".to_string()]).await.unwrap();
    let names: Vec<&str> = emitted.iter().map(|e| e.event.name.as_str()).collect();
    assert!(names.contains(&FUNCTION_FINISHED) && names.contains(&"inngest/function.failed"), "{names:?}");
    let failed = emitted.iter().find(|e| e.event.name == "inngest/function.failed").unwrap();
    assert_eq!(failed.id, "01J0000000000000000000DEAD", "function.failed carries the run id, as a real end does");
    assert_eq!(failed.event.data["error"]["message"], "boom");
    // Its listener (onFailure-style) was triggered, as a real failure would.
    assert_eq!(s.runs_for_event(&failed.id).await.unwrap()[0].function_id, "app-on-failed");
    assert!(check(b, &DoctorConfig::default(), &Liveness::default()).await.clean);
    assert_eq!(apply_all(b, &report).await, vec!["noop", "noop"], "deterministic ids: stored once");
    assert_eq!(b.diag.events_from_runs(&["01J0000000000000000000DEAD".to_string()]).await.unwrap().len(), 2);
}

async fn every_step_stored_but_never_finished_is_redriven(b: &Backend) {
    let s = b.store.as_ref();
    sync_app(s, vec![function("app-f", "t/e")]).await;
    let at = NOW - 40 * MIN;
    let r = seed_run(
        s,
        run_record("fin", "app-f", "ef", RunStatus::Running, at),
        event("ef", "t/e", at, None),
        None,
        vec![],
    )
    .await;
    let step = StepRecord {
        run_id: "fin".into(),
        step_id: "a".into(),
        seq: 0,
        name: Some("a".into()),
        value: json!({"data": 1}),
        created_at: at,
    };
    s.commit(Commit { run_id: r.id.clone(), steps: vec![step], ..Default::default() }).await.unwrap();
    let report = check(b, &DoctorConfig::default(), &Liveness::default()).await;
    assert_eq!(codes(&report), vec![(Code::FinalizationFailed, "fin".to_string())], "{:#?}", report.findings);
    assert_eq!(report.findings[0].evidence["kind"], "never_finished");
    assert_eq!(apply_all(b, &report).await, vec!["applied"]);
    assert!(check(b, &DoctorConfig::default(), &Liveness::default()).await.clean);
}

async fn an_emitted_event_nobody_consumes_is_reemitted_once_a_listener_exists(b: &Backend) {
    let s = b.store.as_ref();
    sync_app(s, vec![function("app-a", "t/a")]).await;
    let at = NOW - 3 * MIN;
    let a = seed_run(
        s,
        run_record("run-a", "app-a", "ea", RunStatus::Running, at),
        event("ea", "t/a", at, None),
        None,
        vec![],
    )
    .await;
    // Run a's sendEvent step returned the id of an event no function consumes (t/b's function was removed).
    s.ingest(vec![IngestItem { record: event("eb", "t/b", at, None), dedup_key: None, dedup_until: 0, runs: vec![] }])
        .await
        .unwrap();
    let sent = StepRecord {
        run_id: a.id.clone(),
        step_id: "s1".into(),
        seq: 0,
        name: Some("emit-b".into()),
        value: json!({"data": {"ids": ["eb"]}}),
        created_at: at,
    };
    let mut done = a.clone();
    done.status = RunStatus::Completed;
    done.ended_at = Some(at);
    let fin = IngestItem {
        record: event("fa", FUNCTION_FINISHED, at, Some("run-a")),
        dedup_key: None,
        dedup_until: 0,
        runs: vec![],
    };
    s.commit(Commit {
        run_id: a.id.clone(),
        expected_rev: a.rev,
        run: Some(done),
        steps: vec![sent],
        clear_items: true,
        emit: vec![fin],
        ..Default::default()
    })
    .await
    .unwrap();

    let report = check(b, &DoctorConfig::default(), &Liveness::default()).await;
    assert_eq!(codes(&report), vec![(Code::ChainBroken, "eb".to_string())], "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_eq!(f.evidence["kind"], "event_matched_no_function");
    assert_eq!(f.evidence["sent_by_run"], "run-a");
    assert!(f.repair.is_none(), "no listener yet: nothing to re-emit to");
    let mut ignoring = DoctorConfig::default();
    ignoring.chain.ignore_unmatched.push("t/*".into());
    assert!(check(b, &ignoring, &Liveness::default()).await.clean);

    // The downstream function is deployed again: re-emit.
    sync_app(s, vec![function("app-a", "t/a"), function("app-b", "t/b")]).await;
    let report = check(b, &DoctorConfig::default(), &Liveness::default()).await;
    assert!(matches!(report.findings[0].repair.as_ref().unwrap().action, Action::ReemitEvent { .. }));
    assert_eq!(apply_all(b, &report).await, vec!["applied"]);
    let linked = b.diag.events_from_runs(&["run-a".to_string()]).await.unwrap();
    let again = linked.iter().find(|e| e.event.name == "t/b").expect("re-emitted event linked to run a");
    assert_eq!(s.runs_for_event(&again.id).await.unwrap()[0].function_id, "app-b");
    let after = check(b, &DoctorConfig::default(), &Liveness::default()).await;
    assert!(after.clean, "{:#?}", after.findings);
    assert_eq!(after.resolved.len(), 1);
    assert_eq!(apply_all(b, &report).await, vec!["noop"], "the same deterministic id is stored once");
    assert_eq!(s.runs_of_event_count(&again.id).await, 1);
}

async fn a_triggered_run_that_never_started_and_unmet_expectations_are_chain_breaks(b: &Backend) {
    let s = b.store.as_ref();
    sync_app(s, vec![function("app-a", "t/a"), function("app-b", "t/b")]).await;
    let at = NOW - 45 * MIN;
    seed_run(s, run_record("ra", "app-a", "xa", RunStatus::Completed, at), event("xa", "t/a", at, None), None, vec![])
        .await;
    // Run ra emitted t/b (sluice's own link), whose run was created but never queued to start.
    seed_run(
        s,
        run_record("rb", "app-b", "xb", RunStatus::Queued, at),
        event("xb", "t/b", at, Some("ra")),
        None,
        vec![],
    )
    .await;
    let mut config = DoctorConfig::default();
    config.chain.expect.push(ChainExpectation { after: "t/a".into(), expect: "t/c".into(), within: 10 * MIN });
    let report = check(b, &config, &Liveness::default()).await;
    let mut found: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.evidence["kind"].as_str().unwrap_or("").to_string(), f.subject.clone()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("expectation_unmet".to_string(), "xa".to_string()),
            ("finish_events_missing".to_string(), "ra".to_string()),
            ("run_never_started".to_string(), "rb".to_string()),
        ],
        "{:#?}",
        report.findings
    );
    let chain = &report.findings.iter().find(|f| f.evidence["kind"] == "expectation_unmet").unwrap().evidence["chain"];
    assert_eq!(chain[1]["runs"][0]["run_id"], "rb", "the walk reached the run that never started: {chain}");
    apply_all(b, &report).await;
    assert_eq!(s.items_for_run("rb").await.unwrap().len(), 1, "its first call is queued");
}

async fn parked_runs_and_their_unreachable_deployment_are_reported(b: &Backend) {
    let s = b.store.as_ref();
    sync_app(s, vec![function("app-f", "t/e")]).await;
    let at = NOW - 2 * MIN;
    seed_run(
        s,
        run_record("p1", "app-f", "ep", RunStatus::Running, at),
        event("ep", "t/e", at, None),
        Some(item("p1:c", "p1", ItemKind::Call, at)),
        vec![],
    )
    .await;
    s.set_app_status("app", AppStatus::Unreachable, Some("connection refused".into()), at).await.unwrap();
    s.park_app("app", "app app unreachable since …: connection refused", at).await.unwrap();
    let report = check(b, &DoctorConfig::default(), &Liveness::default()).await;
    let mut found = codes(&report);
    found.sort();
    assert_eq!(found, vec![(Code::PausedUnreachable, "p1".into()), (Code::UnreachableDeployment, "app".into())]);
    let dep = report.findings.iter().find(|f| f.code == Code::UnreachableDeployment).unwrap();
    assert_eq!(dep.evidence["parked_runs"], json!(["p1"]));
    assert!(matches!(dep.repair.as_ref().unwrap().action, Action::ResyncApp { .. }));
    // Without the running sluice the re-sync cannot happen: recorded as failed, nothing changed.
    assert_eq!(apply_all(b, &report).await, vec!["failed"]);
    assert_eq!(s.get_run("p1").await.unwrap().unwrap().status, RunStatus::PausedUnreachable);
    // The app answers again (what a successful re-sync does): nothing left.
    s.set_app_status("app", AppStatus::Synced, None, NOW).await.unwrap();
    s.unpark_app("app", NOW).await.unwrap();
    assert!(check(b, &DoctorConfig::default(), &Liveness::default()).await.clean);
}

async fn duplicate_step_results_are_reported_until_acknowledged(b: &Backend) {
    let s = b.store.as_ref();
    sync_app(s, vec![function("app-f", "t/e")]).await;
    let at = NOW - MIN;
    let r = seed_run(
        s,
        run_record("d", "app-f", "ed", RunStatus::Running, at),
        event("ed", "t/e", at, None),
        Some(item("d:c", "d", ItemKind::Call, NOW + MIN)),
        vec![],
    )
    .await;
    let step = |v: Value| StepRecord {
        run_id: "d".into(),
        step_id: "charge".into(),
        seq: 0,
        name: Some("charge".into()),
        value: v,
        created_at: at,
    };
    s.commit(Commit { run_id: r.id.clone(), steps: vec![step(json!({"data": "first"}))], ..Default::default() })
        .await
        .unwrap();
    let out = s
        .commit(Commit { run_id: r.id.clone(), steps: vec![step(json!({"data": "second"}))], ..Default::default() })
        .await
        .unwrap();
    assert_eq!(out, CommitOutcome::Applied { duplicate_steps: vec!["charge".into()] });
    let report = check(b, &DoctorConfig::default(), &Liveness::default()).await;
    assert_eq!(codes(&report), vec![(Code::DuplicateStep, "charge".to_string())]);
    assert_eq!(report.findings[0].evidence["kept"], json!({"data": "first"}));
    assert_eq!(report.findings[0].evidence["discarded"], json!({"data": "second"}));
    assert_eq!(apply_all(b, &report).await, vec!["applied"]);
    let after = check(b, &DoctorConfig::default(), &Liveness::default()).await;
    assert!(after.clean && after.resolved.len() == 1, "{after:#?}");
}

async fn orphaned_singleton_keys_are_released(b: &Backend) {
    let s = b.store.as_ref();
    sync_app(s, vec![function("app-f", "t/e")]).await;
    let at = NOW - MIN;
    let run = run_record("g", "app-f", "eg", RunStatus::Running, at);
    let guard = RunGuard { keys: vec!["single\0app-f\0k".into()], expires_at: i64::MAX, release_on_end: true };
    let new_run = NewRun {
        run: run.clone(),
        first_item: item("g:c", "g", ItemKind::Call, NOW + MIN),
        pauses: vec![],
        guards: vec![guard],
        extra_items: vec![],
    };
    s.ingest(vec![IngestItem {
        record: event("eg", "t/e", at, None),
        dedup_key: None,
        dedup_until: 0,
        runs: vec![new_run],
    }])
    .await
    .unwrap();
    assert!(check(b, &DoctorConfig::default(), &Liveness::default()).await.clean, "held by a live run: fine");
    // The run ends without its end-released key being dropped (as a crash mid-finish could leave it).
    let mut ended = s.get_run("g").await.unwrap().unwrap();
    let rev = ended.rev;
    ended.status = RunStatus::Cancelled;
    ended.ended_at = Some(at);
    let fin: Vec<IngestItem> = ["inngest/function.finished", "inngest/function.cancelled"]
        .iter()
        .enumerate()
        .map(|(i, n)| IngestItem {
            record: event(&format!("fin{i}"), n, at, Some("g")),
            dedup_key: None,
            dedup_until: 0,
            runs: vec![],
        })
        .collect();
    s.commit(Commit { run_id: "g".into(), expected_rev: rev, run: Some(ended), emit: fin, ..Default::default() })
        .await
        .unwrap();
    let report = check(b, &DoctorConfig::default(), &Liveness::default()).await;
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    assert_eq!((report.findings[0].code, report.findings[0].subject_kind.as_str()), (Code::OrphanedClaim, "guard"));
    assert_eq!(apply_all(b, &report).await, vec!["applied"]);
    assert_eq!(s.guard_holder("single\0app-f\0k", NOW).await.unwrap(), None);
    assert_eq!(apply_all(b, &report).await, vec!["noop"]);
}

async fn sweep_refuses_unsafe_scopes_backs_up_then_cancels(b: &Backend) {
    let s = b.store.as_ref();
    sync_app(s, vec![function("app-f", "t/e"), function("app-other", "t/o")]).await;
    let old = NOW - 2 * 3_600_000;
    for i in 0..3 {
        let id = format!("01J00000000000000000SWEEP{i}");
        seed_run(
            s,
            run_record(&id, "app-f", &format!("es{i}"), RunStatus::Running, old),
            event(&format!("es{i}"), "t/e", old, None),
            None,
            vec![],
        )
        .await;
    }
    seed_run(
        s,
        run_record("other", "app-other", "eo", RunStatus::Running, old),
        event("eo", "t/o", old, None),
        None,
        vec![],
    )
    .await;
    let scope = |older: i64, functions: Vec<&str>, max: usize| SweepScope {
        older_than: older,
        older_than_text: format!("{older}ms"),
        functions: functions.into_iter().map(str::to_string).collect(),
        max,
        allow_young: false,
    };
    assert_eq!(sweep::validate(&scope(30 * MIN, vec![], 10)).unwrap_err().code(), "SLUICE-6104");
    assert_eq!(sweep::validate(&scope(MIN, vec!["app-f"], 10)).unwrap_err().code(), "SLUICE-6101");
    let wide = sweep::candidates(b.diag.as_ref(), &scope(30 * MIN, vec!["app-f"], 2), NOW, &Liveness::default()).await;
    assert_eq!(wide.unwrap_err().code(), "SLUICE-6102");
    let ok = scope(30 * MIN, vec!["app-f"], 10);
    sweep::validate(&ok).unwrap();
    let candidates = sweep::candidates(b.diag.as_ref(), &ok, NOW, &Liveness::default()).await.unwrap();
    assert_eq!(candidates.len(), 3, "only app-f's runs: {candidates:?}");
    let dir = tempfile::tempdir().unwrap();
    let (backup, done) = sweep::apply(&executor(b), &candidates, dir.path(), NOW).await.unwrap();
    let backup = backup.unwrap();
    assert!(backup.path.exists() && backup.bytes > 0, "{backup:?}");
    if backup.kind == "json-rows" {
        let dump: Value = serde_json::from_str(&std::fs::read_to_string(&backup.path).unwrap()).unwrap();
        assert_eq!(dump["tables"]["runs"].as_array().unwrap().len(), 3);
    } else {
        let copy = SqliteStore::open(&backup.path).unwrap();
        assert_eq!(
            copy.get_run("other").await.unwrap().unwrap().status,
            RunStatus::Running,
            "a full copy, before the sweep"
        );
    }
    assert!(done.iter().all(|d| d.outcome == "applied"), "{done:?}");
    for c in &candidates {
        let run = s.get_run(&c.run_id).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Cancelled);
        let names: Vec<String> = b
            .diag
            .events_from_runs(std::slice::from_ref(&c.run_id))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.name)
            .collect();
        assert!(names.contains(&"inngest/function.cancelled".to_string()), "cancelled as a real cancel: {names:?}");
    }
    assert_eq!(s.get_run("other").await.unwrap().unwrap().status, RunStatus::Running);
    assert!(sweep::candidates(b.diag.as_ref(), &ok, NOW, &Liveness::default()).await.unwrap().is_empty());
}

async fn redis_claims_of_ended_or_unknown_runs_are_deleted_and_can_be_put_back(b: &Backend) {
    let s = b.store.as_ref();
    sync_app(s, vec![function("app-f", "t/e")]).await;
    let at = NOW - MIN;
    let tag = format!("{}-{}", std::process::id(), b.pg_schema.as_deref().unwrap_or("sqlite"));
    let ended = seed_run(
        s,
        run_record(&format!("ended-{tag}"), "app-f", &format!("ee-{tag}"), RunStatus::Running, at),
        event(&format!("ee-{tag}"), "t/e", at, None),
        None,
        vec![],
    )
    .await;
    let mut done = ended.clone();
    done.status = RunStatus::Failed;
    done.ended_at = Some(at);
    let fin: Vec<IngestItem> = ["inngest/function.finished", "inngest/function.failed"]
        .iter()
        .enumerate()
        .map(|(i, n)| IngestItem {
            record: event(&format!("f{i}-{tag}"), n, at, Some(&ended.id)),
            dedup_key: None,
            dedup_until: 0,
            runs: vec![],
        })
        .collect();
    s.commit(Commit {
        run_id: ended.id.clone(),
        expected_rev: ended.rev,
        run: Some(done),
        clear_items: true,
        emit: fin,
        ..Default::default()
    })
    .await
    .unwrap();
    let live = seed_run(
        s,
        run_record(&format!("live-{tag}"), "app-f", &format!("el-{tag}"), RunStatus::Running, at),
        event(&format!("el-{tag}"), "t/e", at, None),
        Some(item("l:c", &format!("live-{tag}"), ItemKind::Call, NOW + MIN)),
        vec![],
    )
    .await;

    let pattern = format!("doctor-test:{tag}:claim:*");
    let mut redis = redis::Client::open("redis://127.0.0.1:6379").unwrap().get_connection().unwrap();
    let set = |conn: &mut redis::Connection, k: &str, v: &str| {
        let _: () = redis::cmd("SET").arg(k).arg(v).arg("EX").arg(600).query(conn).unwrap();
    };
    let k_ended = format!("doctor-test:{tag}:claim:loop:s1");
    let k_event = format!("doctor-test:{tag}:claim:loop:s2");
    let k_live = format!("doctor-test:{tag}:claim:loop:s3");
    let k_absent = format!("doctor-test:{tag}:claim:loop:s4");
    set(&mut redis, &k_ended, &ended.id);
    set(&mut redis, &k_event, &format!("event:ee-{tag}"));
    set(&mut redis, &k_live, &format!("event:{}", live.event_id));
    set(&mut redis, &k_absent, "run:nobody-knows-this-one");

    let mut config = DoctorConfig::default();
    config.claims.push(ClaimSource { redis: "redis://127.0.0.1:6379".into(), pattern, absent_is_orphaned: true });
    let report = check(b, &config, &Liveness::default()).await;
    let mut found: Vec<String> = report.findings.iter().map(|f| f.subject.clone()).collect();
    found.sort();
    assert_eq!(found, vec![k_ended.clone(), k_event.clone(), k_absent.clone()], "{:#?}", report.findings);
    assert!(report.findings.iter().all(|f| f.code == Code::OrphanedClaim && f.repair.as_ref().unwrap().reversible));
    assert_eq!(apply_all(b, &report).await, vec!["applied"; 3]);
    let exists = |conn: &mut redis::Connection, k: &str| -> bool {
        redis::cmd("EXISTS").arg(k).query::<i64>(conn).unwrap() == 1
    };
    assert!(!exists(&mut redis, &k_ended) && !exists(&mut redis, &k_event) && !exists(&mut redis, &k_absent));
    assert!(exists(&mut redis, &k_live), "a live run's claim is kept");
    assert!(check(b, &config, &Liveness::default()).await.clean);
    assert_eq!(apply_all(b, &report).await, vec!["noop"; 3]);

    // Undo puts the claim back, with its value and (about) its TTL.
    let entry = b
        .diag
        .list_audit(100)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.subject == k_ended && e.outcome == "applied")
        .unwrap();
    let ex = executor(b);
    let undone = ex.undo(&entry.id, NOW).await.unwrap();
    assert_eq!(undone["restored"], true);
    let value: String = redis::cmd("GET").arg(&k_ended).query(&mut redis).unwrap();
    assert_eq!(value, ended.id);
    let ttl: i64 = redis::cmd("TTL").arg(&k_ended).query(&mut redis).unwrap();
    assert!(ttl > 500, "{ttl}");
    for k in [&k_ended, &k_live] {
        let _: i64 = redis::cmd("DEL").arg(k).query(&mut redis).unwrap();
    }
    // An unreachable claim source is an error, not a clean bill of health.
    let mut bad = DoctorConfig::default();
    bad.claims.push(ClaimSource {
        redis: "redis://127.0.0.1:1".into(),
        pattern: "x:*".into(),
        absent_is_orphaned: true,
    });
    let err = diagnose(s, b.diag.as_ref(), &bad, NOW, &Liveness::default()).await.unwrap_err();
    assert_eq!(err.code(), "SLUICE-6002");
}

trait CountRuns {
    async fn runs_of_event_count(&self, event_id: &str) -> usize;
}

impl CountRuns for dyn Store {
    async fn runs_of_event_count(&self, event_id: &str) -> usize {
        self.runs_for_event(event_id).await.unwrap().len()
    }
}
