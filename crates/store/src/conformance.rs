//! One behavioural suite for every `Store` backend: each backend's test module supplies a
//! [`Backend`] and expands [`conformance_suite!`], so SQLite and PostgreSQL are held to the same
//! semantics by the same assertions.

use async_trait::async_trait;
use serde_json::json;
use sluice_protocol::event::Event;
use sluice_protocol::run::RunStatus;

use crate::*;

/// Opens stores over one durable state that belongs to a single test.
#[async_trait]
pub trait Backend: Send + Sync + Sized {
    type Store: Store;
    /// A new store object over the same state as every earlier call: calling it again after
    /// dropping a store is a reopen.
    async fn open(&self) -> Self::Store;
    /// Remove the state once the test passed (a failed test leaves it behind to look at).
    async fn clean_up(self) {}
}

/// Expands to one `#[tokio::test]` per conformance test. `$backend` is an expression giving
/// `Option<impl Backend>`; `None` means the backend is switched off for this run and the test
/// returns at once.
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::conformance::conformance_suite!(@tests $backend;
            ingest_is_durable_and_deduplicates_client_ids,
            client_ids_deduplicate_only_within_their_window,
            claims_lease_items_once_until_expiry,
            commits_compare_and_set_on_rev_and_keep_the_first_step_result,
            steps_are_numbered_in_completion_order,
            done_item_is_deleted_before_enqueue_so_a_retry_keeps_its_id,
            clearing_items_drops_queue_pauses_and_end_released_guards,
            commit_emits_events_with_their_runs,
            parking_holds_calls_and_unparking_releases_them,
            apps_upsert_reports_config_changes_and_replaces_functions,
            events_and_runs_list_newest_first_with_filters,
            pauses_resolve_once_and_events_for_them_are_matched,
            guards_admit_one_run_per_key_until_released_or_expired,
            deployments_activate_atomically_and_keep_their_function_sets,
            flow_state_slots_throttle_debounce_and_batches
        );
    };
    (@tests $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                use $crate::conformance::Backend as _;
                let Some(backend) = $backend else { return };
                $crate::conformance::$name(&backend).await;
                backend.clean_up().await;
            }
        )*
    };
}
pub(crate) use conformance_suite;

pub fn event(id: &str, now: i64) -> EventRecord {
    named_event(id, "test/e", now)
}

pub fn named_event(id: &str, name: &str, now: i64) -> EventRecord {
    EventRecord {
        id: id.into(),
        event: Event { name: name.into(), data: json!({"n": 1}), id: String::new(), ts: now, user: json!({}), v: None },
        received_at: now,
        source_run_id: None,
    }
}

pub fn run(id: &str, event_id: &str, now: i64) -> RunRecord {
    RunRecord {
        id: id.into(),
        function_id: "app-f".into(),
        app_id: "app".into(),
        event_id: event_id.into(),
        event_ids: vec![event_id.into()],
        status: RunStatus::Queued,
        state: RunState { max_attempts: 5, ..Default::default() },
        output: None,
        error: None,
        parked_reason: None,
        created_at: now,
        started_at: None,
        ended_at: None,
        updated_at: now,
        rev: 0,
    }
}

pub fn item(id: &str, run_id: &str, at: i64) -> QueueItem {
    QueueItem {
        id: id.into(),
        run_id: run_id.into(),
        kind: ItemKind::Call,
        step_id: "step".into(),
        attempt: 0,
        available_at: at,
        lease_owner: None,
        lease_expires_at: None,
        unreachable_count: 0,
        unreachable_since: None,
        parked: false,
        created_at: at,
    }
}

pub fn new_run(run_id: &str, ev: &str, now: i64) -> NewRun {
    NewRun {
        run: run(run_id, ev, now),
        first_item: item(&format!("q-{run_id}"), run_id, now),
        pauses: vec![],
        guards: vec![],
        extra_items: vec![],
    }
}

pub fn ingest_one(ev: &str, run_id: &str, key: Option<&str>, now: i64) -> IngestItem {
    IngestItem {
        record: event(ev, now),
        dedup_key: key.map(str::to_string),
        dedup_until: now + 86_400_000,
        runs: vec![new_run(run_id, ev, now)],
    }
}

