//! Several sluice nodes on one PostgreSQL database, under continuous load: one node is killed with
//! SIGKILL, and the database itself is restarted. Nothing acknowledged is lost, nothing is left
//! running, and no step whose result was stored runs again.
//!
//! These need `SLUICE_TEST_BACKEND=postgres` (scripts/test.sh runs the suite a second time so);
//! on SQLite, which is one process per file, they return at once. The restart test also needs the
//! local cluster's `pg_ctlcluster` (it is skipped, saying so, when /etc/postgresql is missing).

mod support;
use support::*;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Node timeout of the cluster tests: a node silent this long is swept.
const NODE_TIMEOUT: Duration = Duration::from_secs(3);

/// The tests of this file start several nodes each, and one restarts the database: one at a time.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

fn postgres_only(test: &str) -> bool {
    if !postgres_backend() {
        eprintln!("{test}: skipped, several nodes need SLUICE_TEST_BACKEND=postgres");
    }
    postgres_backend()
}

/// A schema the nodes of one test share, dropped at the end (declare it before the nodes, so it
/// is dropped after them).
struct SharedSchema(String);

impl SharedSchema {
    fn new() -> SharedSchema {
        SharedSchema(fresh_schema())
    }
}

impl Drop for SharedSchema {
    fn drop(&mut self) {
        drop_schema(&self.0);
    }
}

async fn node(schema: &SharedSchema) -> Sluice {
    let options = SluiceOptions {
        db_schema: Some(schema.0.clone()),
        env: vec![
            ("SLUICE_NODE_TIMEOUT".into(), format!("{}ms", NODE_TIMEOUT.as_millis())),
            ("SLUICE_HEARTBEAT_INTERVAL".into(), "250ms".into()),
        ],
        ..Default::default()
    };
    Sluice::start(options).await
}

/// The node id a sluice printed at start.
fn node_id(sluice: &Sluice) -> String {
    let log = sluice.log();
    let at = log.find("node: ").unwrap_or_else(|| panic!("no node id in the log:\n{log}")) + "node: ".len();
    log[at..].split([',', ')']).next().unwrap().to_string()
}

/// A direct connection to the shared schema, to look behind the nodes' backs.
async fn db(schema: &SharedSchema) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = pg_url().parse().unwrap();
    config.options(format!("-c search_path={}", schema.0));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// One TypeScript worker, synced through the first node; returns once every node runs its
/// functions (each node learns of the sync from the store).
async fn worker_for(nodes: &[&Sluice], env: &[(&str, &str)]) -> Worker {
    let worker = Worker::ts(nodes[0], env).await;
    nodes[0].sync(&worker.url()).await;
    for n in nodes {
        eventually("every node to load the synced functions", DEADLINE, || async {
            let (_, dev) = n.get("/dev").await;
            dev["functions"].as_array()?.iter().any(|f| f["id"] == "ts-app-steps").then_some(())
        })
        .await;
        let run = n.run_to("test/steps", json!({"warm": n.port}), "Completed").await;
        assert_eq!(run["output"], "ABC", "{run}");
    }
    worker
}

/// Sends `test/steps` events round-robin to `targets` (which the test may change meanwhile), one
/// every `every` for `length`, without waiting for earlier answers (a send stuck in an outage does
/// not hold up the next); returns the ids of the events a node acknowledged with 200.
fn load(targets: Arc<Mutex<Vec<String>>>, length: Duration, every: Duration) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let (start, mut sends, mut n) = (Instant::now(), tokio::task::JoinSet::new(), 0usize);
        while start.elapsed() < length {
            let target = {
                let targets = targets.lock().unwrap();
                targets[n % targets.len()].clone()
            };
            let (client, body) = (client.clone(), json!({"name": "test/steps", "data": {"n": n}}));
            sends.spawn(async move {
                let r = client.post(format!("{target}/e/test-key")).json(&body).send().await.ok()?;
                if r.status() != 200 {
                    return None;
                }
                let body: Value = r.json().await.ok()?;
                body["ids"][0].as_str().map(str::to_string)
            });
            n += 1;
            tokio::time::sleep(every).await;
        }
        let mut acked = Vec::new();
        while let Some(sent) = sends.join_next().await {
            acked.extend(sent.ok().flatten());
        }
        acked
    })
}

/// Runs by trigger event id: (run id, status, output).
async fn runs_by_event(db: &tokio_postgres::Client) -> HashMap<String, Vec<(String, String, Option<String>)>> {
    let mut out: HashMap<_, Vec<_>> = HashMap::new();
    for r in
        db.query("SELECT event_id, id, status, output FROM runs WHERE function_id = 'ts-app-steps'", &[]).await.unwrap()
    {
        out.entry(r.get(0)).or_default().push((r.get(1), r.get(2), r.get(3)));
    }
    out
}

