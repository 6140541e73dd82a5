//! The conformance suite (crate::conformance) on PostgreSQL, one fresh schema per test, plus what
//! only a shared database has: concurrent claims, concurrent migrations, concurrent ingests.
//!
//! The database is `SLUICE_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! When it cannot be reached these tests fail; `SLUICE_SKIP_PG=1` skips them instead.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::NoTls;

use super::*;
use crate::conformance::{conformance_suite, ingest_one, Backend};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn test_url() -> String {
    std::env::var("SLUICE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

fn skipped() -> bool {
    let skip = std::env::var("SLUICE_SKIP_PG").as_deref() == Ok("1");
    if skip {
        eprintln!("SLUICE_SKIP_PG=1: PostgreSQL store test skipped");
    }
    skip
}

/// Unique across the tests of this process and across processes sharing the database.
fn fresh_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("sluice_test_{}_{}_{}", std::process::id(), nanos, NEXT.fetch_add(1, Ordering::Relaxed))
}

pub(super) struct PgSchema {
    pub(super) url: String,
    pub(super) schema: String,
}

impl PgSchema {
    fn new() -> PgSchema {
        PgSchema { url: test_url(), schema: fresh_schema() }
    }

    pub(super) fn options(&self) -> PgOptions {
        PgOptions {
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            schema: Some(self.schema.clone()),
            ..Default::default()
        }
    }

    /// A plain connection outside any store, for looking behind the store's back.
    pub(super) async fn raw(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("{}", unreachable_hint(&self.url, &describe(&e))));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    fn table(&self, name: &str) -> String {
        format!("\"{}\".{name}", self.schema)
    }
}

fn unreachable_hint(url: &str, reason: &str) -> String {
    format!(
        "PostgreSQL for the store tests is unreachable at {}: {reason}. Start it, point SLUICE_TEST_PG_URL at \
         one, or set SLUICE_SKIP_PG=1 to skip these tests",
        redact_url(url)
    )
}

#[async_trait]
impl Backend for PgSchema {
    type Store = PostgresStore;

    async fn open(&self) -> PostgresStore {
        PostgresStore::connect(&self.url, self.options()).await.unwrap_or_else(|e| match e {
            StoreError::Open { reason, .. } => panic!("{}", unreachable_hint(&self.url, &reason)),
            other => panic!("{other}"),
        })
    }

    async fn clean_up(self) {
        let raw = self.raw().await;
        raw.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema)).await.unwrap();
    }
}

pub(super) fn backend() -> Option<PgSchema> {
    (!skipped()).then(PgSchema::new)
}

conformance_suite!(backend());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_from_two_nodes_never_hand_out_an_item_twice() {
    let Some(pg) = backend() else { return };
    let (node_a, node_b) = (pg.open().await, pg.open().await);
    const ITEMS: usize = 60;
    let batch = (0..ITEMS).map(|i| ingest_one(&format!("e{i:03}"), &format!("r{i:03}"), None, 1_000)).collect();
    node_a.ingest(batch).await.unwrap();

    let drain = |store: PostgresStore, owner: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let claimed = store.claim_due(1_000, owner, 100_000, 3).await.unwrap();
                if claimed.is_empty() {
                    return got;
                }
                assert!(claimed.iter().all(|i| i.lease_owner.as_deref() == Some(owner)));
                got.extend(claimed.into_iter().map(|i| i.id));
            }
        })
    };
    let (a, b) = tokio::join!(drain(node_a.clone(), "node-a"), drain(node_b.clone(), "node-b"));
    let (a, b) = (a.unwrap(), b.unwrap());
    let all: Vec<&String> = a.iter().chain(&b).collect();
    let distinct: HashSet<&String> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "an item was leased twice: a={a:?} b={b:?}");
    assert_eq!(all.len(), ITEMS);
    drop((node_a, node_b));
    pg.clean_up().await;
}