fn step(run_id: &str, step_id: &str, value: serde_json::Value, at: i64) -> StepRecord {
    StepRecord { run_id: run_id.into(), step_id: step_id.into(), seq: 0, name: None, value, created_at: at }
}

fn pause(id: &str, run_id: &str, event_name: &str, now: i64) -> PauseRecord {
    PauseRecord {
        id: id.into(),
        run_id: run_id.into(),
        kind: PauseKind::WaitForEvent,
        step_id: Some("wait".into()),
        event_name: event_name.into(),
        expression: Some("event.data.n == async.data.n".into()),
        match_key: None,
        trigger_event: json!({"name": "test/e", "data": {"n": 1}}),
        expires_at: now + 60_000,
        created_at: now,
    }
}

fn ids(items: &[QueueItem]) -> Vec<&str> {
    items.iter().map(|i| i.id.as_str()).collect()
}

pub async fn ingest_is_durable_and_deduplicates_client_ids(b: &impl Backend) {
    let store = b.open().await;
    let out = store.ingest(vec![ingest_one("e1", "r1", Some("k"), 1_000)]).await.unwrap();
    assert_eq!(out[0].run_ids, vec!["r1".to_string()]);
    assert!(!out[0].duplicate);
    let dup = store.ingest(vec![ingest_one("e2", "r2", Some("k"), 2_000)]).await.unwrap();
    assert!(dup[0].duplicate);
    assert_eq!(dup[0].event_id, "e1");
    assert!(dup[0].run_ids.is_empty());
    // Same seeded id again: nothing new.
    let again = store.ingest(vec![ingest_one("e1", "r3", None, 3_000)]).await.unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].event_id, "e1");
    drop(store);

    let reopened = b.open().await;
    let stored = reopened.get_event("e1").await.unwrap().unwrap();
    assert_eq!(stored.event.data, json!({"n": 1}));
    assert_eq!(stored.received_at, 1_000);
    assert!(reopened.get_event("e2").await.unwrap().is_none());
    assert_eq!(reopened.runs_for_event("e1").await.unwrap().len(), 1);
    assert!(reopened.get_run("r3").await.unwrap().is_none());
    assert_eq!(ids(&reopened.items_for_run("r1").await.unwrap()), vec!["q-r1"]);
}

pub async fn client_ids_deduplicate_only_within_their_window(b: &impl Backend) {
    let store = b.open().await;
    let mut first = ingest_one("e1", "r1", Some("k"), 1_000);
    first.dedup_until = 5_000;
    store.ingest(vec![first]).await.unwrap();
    // Within one batch the second use of a key is a duplicate of the first.
    let batch = store
        .ingest(vec![ingest_one("e2", "r2", Some("k2"), 2_000), ingest_one("e3", "r3", Some("k2"), 2_000)])
        .await
        .unwrap();
    assert!(!batch[0].duplicate);
    assert!(batch[1].duplicate);
    assert_eq!(batch[1].event_id, "e2");
    // Once the window is over the key is free again, and now names the new event.
    let later = store.ingest(vec![ingest_one("e4", "r4", Some("k"), 5_000)]).await.unwrap();
    assert!(!later[0].duplicate);
    assert_eq!(later[0].run_ids, vec!["r4".to_string()]);
    let dup = store.ingest(vec![ingest_one("e5", "r5", Some("k"), 6_000)]).await.unwrap();
    assert_eq!(dup[0].event_id, "e4");
}

pub async fn claims_lease_items_once_until_expiry(b: &impl Backend) {
    let store = b.open().await;
    store.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
    assert_eq!(store.next_due_at().await.unwrap(), Some(1_000));
    assert!(store.claim_due(999, "n1", 5_000, 10).await.unwrap().is_empty());
    let got = store.claim_due(1_000, "n1", 5_000, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].lease_owner.as_deref(), Some("n1"));
    assert_eq!(got[0].lease_expires_at, Some(5_000));
    assert!(store.claim_due(2_000, "n2", 9_000, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due_at().await.unwrap(), Some(5_000));
    // The lease runs until its expiry inclusive; after it another owner may take the item.
    assert!(store.claim_due(5_000, "n2", 9_000, 10).await.unwrap().is_empty());
    let again = store.claim_due(5_001, "n2", 9_000, 10).await.unwrap();
    assert_eq!(again[0].lease_owner.as_deref(), Some("n2"));
    assert_eq!(store.release_all_leases().await.unwrap(), 1);
    assert_eq!(store.release_all_leases().await.unwrap(), 0);
    assert_eq!(store.items_for_run("r1").await.unwrap()[0].lease_owner, None);
}

