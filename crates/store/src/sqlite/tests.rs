use super::*;
use serde_json::json;
use sluice_protocol::event::Event;

fn event(id: &str, now: i64) -> EventRecord {
    EventRecord {
        id: id.into(),
        event: Event {
            name: "test/e".into(),
            data: json!({"n": 1}),
            id: String::new(),
            ts: now,
            user: json!({}),
            v: None,
        },
        received_at: now,
        source_run_id: None,
    }
}

fn run(id: &str, event_id: &str, now: i64) -> RunRecord {
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

fn item(id: &str, run_id: &str, at: i64) -> QueueItem {
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

fn ingest_one(ev: &str, run_id: &str, key: Option<&str>, now: i64) -> IngestItem {
    IngestItem {
        record: event(ev, now),
        dedup_key: key.map(str::to_string),
        dedup_until: now + 86_400_000,
        runs: vec![NewRun { run: run(run_id, ev, now), first_item: item(&format!("q-{run_id}"), run_id, now) }],
    }
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn ingest_is_durable_and_deduplicates_client_ids() {
    let (dir, store) = open();
    let out = store.ingest(vec![ingest_one("e1", "r1", Some("k"), 1_000)]).await.unwrap();
    assert_eq!(out[0].run_ids, vec!["r1".to_string()]);
    let dup = store.ingest(vec![ingest_one("e2", "r2", Some("k"), 2_000)]).await.unwrap();
    assert!(dup[0].duplicate);
    assert_eq!(dup[0].event_id, "e1");
    // Same seeded id again: nothing new.
    let again = store.ingest(vec![ingest_one("e1", "r3", None, 3_000)]).await.unwrap();
    assert!(again[0].duplicate);
    drop(store);

    let reopened = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    assert!(reopened.get_event("e1").await.unwrap().is_some());
    assert!(reopened.get_event("e2").await.unwrap().is_none());
    assert_eq!(reopened.runs_for_event("e1").await.unwrap().len(), 1);
    assert!(reopened.get_run("r3").await.unwrap().is_none());
}

#[tokio::test]
async fn claims_lease_items_once_until_expiry() {
    let (_dir, store) = open();
    store.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
    assert!(store.claim_due(999, "n1", 5_000, 10).await.unwrap().is_empty());
    let got = store.claim_due(1_000, "n1", 5_000, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(store.claim_due(2_000, "n2", 9_000, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due_at().await.unwrap(), Some(5_000));
    // After the lease runs out another owner may take it.
    let again = store.claim_due(5_001, "n2", 9_000, 10).await.unwrap();
    assert_eq!(again[0].lease_owner.as_deref(), Some("n2"));
    assert_eq!(store.release_all_leases().await.unwrap(), 1);
}

#[tokio::test]
async fn commits_compare_and_set_on_rev_and_keep_the_first_step_result() {
    let (_dir, store) = open();
    store.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
    let mut r = store.get_run("r1").await.unwrap().unwrap();
    r.status = RunStatus::Running;
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
    assert_eq!(store.commit(commit).await.unwrap(), CommitOutcome::Conflict);
    let stored = store.get_run("r1").await.unwrap().unwrap();
    assert_eq!(stored.rev, 1);
    assert_eq!(stored.status, RunStatus::Running);
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
    let items = store.items_for_run("r1").await.unwrap();
    assert_eq!(items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec!["q2"]);
}

#[tokio::test]
async fn parking_holds_calls_and_unparking_releases_them() {
    let (_dir, store) = open();
    store.ingest(vec![ingest_one("e1", "r1", None, 1_000)]).await.unwrap();
    assert_eq!(store.park_app("app", "unreachable", 2_000).await.unwrap(), 1);
    let r = store.get_run("r1").await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::PausedUnreachable);
    assert!(store.claim_due(10_000, "n", 20_000, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due_at().await.unwrap(), None);
    assert_eq!(store.unpark_app("app", 3_000).await.unwrap(), 1);
    assert_eq!(store.get_run("r1").await.unwrap().unwrap().status, RunStatus::Running);
    assert_eq!(store.claim_due(3_000, "n", 20_000, 10).await.unwrap().len(), 1);
}
