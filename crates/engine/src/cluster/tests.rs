//! The cluster loops and the stale-lease race, on SQLite and (unless `SLUICE_SKIP_PG=1`) on a fresh
//! schema of the PostgreSQL test database (`SLUICE_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_protocol::event::Event;
use sluice_protocol::opcode::parse_ops;
use sluice_protocol::run::RunStatus;
use sluice_store::{
    EventRecord, IngestItem, ItemKind, NewRun, PgOptions, PostgresStore, QueueItem, RunRecord, RunState, SqliteStore,
    Store,
};

use super::*;
use crate::transition::{self, Answer};
use crate::{EngineConfig, SystemClock};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// One store per backend, and what removes it afterwards.
struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl Backend {
    async fn clean_up(self) {
        let Some(schema) = self.schema else { return };
        let url = std::env::var("SLUICE_TEST_PG_URL").unwrap_or_else(|_| PG_URL.into());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await.unwrap();
    }
}

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    let mut out = vec![Backend { name: "sqlite", store: Arc::new(sqlite), _dir: Some(dir), schema: None }];
    if std::env::var("SLUICE_SKIP_PG").as_deref() == Ok("1") {
        eprintln!("SLUICE_SKIP_PG=1: the PostgreSQL half of this test is skipped");
        return out;
    }
    let url = std::env::var("SLUICE_TEST_PG_URL").unwrap_or_else(|_| PG_URL.into());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let schema = format!("sluice_engine_test_{}_{nanos}", std::process::id());
    let options = PgOptions { pool_size: 4, schema: Some(schema.clone()), ..Default::default() };
    let pg = PostgresStore::connect(&url, options)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL test database: {e} (SLUICE_SKIP_PG=1 skips)"));
    out.push(Backend { name: "postgres", store: Arc::new(pg), _dir: None, schema: Some(schema) });
    out
}

async fn engine(store: &Arc<dyn Store>, node: &str, tweak: impl FnOnce(&mut EngineConfig)) -> Arc<Engine> {
    let mut config = EngineConfig { node_id: node.into(), ..Default::default() };
    tweak(&mut config);
    Engine::new(store.clone(), config, Arc::new(SystemClock)).await.unwrap()
}

fn queued_run(run_id: &str, item_id: &str, now: i64) -> IngestItem {
    let event_id = format!("ev-{run_id}");
    let item = QueueItem {
        id: item_id.into(),
        run_id: run_id.into(),
        kind: ItemKind::Call,
        step_id: "a".into(),
        attempt: 0,
        available_at: now,
        lease_owner: None,
        lease_expires_at: None,
        unreachable_count: 0,
        unreachable_since: None,
        parked: false,
        created_at: now,
    };
    IngestItem {
        record: EventRecord {
            id: event_id.clone(),
            event: Event {
                name: "test/steps".into(),
                data: json!({}),
                id: String::new(),
                ts: now,
                user: json!({}),
                v: None,
            },
            received_at: now,
            source_run_id: None,
        },
        dedup_key: None,
        dedup_until: 0,
        runs: vec![NewRun {
            run: RunRecord {
                id: run_id.into(),
                function_id: "app-steps".into(),
                app_id: "app".into(),
                event_id: event_id.clone(),
                event_ids: vec![event_id],
                status: RunStatus::Running,
                state: RunState { max_attempts: 4, pending: vec!["a".into()], ..Default::default() },
                output: None,
                error: None,
                parked_reason: None,
                created_at: now,
                started_at: Some(now),
                ended_at: None,
                updated_at: now,
                rev: 0,
            },
            first_item: item,
            pauses: vec![],
            guards: vec![],
            extra_items: vec![],
        }],
    }
}

/// The SDK's answer after running step `a` and returning `data`.
fn step_ran(data: &str) -> Answer {
    let body = json!([{"op": "StepRun", "id": "a", "name": "a", "displayName": "a", "data": data}]).to_string();
    Answer::Ops { ops: parse_ops(body.as_bytes()).unwrap(), no_retry: false, retry_at: None }
}

async fn commit_answer(engine: &Arc<Engine>, item: &QueueItem, answer: Answer) {
    let applied = crate::worker::apply(engine, &item.run_id, Some(&item.id), None, |run, ctx| {
        Some(transition::on_answer(run, item, answer.clone(), ctx))
    })
    .await
    .unwrap();
    assert!(applied);
}