pub async fn commits_compare_and_set_on_rev_and_keep_the_first_step_result(b: &impl Backend) {
    let store = b.open().await;
    store.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
    let mut r = store.get_run("r1").await.unwrap().unwrap();
    r.status = RunStatus::Running;
    r.started_at = Some(2_000);
    r.state.pending = vec!["s2".into()];
    let step = |v: i64| StepRecord {
        run_id: "r1".into(),
        step_id: "s1".into(),
        seq: 0,
        name: Some("first".into()),
        value: json!({ "data": v }),
        created_at: 2_000,
    };
    let commit = Commit {
        run_id: "r1".into(),
        run: Some(r.clone()),
        expected_rev: 0,
        steps: vec![step(1)],
        done_item: Some("q-r1".into()),
        enqueue: vec![item("q2", "r1", 2_000)],
        ..Default::default()
    };
    assert_eq!(store.commit(commit.clone()).await.unwrap(), CommitOutcome::Applied { duplicate_steps: vec![] });
    // Same rev again: the run moved on, so this is a conflict and nothing is written.
    let mut stale = commit;
    stale.enqueue = vec![item("q3", "r1", 2_000)];
    assert_eq!(store.commit(stale).await.unwrap(), CommitOutcome::Conflict);
    let stored = store.get_run("r1").await.unwrap().unwrap();
    assert_eq!(stored.rev, 1);
    assert_eq!(stored.status, RunStatus::Running);
    assert_eq!(stored.started_at, Some(2_000));
    assert_eq!(stored.state, r.state);
    let late = Commit {
        run_id: "r1".into(),
        run: Some(stored.clone()),
        expected_rev: 1,
        steps: vec![step(2)],
        ..Default::default()
    };
    assert_eq!(store.commit(late).await.unwrap(), CommitOutcome::Applied { duplicate_steps: vec!["s1".into()] });
    let steps = store.get_steps("r1").await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].value, json!({"data": 1}));
    assert_eq!(steps[0].name.as_deref(), Some("first"));
    let items = store.items_for_run("r1").await.unwrap();
    assert_eq!(ids(&items), vec!["q2"]);

    // Output and error round-trip as JSON; the run row is replaced whole.
    let mut done = store.get_run("r1").await.unwrap().unwrap();
    assert_eq!(done.rev, 2);
    done.status = RunStatus::Completed;
    done.output = Some(json!({"ok": [1, 2]}));
    done.ended_at = Some(3_000);
    let end = Commit { run_id: "r1".into(), run: Some(done), expected_rev: 2, clear_items: true, ..Default::default() };
    assert_eq!(store.commit(end).await.unwrap(), CommitOutcome::Applied { duplicate_steps: vec![] });
    let ended = store.get_run("r1").await.unwrap().unwrap();
    assert_eq!(ended.status, RunStatus::Completed);
    assert_eq!(ended.output, Some(json!({"ok": [1, 2]})));
    assert_eq!(ended.error, None);
    assert_eq!(ended.ended_at, Some(3_000));
    assert!(store.items_for_run("r1").await.unwrap().is_empty());
}

pub async fn steps_are_numbered_in_completion_order(b: &impl Backend) {
    let store = b.open().await;
    store.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
    let only_steps = |steps: Vec<StepRecord>| Commit { run_id: "r1".into(), steps, ..Default::default() };
    let first = only_steps(vec![step("r1", "b", json!({"data": 1}), 2_000), step("r1", "a", json!(null), 2_000)]);
    assert_eq!(store.commit(first).await.unwrap(), CommitOutcome::Applied { duplicate_steps: vec![] });
    let second = only_steps(vec![step("r1", "c", json!({"error": {"name": "E"}}), 3_000)]);
    store.commit(second).await.unwrap();
    let steps = store.get_steps("r1").await.unwrap();
    let order: Vec<(&str, i64)> = steps.iter().map(|s| (s.step_id.as_str(), s.seq)).collect();
    assert_eq!(order, vec![("b", 1), ("a", 2), ("c", 3)]);
    assert_eq!(steps[1].value, json!(null));
    assert_eq!(steps[2].value, json!({"error": {"name": "E"}}));
    // Another run's numbering is its own.
    store.ingest(vec![ingest_one("e2", "r2", None, 1_000)]).await.unwrap();
    let other = Commit { run_id: "r2".into(), steps: vec![step("r2", "a", json!(1), 4_000)], ..Default::default() };
    store.commit(other).await.unwrap();
    assert_eq!(store.get_steps("r2").await.unwrap()[0].seq, 1);
}