#[tokio::test]
async fn claim_due_skips_rows_locked_by_another_claim_instead_of_waiting() {
    let Some(pg) = backend() else { return };
    let store = pg.open().await;
    let batch = (0..3).map(|i| ingest_one(&format!("e{i}"), &format!("r{i}"), None, 1_000 + i)).collect();
    store.ingest(batch).await.unwrap();

    // Another node's claim in progress: it holds the row lock on the oldest item.
    let mut other = pg.raw().await;
    let tx = other.transaction().await.unwrap();
    tx.query(&format!("SELECT id FROM {} WHERE id = 'q-r0' FOR UPDATE", pg.table("queue")), &[]).await.unwrap();

    let claimed = tokio::time::timeout(Duration::from_secs(5), store.claim_due(2_000, "n", 9_000, 10))
        .await
        .expect("claim_due waited for a locked row instead of skipping it")
        .unwrap();
    assert_eq!(claimed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec!["q-r1", "q-r2"]);
    tx.rollback().await.unwrap();
    let rest = store.claim_due(2_000, "n", 9_000, 10).await.unwrap();
    assert_eq!(rest.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec!["q-r0"]);
    drop(store);
    pg.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_migrate_a_fresh_schema_once() {
    let Some(pg) = backend() else { return };
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let (url, options) = (pg.url.clone(), pg.options());
            tokio::spawn(async move { PostgresStore::connect(&url, options).await })
        })
        .collect();
    let mut stores = Vec::new();
    for connect in connects {
        stores.push(connect.await.unwrap().unwrap_or_else(|e| panic!("a concurrent connect failed: {e}")));
    }
    let raw = pg.raw().await;
    let versions: Vec<i64> = raw
        .query(&format!("SELECT version FROM {} ORDER BY version", pg.table("schema_migrations")), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, MIGRATIONS.iter().map(|(v, _)| *v).collect::<Vec<_>>());
    // And a later start finds nothing to do.
    let again = PostgresStore::connect(&pg.url, pg.options()).await.unwrap();
    assert!(again.list_apps().await.unwrap().is_empty());
    drop((stores, again));
    pg.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingests_store_a_client_id_seeded_id_or_guard_key_once() {
    let Some(pg) = backend() else { return };
    let (node_a, node_b) = (pg.open().await, pg.open().await);
    for round in 0..10 {
        // Same client id, different sluice ids: one event wins, the other names it.
        let key = format!("client-{round}");
        let (a, b) = tokio::join!(
            node_a.ingest(vec![ingest_one(&format!("ka{round}"), &format!("kra{round}"), Some(&key), 1_000)]),
            node_b.ingest(vec![ingest_one(&format!("kb{round}"), &format!("krb{round}"), Some(&key), 1_000)]),
        );
        let (a, b) = (a.unwrap().remove(0), b.unwrap().remove(0));
        assert_eq!([a.duplicate, b.duplicate].iter().filter(|d| !**d).count(), 1, "{a:?} {b:?}");
        assert_eq!(a.event_id, b.event_id);
        assert!(node_a.get_event(&a.event_id).await.unwrap().is_some());
        let (loser, loser_run) = if a.duplicate { ("ka", "kra") } else { ("kb", "krb") };
        assert!(node_a.get_event(&format!("{loser}{round}")).await.unwrap().is_none());
        assert!(node_a.get_run(&format!("{loser_run}{round}")).await.unwrap().is_none());

        // Same seeded id from both.
        let seeded = format!("seeded-{round}");
        let (a, b) = tokio::join!(
            node_a.ingest(vec![ingest_one(&seeded, &format!("sra{round}"), None, 1_000)]),
            node_b.ingest(vec![ingest_one(&seeded, &format!("srb{round}"), None, 1_000)]),
        );
        let (a, b) = (a.unwrap().remove(0), b.unwrap().remove(0));
        assert_eq!([a.duplicate, b.duplicate].iter().filter(|d| !**d).count(), 1, "{a:?} {b:?}");
        assert_eq!(node_a.runs_for_event(&seeded).await.unwrap().len(), 1);

        // Same singleton key: one run admitted.
        let guarded = |ev: String, run_id: String| {
            let mut one = ingest_one(&ev, &run_id, None, 1_000);
            one.runs[0].guards =
                vec![RunGuard { keys: vec![format!("singleton-{round}")], expires_at: 50_000, release_on_end: true }];
            vec![one]
        };
        let (a, b) = tokio::join!(
            node_a.ingest(guarded(format!("ga{round}"), format!("gra{round}"))),
            node_b.ingest(guarded(format!("gb{round}"), format!("grb{round}"))),
        );
        let (a, b) = (a.unwrap().remove(0), b.unwrap().remove(0));
        assert_eq!(a.run_ids.len() + b.run_ids.len(), 1, "{a:?} {b:?}");
        assert_eq!(a.skipped_runs.len() + b.skipped_runs.len(), 1, "{a:?} {b:?}");
        let admitted = a.run_ids.first().or(b.run_ids.first()).unwrap();
        assert_eq!(node_b.guard_holder(&format!("singleton-{round}"), 1_000).await.unwrap().as_ref(), Some(admitted));
    }
    drop((node_a, node_b));
    pg.clean_up().await;
}

#[tokio::test]
async fn sessions_carry_the_statement_timeout_and_the_schema() {
    let Some(pg) = backend() else { return };
    let store = pg.open().await;
    let client = store.client().await.unwrap();
    let timeout: String = client.query_one("SHOW statement_timeout", &[]).await.unwrap().get(0);
    assert_eq!(timeout, "30s");
    let search_path: String = client.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(search_path, pg.schema);
    let tables: i64 = client
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'queue'", &[&pg.schema])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
    drop((client, store));
    pg.clean_up().await;
}