/// Node A leased step `a`, went silent and was swept; node B re-ran the step. Both answers arrive:
/// the first stored wins, the late one is discarded (kept in `step_duplicates`, reported by the
/// commit) and does not move the run on a second time.
#[tokio::test]
async fn a_stale_lease_race_stores_the_first_result_and_discards_the_loser() {
    for b in backends().await {
        let (node_a, node_b) = (engine(&b.store, "node-a", |_| {}).await, engine(&b.store, "node-b", |_| {}).await);
        let now = node_a.now();
        b.store.ingest(vec![queued_run("r1", "r1:c:a", now)]).await.unwrap();

        b.store.heartbeat("node-a", now - 60_000, now - 60_000).await.unwrap();
        let leased_a = b.store.claim_due(now, "node-a", now + 3_600_000, 10).await.unwrap();
        assert_eq!(leased_a.len(), 1, "{}", b.name);
        join(&node_b).await.unwrap();
        let swept = b.store.sweep_dead_nodes(now - 15_000).await.unwrap();
        assert_eq!((swept.dead_nodes, swept.released), (vec!["node-a".to_string()], 1), "{}", b.name);
        let leased_b = b.store.claim_due(now, "node-b", now + 3_600_000, 10).await.unwrap();
        assert_eq!(leased_b.iter().map(|i| &i.id).collect::<Vec<_>>(), vec!["r1:c:a"], "{}", b.name);

        commit_answer(&node_b, &leased_b[0], step_ran("from-b")).await;
        commit_answer(&node_a, &leased_a[0], step_ran("from-a")).await;

        let steps = b.store.get_steps("r1").await.unwrap();
        assert_eq!(steps.len(), 1, "{}: {steps:?}", b.name);
        assert_eq!(steps[0].value, json!({"data": "from-b"}), "{}", b.name);
        let dups = b.store.step_duplicates("r1").await.unwrap();
        assert_eq!(dups.len(), 1, "{}: {dups:?}", b.name);
        assert_eq!((dups[0].step_id.as_str(), &dups[0].value), ("a", &json!({"data": "from-a"})), "{}", b.name);
        // One rediscovery (node B's), not a second one for the discarded result.
        let items = b.store.items_for_run("r1").await.unwrap();
        assert_eq!(items.len(), 1, "{}: {items:?}", b.name);
        assert_eq!((items[0].kind, items[0].step_id.as_str()), (ItemKind::Call, "step"), "{}", b.name);
        assert!(b.store.get_run("r1").await.unwrap().unwrap().state.pending.is_empty());
        drop((node_a, node_b));
        b.clean_up().await;
    }
}

async fn lease_owner(store: &Arc<dyn Store>, run_id: &str) -> Option<String> {
    store.items_for_run(run_id).await.unwrap().first().and_then(|i| i.lease_owner.clone())
}

async fn wait_until(what: &str, deadline: Duration, mut f: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The loop heartbeats, and releases a silent node's leases, but only after this node has itself
/// been healthy for a whole node timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_node_releases_the_leases_of_a_silent_one_after_the_node_timeout() {
    for b in backends().await {
        let node = engine(&b.store, "node-live", |c| {
            c.heartbeat_interval = Duration::from_millis(50);
            c.node_timeout = Duration::from_millis(800);
        })
        .await;
        let now = node.now();
        b.store.ingest(vec![queued_run("r1", "r1:c:a", now)]).await.unwrap();
        b.store.heartbeat("node-gone", now - 600_000, now - 600_000).await.unwrap();
        b.store.claim_due(now, "node-gone", now + 3_600_000, 10).await.unwrap();

        let started = std::time::Instant::now();
        let task = tokio::spawn(run(node.clone()));
        let store = b.store.clone();
        wait_until("the live node's first heartbeat", Duration::from_secs(5), async || {
            store.list_nodes().await.unwrap().iter().any(|n| n.id == "node-live")
        })
        .await;
        assert_eq!(lease_owner(&b.store, "r1").await.as_deref(), Some("node-gone"), "{}: swept too early", b.name);
        wait_until("the silent node's lease to be released", Duration::from_secs(10), async || {
            lease_owner(&store, "r1").await.is_none()
        })
        .await;
        assert!(started.elapsed() >= Duration::from_millis(800), "{}: swept before a whole node timeout", b.name);
        let nodes: Vec<String> = b.store.list_nodes().await.unwrap().into_iter().map(|n| n.id).collect();
        assert_eq!(nodes, vec!["node-live".to_string()], "{}", b.name);
        task.abort();
        assert_eq!(leave(&node).await.unwrap(), 0);
        assert!(b.store.list_nodes().await.unwrap().is_empty());
        drop(node);
        b.clean_up().await;
    }
}