pub async fn done_item_is_deleted_before_enqueue_so_a_retry_keeps_its_id(b: &impl Backend) {
    let store = b.open().await;
    store.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
    let claimed = store.claim_due(1_000, "n1", 9_000, 10).await.unwrap();
    let mut retry = claimed[0].clone();
    retry.attempt = 1;
    retry.available_at = 4_000;
    retry.lease_owner = None;
    retry.lease_expires_at = None;
    let commit = Commit {
        run_id: "r1".into(),
        done_item: Some("q-r1".into()),
        enqueue: vec![retry.clone(), item("q-other", "r1", 3_000)],
        ..Default::default()
    };
    store.commit(commit).await.unwrap();
    let items = store.items_for_run("r1").await.unwrap();
    assert_eq!(ids(&items), vec!["q-other", "q-r1"]);
    assert_eq!(items[1].attempt, 1);
    assert_eq!(items[1].available_at, 4_000);
    assert_eq!(items[1].lease_owner, None);
    // Enqueueing an id already queued leaves the queued item as it is.
    let mut replanned = item("q-other", "r1", 8_000);
    replanned.kind = ItemKind::Wake;
    store.commit(Commit { run_id: "r1".into(), enqueue: vec![replanned], ..Default::default() }).await.unwrap();
    let items = store.items_for_run("r1").await.unwrap();
    assert_eq!(items[0].available_at, 3_000);
    assert_eq!(items[0].kind, ItemKind::Call);
    assert_eq!(store.next_due_at().await.unwrap(), Some(3_000));
}

pub async fn clearing_items_drops_queue_pauses_and_end_released_guards(b: &impl Backend) {
    let store = b.open().await;
    let mut ingest = ingest_one("e1", "r1", None, 1_000);
    ingest.runs[0].guards = vec![
        RunGuard { keys: vec!["singleton".into()], expires_at: 100_000, release_on_end: true },
        RunGuard { keys: vec!["idempotency".into()], expires_at: 100_000, release_on_end: false },
    ];
    ingest.runs[0].pauses = vec![pause("p-cancel", "r1", "test/cancel", 1_000)];
    ingest.runs[0].extra_items = vec![item("q-timeout", "r1", 50_000)];
    store.ingest(vec![ingest]).await.unwrap();
    assert_eq!(ids(&store.items_for_run("r1").await.unwrap()), vec!["q-r1", "q-timeout"]);
    let wait = pause("p-wait", "r1", "test/reply", 2_000);
    store.commit(Commit { run_id: "r1".into(), new_pauses: vec![wait.clone()], ..Default::default() }).await.unwrap();
    assert_eq!(store.pauses_for_run("r1").await.unwrap().len(), 2);
    assert_eq!(store.get_pause("p-wait").await.unwrap(), Some(wait));

    store.commit(Commit { run_id: "r1".into(), clear_items: true, ..Default::default() }).await.unwrap();
    assert!(store.items_for_run("r1").await.unwrap().is_empty());
    assert!(store.pauses_for_run("r1").await.unwrap().is_empty());
    assert_eq!(store.guard_holder("singleton", 2_000).await.unwrap(), None);
    assert_eq!(store.guard_holder("idempotency", 2_000).await.unwrap().as_deref(), Some("r1"));
}