#[tokio::test]
async fn an_unreachable_database_is_an_open_error_that_hides_the_password() {
    // Port 1 on loopback: nothing listens, so the connection is refused at once.
    let url = "postgres://sluice:s3cret@127.0.0.1:1/test";
    let options = PgOptions { pool_size: 1, connect_timeout: Duration::from_secs(2), ..Default::default() };
    let Err(err) = PostgresStore::connect(url, options).await else { panic!("connected to nothing") };
    assert_eq!(err.code(), "SLUICE-2003");
    let StoreError::Open { path, reason } = &err else { panic!("not an Open error: {err}") };
    assert_eq!(path, "postgres://sluice:***@127.0.0.1:1/test");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(!reason.is_empty());
}

#[tokio::test]
async fn a_schema_name_that_would_need_quoting_is_refused() {
    let options = PgOptions { schema: Some("Robert'); DROP".into()), ..Default::default() };
    let Err(StoreError::Open { reason, .. }) = PostgresStore::connect(DEFAULT_URL, options).await else {
        panic!("accepted a schema name that needs quoting")
    };
    assert!(reason.contains("schema name"), "{reason}");
}

#[test]
fn redact_url_hides_passwords_in_every_spelling() {
    let cases = [
        ("postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgres://h/db", "postgres://h/db"),
        ("postgres://u:p@ss/w:rd@h/db?sslmode=disable", "postgres://u:***@h/db?sslmode=disable"),
        ("postgres://u@h/db?password=pw&application_name=x", "postgres://u@h/db?password=***&application_name=x"),
        ("host=h user=u password=pw dbname=db", "host=h user=u password=*** dbname=db"),
        ("host=h password = 'p w\\' x' dbname=db", "host=h password=*** dbname=db"),
        ("host=h passwordless=1 dbname=db", "host=h passwordless=1 dbname=db"),
    ];
    for (url, shown) in cases {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

/// PostgreSQL text cannot hold NUL, which sluice's keys use as a separator (`name\0client id`,
/// `idem\0fn\0key`) and event names may contain: such text is escaped on the way in and out.
#[tokio::test]
async fn keys_and_names_with_nul_are_stored_and_matched() {
    let Some(pg) = backend() else { return };
    let store = pg.open().await;
    let mut first = ingest_one("e1", "r1", Some("test/e\0client-1"), 1_000);
    first.record.event.name = "odd\0name\u{1}".into();
    first.runs[0].guards =
        vec![RunGuard { keys: vec!["idem\0fn\0k".into()], expires_at: 50_000, release_on_end: false }];
    let out = store.ingest(vec![first]).await.unwrap();
    assert_eq!(out[0].run_ids, vec!["r1".to_string()]);
    // The same client id is a duplicate; another one (differing after the NUL) is not.
    let again = store.ingest(vec![ingest_one("e2", "r2", Some("test/e\0client-1"), 2_000)]).await.unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].event_id, "e1");
    let other = store.ingest(vec![ingest_one("e3", "r3", Some("test/e\0client-2"), 2_000)]).await.unwrap();
    assert!(!other[0].duplicate);
    assert_eq!(store.guard_holder("idem\0fn\0k", 2_000).await.unwrap().as_deref(), Some("r1"));
    assert_eq!(store.guard_holder("idem\0fn\u{1}0k", 2_000).await.unwrap(), None, "the escape is not ambiguous");
    let listed = store.list_events(Some("odd\0name\u{1}"), 10).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e1"]);
    assert_eq!(listed[0].event.name, "odd\0name\u{1}");

    let mut p = PauseRecord {
        id: "p1".into(),
        run_id: "r1".into(),
        kind: PauseKind::WaitForEvent,
        step_id: Some("wait".into()),
        event_name: "wait\0for".into(),
        expression: None,
        match_key: None,
        trigger_event: serde_json::json!({}),
        expires_at: 60_000,
        created_at: 1_000,
    };
    let run = store.get_run("r1").await.unwrap().unwrap();
    let commit = Commit {
        run_id: "r1".into(),
        run: Some(run.clone()),
        expected_rev: run.rev,
        new_pauses: vec![p.clone()],
        ..Default::default()
    };
    assert!(matches!(store.commit(commit).await.unwrap(), CommitOutcome::Applied { .. }));
    let found = store.pauses_for_event("wait\0for").await.unwrap();
    p.trigger_event = found[0].trigger_event.clone();
    assert_eq!(found, vec![p]);
    drop(store);
    pg.clean_up().await;
}

#[test]
fn the_nul_escape_round_trips() {
    for s in ["", "plain", "a\0b", "\u{1}", "\u{1}0", "\0\u{1}\0", "x\u{1}", "é\0ü"] {
        assert_eq!(from_pg_text(pg_text(s).into_owned()), s, "{s:?}");
        assert!(!pg_text(s).contains('\0'));
    }
    assert!(matches!(pg_text("plain"), std::borrow::Cow::Borrowed(_)));
}