/// Waits until every acknowledged event has exactly one run and it completed with "ABC".
async fn all_completed(schema: &SharedSchema, acked: &[String], deadline: Duration) {
    let client = db(schema).await;
    let start = Instant::now();
    loop {
        let runs = runs_by_event(&client).await;
        let missing: Vec<_> = acked.iter().filter(|e| !runs.contains_key(*e)).collect();
        let unfinished: Vec<_> = acked
            .iter()
            .filter_map(|e| runs.get(e))
            .flatten()
            .filter(|(_, status, output)| status != "Completed" || output.as_deref() != Some("\"ABC\""))
            .collect();
        let doubled: Vec<_> = acked.iter().filter(|e| runs.get(*e).is_some_and(|r| r.len() > 1)).collect();
        assert!(missing.is_empty(), "acknowledged events without a run: {missing:?}");
        assert!(doubled.is_empty(), "events with more than one run: {doubled:?}");
        if unfinished.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "{} of {} runs not completed after {deadline:?}: {:?}",
            unfinished.len(),
            acked.len(),
            &unfinished[..unfinished.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn nothing_left_running(schema: &SharedSchema) {
    let client = db(schema).await;
    let open: Vec<(String, String)> = client
        .query(
            "SELECT id, status FROM runs WHERE function_id = 'ts-app-steps'
             AND status NOT IN ('Completed', 'Failed', 'Cancelled')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(open.is_empty(), "runs left open: {open:?}");
    let items: i64 = client
        .query_one(
            "SELECT count(*) FROM queue WHERE kind = 'call'
             AND run_id IN (SELECT id FROM runs WHERE function_id = 'ts-app-steps')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(items, 0, "call items left in the queue");
}

/// Every step of every `steps` run is stored once; no execution of a step began after its result
/// was stored. Returns the (run, step) pairs that executed more than once (allowed only for work
/// a dead node held, whose result it never stored).
async fn steps_ran_at_most_until_stored(schema: &SharedSchema, worker: &Worker) -> HashSet<(String, String)> {
    let client = db(schema).await;
    let mut stored: HashMap<(String, String), i64> = HashMap::new();
    for r in client
        .query(
            "SELECT s.run_id, s.name, s.created_at FROM steps s JOIN runs r ON r.id = s.run_id
             WHERE r.function_id = 'ts-app-steps'",
            &[],
        )
        .await
        .unwrap()
    {
        let name: Option<String> = r.get(1);
        let previous = stored.insert((r.get(0), name.unwrap_or_default()), r.get(2));
        assert!(previous.is_none(), "a step stored twice");
    }
    let mut executions: HashMap<(String, String), usize> = HashMap::new();
    for e in worker.effects().into_iter().filter(|e| e["fn"] == "steps") {
        let key = (e["run"].as_str().unwrap().to_string(), e["step"].as_str().unwrap().to_string());
        let t = e["t"].as_i64().unwrap();
        let at = *stored.get(&key).unwrap_or_else(|| panic!("step {key:?} ran but was never stored"));
        assert!(t <= at, "step {key:?} ran at {t}, after its result was stored at {at}");
        *executions.entry(key).or_default() += 1;
    }
    for key in stored.keys() {
        assert!(executions.contains_key(key), "step {key:?} stored without running");
    }
    executions.into_iter().filter(|(_, n)| *n > 1).map(|(k, _)| k).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_under_load_lose_nothing_when_one_is_killed() {
    let _serial = serial().await;
    if !postgres_only("three_nodes_under_load_lose_nothing_when_one_is_killed") {
        return;
    }
    let schema = SharedSchema::new();
    let (a, mut victim, c) = (node(&schema).await, node(&schema).await, node(&schema).await);
    // Also a cron ticking every second: each tick must fire once across the three nodes.
    let worker = worker_for(&[&a, &victim, &c], &[("CRON_EVERY", "1s")]).await;
    let victim_id = node_id(&victim);
    let client = db(&schema).await;
    let nodes: i64 = client.query_one("SELECT count(*) FROM nodes", &[]).await.unwrap().get(0);
    assert_eq!(nodes, 3);

    let targets = Arc::new(Mutex::new(vec![a.url(), victim.url(), c.url()]));
    let generator = load(targets.clone(), Duration::from_secs(6), Duration::from_millis(25));
    // Mid-load, once the victim is working on something: SIGKILL.
    tokio::time::sleep(Duration::from_secs(2)).await;
    eventually("the victim to hold a lease", DEADLINE, || {
        let (client, victim_id) = (&client, &victim_id);
        async move {
            let n: i64 =
                client.query_one("SELECT count(*) FROM queue WHERE lease_owner = $1", &[victim_id]).await.ok()?.get(0);
            (n > 0).then_some(())
        }
    })
    .await;
    targets.lock().unwrap().retain(|t| *t != victim.url());
    victim.kill9();
    let killed_at = Instant::now();
    // What it held when it died: no heartbeat for NODE_TIMEOUT yet, so nothing is swept yet.
    let held: HashSet<String> = client
        .query("SELECT DISTINCT run_id FROM queue WHERE lease_owner = $1", &[&victim_id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!held.is_empty());

    // Its in-flight work completes on the others within the node timeout (the lease itself would
    // last the 30 m call timeout), with time for the runs' remaining steps.
    for run_id in &held {
        a.wait_status_for(run_id, "Completed", NODE_TIMEOUT + Duration::from_secs(20)).await;
    }
    let recovered_in = killed_at.elapsed();
    eprintln!("the killed node's {} runs completed elsewhere {recovered_in:?} after the kill", held.len());
    assert!(recovered_in < NODE_TIMEOUT + Duration::from_secs(15), "took {recovered_in:?}");

    let acked = generator.await.unwrap();
    assert!(acked.len() >= 100, "the load generator got only {} events in", acked.len());
    all_completed(&schema, &acked, Duration::from_secs(60)).await;
    nothing_left_running(&schema).await;
    let rerun = steps_ran_at_most_until_stored(&schema, &worker).await;
    let outside: Vec<_> = rerun.iter().filter(|(run, _)| !held.contains(run)).collect();
    assert!(outside.is_empty(), "steps ran twice in runs the killed node did not hold: {outside:?}");
    eprintln!(
        "{} events acknowledged, all completed; {} step executions repeated (all the killed node's)",
        acked.len(),
        rerun.len()
    );
    // The dead node was swept: only the two live ones remain.
    let live: Vec<String> = client.query("SELECT id FROM nodes", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(!live.contains(&victim_id));
    let swept = [&a, &c].iter().any(|n| n.log().contains("nodes stopped heartbeating"));
    assert!(swept, "no surviving node logged the sweep");
    cron_ticked_once_each(&client, &worker).await;
}

/// Every tick of the `@every 1s` cron stored one event and started one run, whose step ran for that
/// tick only, whichever node fired it.
async fn cron_ticked_once_each(client: &tokio_postgres::Client, worker: &Worker) {
    let mut events: HashMap<String, usize> = HashMap::new();
    for r in client.query("SELECT body FROM events WHERE name = 'inngest/scheduled.timer'", &[]).await.unwrap() {
        let body: Value = serde_json::from_str(r.get::<_, &str>(0)).unwrap();
        if body["data"]["cron"] == "@every 1s" {
            *events.entry(body["data"]["scheduledAt"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    let doubled: Vec<_> = events.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "cron ticks stored more than once: {doubled:?}");
    let runs: Vec<(String, i64)> = client
        .query("SELECT event_id, count(*) FROM runs WHERE function_id = 'ts-app-cron-every' GROUP BY event_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(runs.iter().all(|(_, n)| *n == 1), "a tick started more than one run: {runs:?}");
    let mut runs_per_tick: HashMap<String, HashSet<String>> = HashMap::new();
    for e in worker.effects().into_iter().filter(|e| e["fn"] == "cron-every") {
        let tick = e["scheduledAt"].as_str().unwrap().to_string();
        runs_per_tick.entry(tick).or_default().insert(e["run"].as_str().unwrap().to_string());
    }
    let doubled: Vec<_> = runs_per_tick.iter().filter(|(_, runs)| runs.len() > 1).collect();
    assert!(doubled.is_empty(), "a tick ran in more than one run: {doubled:?}");
    // Ticks all through the test (catch-up after the kill may merge a few).
    assert!(events.len() >= 4, "only {} ticks fired", events.len());
    eprintln!("{} cron ticks, each stored and run once", events.len());
}

/// The local cluster's version directory (`/etc/postgresql/<version>/main`), if this machine has one.
fn local_cluster() -> Option<String> {
    if std::env::var("SLUICE_TEST_PG_RESTART").as_deref() == Ok("0") {
        return None;
    }
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|v| std::path::Path::new(&format!("/etc/postgresql/{v}/main")).exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn pg_ctl(version: &str, action: &str) -> bool {
    Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, "main", action])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts the database again when the test ends, however it ends.
struct DatabaseBackUp(String);

impl Drop for DatabaseBackUp {
    fn drop(&mut self) {
        if !pg_ctl(&self.0, "status") && !pg_ctl(&self.0, "start") {
            eprintln!("could not start PostgreSQL {} again: run pg_ctlcluster {} main start", self.0, self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_loses_no_acknowledged_event() {
    let _serial = serial().await;
    if !postgres_only("a_database_restart_under_load_loses_no_acknowledged_event") {
        return;
    }
    let Some(version) = local_cluster() else {
        eprintln!("a_database_restart_under_load_loses_no_acknowledged_event: skipped, no local cluster to restart");
        return;
    };
    let _back_up = DatabaseBackUp(version.clone());
    let schema = SharedSchema::new();
    let (a, b) = (node(&schema).await, node(&schema).await);
    let worker = worker_for(&[&a, &b], &[]).await;

    let targets = Arc::new(Mutex::new(vec![a.url(), b.url()]));
    let generator = load(targets, Duration::from_secs(8), Duration::from_millis(25));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = tokio::task::spawn_blocking(move || pg_ctl(&version, "restart")).await.unwrap();
    assert!(restarted, "pg_ctlcluster restart failed");
    let acked = generator.await.unwrap();
    eprintln!("{} events acknowledged around the restart", acked.len());
    assert!(acked.len() >= 50, "the load generator got only {} events in", acked.len());

    // Work cut off by the restart is retried: leases of items whose commit failed are released
    // by their own node (orphans), claims lost with the connection likewise.
    all_completed(&schema, &acked, Duration::from_secs(90)).await;
    nothing_left_running(&schema).await;
    steps_ran_at_most_until_stored(&schema, &worker).await;
    for n in [&a, &b] {
        assert_eq!(n.get("/health").await.0, 200);
        let log = n.log();
        assert!(log.contains("wake-up listener connected again"), "the listener did not come back:\n{log}");
        let errors = log.lines().filter(|l| l.contains("SLUICE-2001")).count();
        let orphans = log.lines().filter(|l| l.contains("no longer working on")).count();
        eprintln!(
            "node {}: {errors} store errors logged during the restart, {orphans} orphaned-lease releases",
            n.port
        );
    }
    // Both nodes kept their membership: neither was declared dead for an outage they shared.
    let client = db(&schema).await;
    let nodes: i64 = client.query_one("SELECT count(*) FROM nodes", &[]).await.unwrap().get(0);
    assert_eq!(nodes, 2);
    for n in [&a, &b] {
        assert!(!n.log().contains("declared this one dead"), "{}", n.log());
    }
}

/// Runs on both backends: it needs no database at all.
#[test]
fn start_with_an_unreachable_postgres_says_sluice_2003_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["start", "--signing-key", "signkey-test-00", "--event-key", "k", "--port"])
        .arg(free_port().to_string())
        .args(["--db", "postgres://sluice:s3cret-pw@127.0.0.1:1/sluice", "--db-connect-timeout", "2s"])
        .env_remove("SLUICE_CONFIG")
        .env_remove("SLUICE_DB_SCHEMA")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sluice");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("[SLUICE-2003]"), "{stderr}");
    assert!(stderr.contains("postgres://sluice:***@127.0.0.1:1/sluice"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    assert!(!dir.path().join(".sluice").exists(), "no SQLite state is created for a postgres URL");
}

/// A staged sync asked of one node stays staged when the SDK's own register call reaches another
/// node (the Python SDK registers out of band, at its INNGEST_DEV node), and the asking node sees it.
#[tokio::test]
async fn a_staged_sync_stays_staged_when_the_register_lands_on_another_node() {
    if !postgres_only("a_staged_sync_stays_staged_when_the_register_lands_on_another_node") {
        return;
    }
    let _serial = serial().await;
    let schema = SharedSchema::new();
    let a = node(&schema).await;
    let b = node(&schema).await;
    let v1 = Worker::py(&b, &[("VARIANT", "v1")]).await;
    a.sync(&v1.url()).await;
    let v2 = Worker::py(&b, &[("VARIANT", "v2")]).await;
    let r = http()
        .post(format!("{}/v1/apps/sync", a.url()))
        .json(&serde_json::json!({"url": v2.url(), "activate": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let staged: serde_json::Value = r.json().await.unwrap();
    assert_eq!(staged["data"]["deployment_status"], "registered", "{staged}");
    let (_, deployments) = a.get("/v1/deployments?app_id=py-app").await;
    let current: Vec<_> =
        deployments["data"].as_array().unwrap().iter().filter(|d| d["current"] == true).cloned().collect();
    assert_eq!(current.len(), 1);
    assert_ne!(current[0]["id"], staged["data"]["deployment_id"], "the staged deployment took no traffic");
}