pub async fn commit_emits_events_with_their_runs(b: &impl Backend) {
    let store = b.open().await;
    store.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
    let mut finished = named_event("e-fin", "inngest/function.finished", 2_000);
    finished.source_run_id = Some("r1".into());
    let emit =
        IngestItem { record: finished, dedup_key: None, dedup_until: 0, runs: vec![new_run("r2", "e-fin", 2_000)] };
    let commit =
        Commit { run_id: "r1".into(), done_item: Some("q-r1".into()), emit: vec![emit.clone()], ..Default::default() };
    store.commit(commit).await.unwrap();
    let stored = store.get_event("e-fin").await.unwrap().unwrap();
    assert_eq!(stored.source_run_id.as_deref(), Some("r1"));
    assert_eq!(store.runs_for_event("e-fin").await.unwrap()[0].id, "r2");
    assert_eq!(ids(&store.items_for_run("r2").await.unwrap()), vec!["q-r2"]);
    // Emitting the same seeded event again stores nothing new.
    store.commit(Commit { run_id: "r1".into(), emit: vec![emit], ..Default::default() }).await.unwrap();
    assert_eq!(store.list_events(Some("inngest/function.finished"), 10).await.unwrap().len(), 1);
}

pub async fn parking_holds_calls_and_unparking_releases_them(b: &impl Backend) {
    let store = b.open().await;
    store.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
    let mut sleep = item("q-wake", "r1", 1_500);
    sleep.kind = ItemKind::Wake;
    store.commit(Commit { run_id: "r1".into(), enqueue: vec![sleep], ..Default::default() }).await.unwrap();
    store.claim_due(1_000, "n", 1_200, 1).await.unwrap();
    assert_eq!(store.park_app("app", "unreachable", 2_000).await.unwrap(), 1);
    let r = store.get_run("r1").await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::PausedUnreachable);
    assert_eq!(r.parked_reason.as_deref(), Some("unreachable"));
    assert_eq!(r.rev, 1);
    // Calls are held and their lease dropped; timers keep running.
    let items = store.items_for_run("r1").await.unwrap();
    assert!(items[0].parked && items[0].lease_owner.is_none());
    assert!(!items[1].parked);
    assert_eq!(ids(&store.claim_due(10_000, "n", 20_000, 10).await.unwrap()), vec!["q-wake"]);
    assert_eq!(store.next_due_at().await.unwrap(), Some(20_000));
    assert_eq!(store.park_app("other-app", "unreachable", 2_000).await.unwrap(), 0);
    assert_eq!(store.unpark_app("app", 3_000).await.unwrap(), 1);
    let r = store.get_run("r1").await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Running);
    assert_eq!(r.parked_reason, None);
    assert_eq!(store.claim_due(3_000, "n", 20_000, 10).await.unwrap().len(), 1);
    assert_eq!(store.unpark_app("app", 4_000).await.unwrap(), 0);
}

pub async fn apps_upsert_reports_config_changes_and_replaces_functions(b: &impl Backend) {
    let store = b.open().await;
    let app = |hash: &str| AppRecord {
        id: "app".into(),
        url: "http://localhost:3000/api/inngest".into(),
        normalized_url: "http://localhost:3000/api/inngest".into(),
        framework: Some("express".into()),
        sdk: Some("js:v3".into()),
        deploy_id: None,
        app_version: None,
        config_hash: hash.into(),
        status: AppStatus::Synced,
        last_error: None,
        synced_at: Some(1_000),
        updated_at: 1_000,
    };
    let function = |id: &str, name: &str| {
        let config = serde_json::from_value(json!({
            "id": id, "name": name, "triggers": [{"event": "test/e"}],
            "steps": {"step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": "http://localhost:3000/api/inngest?fnId=app-f&stepId=step"}}}
        }))
        .unwrap();
        FunctionRecord { id: id.into(), app_id: "app".into(), name: name.into(), config, updated_at: 1_000 }
    };
    assert!(store.upsert_app(app("h1"), vec![function("app-f", "F"), function("app-g", "G")]).await.unwrap());
    assert!(!store.upsert_app(app("h1"), vec![function("app-f", "F")]).await.unwrap());
    let functions = store.list_functions().await.unwrap();
    assert_eq!(functions.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), vec!["app-f"]);
    assert!(store.upsert_app(app("h2"), vec![function("app-f", "F2")]).await.unwrap());
    let stored = store.list_functions().await.unwrap();
    assert_eq!(stored[0].name, "F2");
    assert_eq!(stored[0].config, function("app-f", "F2").config);

    store.set_app_status("app", AppStatus::Unreachable, Some("connection refused".into()), 5_000).await.unwrap();
    let apps = store.list_apps().await.unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].status, AppStatus::Unreachable);
    assert_eq!(apps[0].last_error.as_deref(), Some("connection refused"));
    assert_eq!(apps[0].updated_at, 5_000);
    assert_eq!(apps[0].config_hash, "h2");
    assert_eq!(apps[0].framework.as_deref(), Some("express"));
}