/// A lease this node holds on an item no task of its is working on (the item failed on a store
/// error, or the claim's answer was lost) is released; in-flight and just-claimed ones are kept.
#[tokio::test]
async fn orphaned_leases_of_this_node_are_released_and_in_flight_ones_kept() {
    for b in backends().await {
        let node = engine(&b.store, "node-self", |_| {}).await;
        let now = node.now();
        let lease = now + node.config.call_timeout.as_millis() as i64 + 60_000;
        let runs = ["r-busy", "r-orphan", "r-fresh"];
        for r in runs {
            b.store.ingest(vec![queued_run(r, &format!("{r}:c:a"), now)]).await.unwrap();
        }
        // Two claimed 30 s ago, one just now.
        b.store.claim_due(now, "node-self", lease - 30_000, 2).await.unwrap();
        b.store.claim_due(now, "node-self", lease, 1).await.unwrap();
        let mut by_run = std::collections::HashMap::new();
        for r in runs {
            by_run.insert(r, b.store.items_for_run(r).await.unwrap().remove(0));
        }
        let old: Vec<&str> =
            runs.iter().copied().filter(|r| by_run[r].lease_expires_at == Some(lease - 30_000)).collect();
        assert_eq!(old.len(), 2);
        let busy = InFlight::enter(&node, &by_run[old[0]].id);
        release_orphans(&node, now).await;
        for r in runs {
            let owner = lease_owner(&b.store, r).await;
            let expect_released = r == old[1];
            assert_eq!(owner.is_none(), expect_released, "{}: {r} {owner:?}", b.name);
        }
        drop(busy);
        assert!(in_flight("node-self").is_empty());
        drop(node);
        b.clean_up().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_nodes_work_wakes_this_one_over_the_store_signals() {
    for b in backends().await {
        if b.schema.is_none() {
            // SQLite has no other nodes to hear from.
            assert!(b.store.work_signals().is_none());
            continue;
        }
        let node = engine(&b.store, "node-listening", |c| c.heartbeat_interval = Duration::from_secs(3600)).await;
        let task = tokio::spawn(run(node.clone()));
        // The listener's first signal ("connected") wakes the worker once; consume it.
        tokio::time::timeout(Duration::from_secs(10), node.work.notified()).await.expect("connected signal");
        let now = node.now();
        let waiter = node.clone();
        let woken = tokio::spawn(async move { waiter.work.notified().await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.store.ingest(vec![queued_run("r1", "r1:c:a", now)]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), woken).await.expect("woken by the NOTIFY").unwrap();
        task.abort();
        drop(node);
        b.clean_up().await;
    }
}

/// An app synced through another node reaches this node's registry: by the heartbeat loop, and at
/// once when a run needs a function this node has not seen yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_synced_on_another_node_are_loaded_from_the_store() {
    for b in backends().await {
        let node = engine(&b.store, "node-stale", |c| c.heartbeat_interval = Duration::from_millis(50)).await;
        let now = node.now();
        let app = |at: i64| sluice_store::AppRecord {
            id: "app".into(),
            url: "http://127.0.0.1:1/api/inngest".into(),
            normalized_url: "http://127.0.0.1:1/api/inngest".into(),
            framework: None,
            sdk: None,
            deploy_id: None,
            app_version: None,
            config_hash: format!("h{at}"),
            status: sluice_store::AppStatus::Synced,
            last_error: None,
            synced_at: Some(at),
            updated_at: at,
        };
        let function = |id: &str, at: i64| {
            let config = serde_json::from_value(json!({"id": id, "triggers": [{"event": "test/steps"}]})).unwrap();
            sluice_store::FunctionRecord {
                id: id.into(),
                app_id: "app".into(),
                name: id.into(),
                config,
                updated_at: at,
            }
        };
        // Another node syncs while this one is not looking: only the store knows.
        b.store.upsert_app(app(now), vec![function("app-steps", now)]).await.unwrap();
        assert!(node.registry.function("app-steps").is_none());
        let mut stale_run = queued_run("r1", "r1:c:a", now).runs.remove(0).run;
        know_function_of(&node, &stale_run).await;
        assert!(node.registry.function("app-steps").is_some(), "{}: loaded for the run", b.name);
        assert!(!refresh_registry(&node).await.unwrap(), "{}: nothing changed since", b.name);

        let task = tokio::spawn(run(node.clone()));
        b.store
            .upsert_app(app(now + 1), vec![function("app-steps", now + 1), function("app-more", now + 1)])
            .await
            .unwrap();
        let registry = node.clone();
        wait_until("the heartbeat loop to load the new function", Duration::from_secs(10), async || {
            registry.registry.function("app-more").is_some()
        })
        .await;
        stale_run.function_id = "app-unknown".into();
        know_function_of(&node, &stale_run).await;
        assert!(node.registry.function("app-unknown").is_none());
        task.abort();
        drop(node);
        b.clean_up().await;
    }
}
