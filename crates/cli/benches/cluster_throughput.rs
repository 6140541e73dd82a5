//! Throughput of the 3-step function (`test/steps`: steps a, b, c, then "ABC") on SQLite with one
//! node, and on PostgreSQL with one node and with two nodes sharing the database, measured in one
//! run; prints runs per second and the ratios (issue 6's benchmark).
//!
//! `cargo bench -p sluice-cli --bench cluster_throughput` (release build; PostgreSQL at
//! SLUICE_TEST_PG_URL, default postgres://postgres@127.0.0.1:5432/test, a fresh schema per
//! configuration). BENCH_RUNS sets the runs per configuration (default 600).
//!
//! Real processes, as in the e2e tests: release `sluice dev` nodes and one TypeScript worker
//! (npm `inngest`) that every node calls. All events are sent up front (in batches of 50, spread
//! over the nodes), and the clock stops when the last run is Completed, so this measures how fast
//! the nodes drain a backlog: claim, call the SDK four times per run, commit each step.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

struct Config {
    label: &'static str,
    postgres: bool,
    nodes: usize,
}

struct Measured {
    label: &'static str,
    runs: usize,
    seconds: f64,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.runs as f64 / self.seconds
    }
}

async fn start_nodes(config: &Config, schema: Option<&str>) -> Vec<Sluice> {
    // The harness picks the backend from this variable when a sluice starts.
    std::env::set_var("SLUICE_TEST_BACKEND", if config.postgres { "postgres" } else { "sqlite" });
    let mut nodes = Vec::new();
    for _ in 0..config.nodes {
        let options = SluiceOptions {
            db_schema: schema.map(str::to_string),
            env: vec![("SLUICE_LOG".into(), "warn".into())],
            ..Default::default()
        };
        nodes.push(Sluice::start(options).await);
    }
    nodes
}

async fn completed(node: &Sluice) -> usize {
    let (_, body) = node.get("/v1/runs?function_id=ts-app-steps&status=Completed&limit=100000").await;
    body["data"].as_array().map_or(0, Vec::len)
}

/// Send `count` events in batches over the nodes; returns once all are acknowledged.
async fn send(nodes: &[Sluice], count: usize, tag: &str) {
    let batches: Vec<Vec<Value>> = (0..count)
        .map(|i| json!({"name": "test/steps", "data": {"tag": tag, "i": i}}))
        .collect::<Vec<_>>()
        .chunks(50)
        .map(<[Value]>::to_vec)
        .collect();
    for (i, batch) in batches.into_iter().enumerate() {
        let node = &nodes[i % nodes.len()];
        let (status, body) = node.post_events_raw("test-key", Value::Array(batch).to_string(), &[]).await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn wait_completed(node: &Sluice, target: usize) {
    let start = Instant::now();
    while completed(node).await < target {
        assert!(start.elapsed() < Duration::from_secs(600), "runs did not complete within 10 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn measure(config: &Config, runs: usize) -> Measured {
    let schema = config.postgres.then(fresh_schema);
    let nodes = start_nodes(config, schema.as_deref()).await;
    let worker = Worker::ts(&nodes[0], &[("FUNCTIONS", "steps")]).await;
    nodes[0].sync(&worker.url()).await;
    // Every node has loaded the function (the others learn of the sync from the store).
    for n in &nodes {
        eventually("the function on every node", DEADLINE, || async {
            let (_, dev) = n.get("/dev").await;
            dev["functions"].as_array()?.iter().any(|f| f["id"] == "ts-app-steps").then_some(())
        })
        .await;
    }
    // Warm-up, not measured.
    let warm = 40;
    send(&nodes, warm, "warm").await;
    wait_completed(&nodes[0], warm).await;

    let start = Instant::now();
    send(&nodes, runs, "measured").await;
    wait_completed(&nodes[0], warm + runs).await;
    let seconds = start.elapsed().as_secs_f64();
    drop(worker);
    drop(nodes);
    if let Some(schema) = schema {
        drop_schema(&schema);
    }
    Measured { label: config.label, runs, seconds }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    let configs = [
        Config { label: "SQLite, 1 node", postgres: false, nodes: 1 },
        Config { label: "PostgreSQL, 1 node", postgres: true, nodes: 1 },
        Config { label: "PostgreSQL, 2 nodes", postgres: true, nodes: 2 },
    ];
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("cluster_throughput: {runs} runs of test/steps (3 steps, 4 SDK calls each) per configuration;");
    println!("one TypeScript worker; {cores} CPU cores shared by every process (nodes, worker, PostgreSQL)\n");
    let mut results = Vec::new();
    for config in &configs {
        let m = measure(config, runs).await;
        println!(
            "{:<22} {:>6} runs in {:>6.2} s  = {:>7.1} runs/s  ({:>7.1} steps/s)",
            m.label,
            m.runs,
            m.seconds,
            m.per_second(),
            3.0 * m.per_second()
        );
        results.push(m);
    }
    let (sqlite, pg1, pg2) = (&results[0], &results[1], &results[2]);
    println!();
    println!("PostgreSQL 1 node / SQLite 1 node:      {:.2}x", pg1.per_second() / sqlite.per_second());
    println!("PostgreSQL 2 nodes / PostgreSQL 1 node: {:.2}x", pg2.per_second() / pg1.per_second());
    println!("PostgreSQL 2 nodes / SQLite 1 node:     {:.2}x", pg2.per_second() / sqlite.per_second());
}