pub async fn events_and_runs_list_newest_first_with_filters(b: &impl Backend) {
    let store = b.open().await;
    let mut batch = Vec::new();
    for (i, name) in ["a/x", "a/y", "a/x"].iter().enumerate() {
        let id = format!("01J{i}");
        let mut one = ingest_one(&id, &format!("run{i}"), None, 1_000 + i as i64);
        one.record = named_event(&id, name, 1_000 + i as i64);
        batch.push(one);
    }
    store.ingest(batch).await.unwrap();
    let ids_of = |events: Vec<EventRecord>| events.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids_of(store.list_events(None, 10).await.unwrap()), vec!["01J2", "01J1", "01J0"]);
    assert_eq!(ids_of(store.list_events(Some("a/x"), 10).await.unwrap()), vec!["01J2", "01J0"]);
    assert_eq!(ids_of(store.list_events(None, 1).await.unwrap()), vec!["01J2"]);
    let asked = vec!["01J1".to_string(), "missing".to_string(), "01J0".to_string()];
    assert_eq!(ids_of(store.get_events(&asked).await.unwrap()), vec!["01J1", "01J0"]);
    assert!(store.get_events(&[]).await.unwrap().is_empty());

    let mut running = store.get_run("run1").await.unwrap().unwrap();
    running.status = RunStatus::Running;
    store.commit(Commit { run_id: "run1".into(), run: Some(running), ..Default::default() }).await.unwrap();
    let run_ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(run_ids(store.list_runs(RunFilter::default()).await.unwrap()), vec!["run2", "run1", "run0"]);
    let queued = RunFilter { status: Some(RunStatus::Queued), ..Default::default() };
    assert_eq!(run_ids(store.list_runs(queued).await.unwrap()), vec!["run2", "run0"]);
    let limited =
        RunFilter { function_id: Some("app-f".into()), app_id: Some("app".into()), limit: 2, ..Default::default() };
    assert_eq!(run_ids(store.list_runs(limited).await.unwrap()), vec!["run2", "run1"]);
    let other = RunFilter { app_id: Some("nope".into()), ..Default::default() };
    assert!(store.list_runs(other).await.unwrap().is_empty());
}

pub async fn pauses_resolve_once_and_events_for_them_are_matched(b: &impl Backend) {
    let store = b.open().await;
    store.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
    let wait = pause("p1", "r1", "test/reply", 1_000);
    store.commit(Commit { run_id: "r1".into(), new_pauses: vec![wait.clone()], ..Default::default() }).await.unwrap();
    assert_eq!(store.pauses_for_event("test/reply").await.unwrap(), vec![wait]);
    assert!(store.pauses_for_event("test/other").await.unwrap().is_empty());

    // An event someone waits for gets an item that matches it against the pauses.
    let reply = IngestItem {
        record: named_event("e-reply", "test/reply", 2_000),
        dedup_key: None,
        dedup_until: 0,
        runs: vec![],
    };
    store.ingest(vec![reply]).await.unwrap();
    let matcher = crate::sqlite::match_pauses_item("e-reply", 2_000);
    let due = store.claim_due(2_000, "n", 9_000, 10).await.unwrap();
    assert!(due.iter().any(|i| i.id == matcher.id && i.kind == ItemKind::MatchPauses && i.run_id == "e-reply"));
    // Nobody waits for this one.
    let unrelated =
        IngestItem { record: named_event("e-x", "test/x", 2_000), dedup_key: None, dedup_until: 0, runs: vec![] };
    store.ingest(vec![unrelated]).await.unwrap();
    assert!(store.items_for_run("e-x").await.unwrap().is_empty());

    let resolve = |rev: i64| Commit {
        run_id: "r1".into(),
        run: None,
        expected_rev: rev,
        steps: vec![step("r1", "wait", json!({"name": "test/reply"}), 3_000)],
        consume_pause: Some("p1".into()),
        ..Default::default()
    };
    assert_eq!(store.commit(resolve(0)).await.unwrap(), CommitOutcome::Applied { duplicate_steps: vec![] });
    // The pause is gone, so a second resolution (its timeout firing late) conflicts and writes nothing.
    assert_eq!(store.commit(resolve(0)).await.unwrap(), CommitOutcome::Conflict);
    assert_eq!(store.get_steps("r1").await.unwrap().len(), 1);
    assert_eq!(store.get_pause("p1").await.unwrap(), None);
}

pub async fn guards_admit_one_run_per_key_until_released_or_expired(b: &impl Backend) {
    let store = b.open().await;
    let guarded = |ev: &str, run_id: &str, keys: &[&str], until: i64, now: i64| {
        let mut one = ingest_one(ev, run_id, None, now);
        one.runs[0].guards = vec![RunGuard {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            expires_at: until,
            release_on_end: false,
        }];
        one
    };
    let out = store.ingest(vec![guarded("e1", "r1", &["idem"], 10_000, 1_000)]).await.unwrap();
    assert_eq!(out[0].run_ids, vec!["r1".to_string()]);
    assert!(out[0].skipped_runs.is_empty());
    let out = store.ingest(vec![guarded("e2", "r2", &["idem"], 10_000, 2_000)]).await.unwrap();
    assert!(!out[0].duplicate);
    assert_eq!(out[0].skipped_runs, vec!["r2".to_string()]);
    assert!(out[0].run_ids.is_empty());
    assert!(store.get_run("r2").await.unwrap().is_none());
    assert!(store.get_event("e2").await.unwrap().is_some());
    assert_eq!(store.guard_holder("idem", 2_000).await.unwrap().as_deref(), Some("r1"));
    assert_eq!(store.guard_holder("idem", 10_000).await.unwrap(), None);
    // Expired: free again.
    let out = store.ingest(vec![guarded("e3", "r3", &["idem"], 20_000, 10_000)]).await.unwrap();
    assert_eq!(out[0].run_ids, vec!["r3".to_string()]);
    assert_eq!(store.guard_holder("idem", 10_000).await.unwrap().as_deref(), Some("r3"));

    // Rate limit slots: the first free key of the guard is taken.
    let slots = ["slot0", "slot1"];
    for (i, run_id) in ["s0", "s1"].iter().enumerate() {
        let out = store.ingest(vec![guarded(&format!("es{i}"), run_id, &slots, 30_000, 1_000)]).await.unwrap();
        assert_eq!(out[0].run_ids, vec![run_id.to_string()]);
    }
    assert_eq!(store.guard_holder("slot1", 1_000).await.unwrap().as_deref(), Some("s1"));
    let out = store.ingest(vec![guarded("es2", "s2", &slots, 30_000, 1_000)]).await.unwrap();
    assert_eq!(out[0].skipped_runs, vec!["s2".to_string()]);

    // All guards or none: a run whose second guard is held takes no key of its first.
    let mut both = guarded("eb", "rb", &["free"], 30_000, 1_000);
    both.runs[0].guards.push(RunGuard { keys: vec!["slot0".into()], expires_at: 30_000, release_on_end: false });
    let out = store.ingest(vec![both]).await.unwrap();
    assert_eq!(out[0].skipped_runs, vec!["rb".to_string()]);
    assert_eq!(store.guard_holder("free", 1_000).await.unwrap(), None);
}

pub async fn deployments_activate_atomically_and_keep_their_function_sets(b: &impl Backend) {
    use crate::deployments::DeploymentRecord;
    use sluice_protocol::deployment::DeploymentStatus;
    let store = b.open().await;
    let dep = |id: &str, identity: &str, at: i64| DeploymentRecord {
        id: id.into(),
        app_id: "app".into(),
        url: format!("http://localhost/{identity}"),
        identity: identity.into(),
        deploy_id: None,
        app_version: Some(identity.into()),
        config_hash: format!("hash-{identity}"),
        functions: vec![],
        status: DeploymentStatus::Registered,
        created_at: at,
        updated_at: at,
        activated_at: None,
    };
    store.put_deployment(dep("d1", "v1", 1)).await.unwrap();
    store.put_deployment(dep("d2", "v2", 2)).await.unwrap();
    assert_eq!(store.activate_deployment("app", "d1", DeploymentStatus::Draining, 10).await.unwrap(), None);
    let prev = store.activate_deployment("app", "d2", DeploymentStatus::Draining, 20).await.unwrap();
    assert_eq!(prev.as_deref(), Some("d1"));
    let d1 = store.get_deployment("d1").await.unwrap().unwrap();
    let d2 = store.get_deployment("d2").await.unwrap().unwrap();
    assert_eq!(d1.status, DeploymentStatus::Draining);
    assert_eq!(d2.status, DeploymentStatus::Current);
    assert_eq!(d2.activated_at, Some(20));
    // Rollback: the prior one is current again, the new one rolled back.
    let prev = store.activate_deployment("app", "d1", DeploymentStatus::RolledBack, 30).await.unwrap();
    assert_eq!(prev.as_deref(), Some("d2"));
    assert_eq!(store.get_deployment("d2").await.unwrap().unwrap().status, DeploymentStatus::RolledBack);
    assert_eq!(store.find_deployment("app", "v2").await.unwrap().unwrap().id, "d2");
    let all = store.list_deployments(Some("app")).await.unwrap();
    assert_eq!(all.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), vec!["d1", "d2"]);
    store.set_deployment_status("d2", DeploymentStatus::Retired, 40).await.unwrap();
    assert_eq!(store.get_deployment("d2").await.unwrap().unwrap().status, DeploymentStatus::Retired);
}

pub async fn flow_state_slots_throttle_debounce_and_batches(b: &impl Backend) {
    use crate::flow::SlotLimit;
    let store = b.open().await;
    // Slots count only holders with a live lease.
    store.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
    let leased = store.claim_due(1_000, "n1", 60_000, 10).await.unwrap();
    let holder = leased[0].id.clone();
    let limit = [SlotLimit { key: "k".into(), limit: 1 }];
    assert!(store.try_acquire_slots(&limit, &holder, 60_000, 1_000).await.unwrap());
    assert!(!store.try_acquire_slots(&limit, "other", 60_000, 1_000).await.unwrap(), "the only slot is taken");
    store.release_slots(&holder).await.unwrap();
    // "other" holds no lease, so its slot lapses at once; the holder can take it again.
    assert!(store.try_acquire_slots(&limit, &holder, 60_000, 1_001).await.unwrap());

    // GCRA: one start per 1000 ms, FIFO.
    assert_eq!(store.throttle_reserve("t", 1_000, 0, 5_000).await.unwrap(), 5_000);
    assert_eq!(store.throttle_reserve("t", 1_000, 0, 5_000).await.unwrap(), 6_000);
    assert_eq!(store.throttle_reserve("t", 1_000, 0, 5_100).await.unwrap(), 7_000);

    // Debounce: each push moves the fire time, capped by the timeout from the first push.
    assert_eq!(store.debounce_push("d", "f", "ev1", 1_000, Some(2_500), 10_000).await.unwrap(), 11_000);
    assert_eq!(store.debounce_push("d", "f", "ev2", 1_000, Some(2_500), 12_000).await.unwrap(), 12_500);
    assert!(store.debounce_due(12_499, 10).await.unwrap().is_empty());
    let due = store.debounce_due(12_500, 10).await.unwrap();
    assert_eq!(due[0].event_id, "ev2");
    let mut run = ingest_one("ev2", "rd", None, 12_500).runs.remove(0);
    run.run.event_id = "ev2".into();
    assert!(store.debounce_fire(&due[0], run.clone()).await.unwrap());
    assert!(!store.debounce_fire(&due[0], run).await.unwrap(), "fires once");
    assert!(store.get_run("rd").await.unwrap().is_some());

    // Batches: a fifth event beyond max size starts the next batch.
    for (i, ev) in ["b1", "b2", "b3", "b4"].iter().enumerate() {
        store.batch_push("bk", "f", ev, 3, 5_000, 20_000 + i as i64).await.unwrap();
    }
    let due = store.batch_due(20_010, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let run = ingest_one("b1", "rb", None, 20_010).runs.remove(0);
    assert!(store.batch_fire("bk", &due[0].id, run).await.unwrap());
    let fired = store.get_run("rb").await.unwrap().unwrap();
    assert_eq!(fired.event_ids, vec!["b1", "b2", "b3"]);
    let rest = store.batch_due(30_000, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].event_ids, vec!["b4"]);
}
