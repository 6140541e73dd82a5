//! Event-to-run-start latency with 1,000 keyed concurrency queues active (issue 3's benchmark).
//! `cargo bench -p sluice-cli --bench flow_latency`
//!
//! Real processes: a release `sluice dev` and the TypeScript worker fixture. Latency is measured
//! from just before `POST /e` to the moment the worker's step body starts (its side-effect
//! timestamp), for events of fresh concurrency keys. Measured twice in the same run: on an idle
//! runtime (the peer), then with 1,000 other keys each holding a slot with a long step.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::*;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn sample(sluice: &Sluice, worker: &Worker, label: &str, n: usize) -> Vec<i64> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let group = format!("{label}-{i}");
        let sent = now_ms();
        sluice.send("test/concurrency", json!({"group": group, "ms": 10})).await;
        let start =
            worker.wait_effect("the step to start", |e| e["group"] == group.as_str() && e["phase"] == "start").await;
        latencies.push(start["t"].as_i64().unwrap() - sent);
    }
    latencies.sort();
    latencies
}

fn pct(v: &[i64], p: f64) -> i64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let keys: usize = std::env::var("BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let samples: usize = std::env::var("BENCH_SAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let sluice = Sluice::dev_with(&["--max-inflight", "2000"]).await;
    let worker = Worker::ts(&sluice, &[("FUNCTIONS", "concurrent")]).await;
    sluice.sync(&worker.url()).await;

    let idle = sample(&sluice, &worker, "idle", samples).await;

    // 1,000 keyed queues, each with a step holding its key's slot for a minute.
    let batch: Vec<_> = (0..keys)
        .map(|i| json!({"name": "test/concurrency", "data": {"group": format!("busy-{i}"), "ms": 60_000}}))
        .collect();
    for chunk in batch.chunks(250) {
        let (status, _) = sluice.post_events_raw("bench", serde_json::to_vec(chunk).unwrap(), &[]).await;
        assert_eq!(status, 200);
    }
    eventually("every busy key to hold its slot", std::time::Duration::from_secs(120), || async {
        let started = worker
            .effects()
            .iter()
            .filter(|e| e["phase"] == "start" && e["group"].as_str().unwrap_or("").starts_with("busy-"))
            .count();
        (started >= keys).then_some(())
    })
    .await;
    let busy = sample(&sluice, &worker, "under-load", samples).await;

    println!("flow_latency: event-to-run-start, {samples} samples each");
    println!("  idle runtime:                p50 {:>4} ms  p95 {:>4} ms", pct(&idle, 0.5), pct(&idle, 0.95));
    println!("  {keys} keyed queues active:  p50 {:>4} ms  p95 {:>4} ms", pct(&busy, 0.5), pct(&busy, 0.95));
    println!(
        "  ratio busy/idle:             p50 {:.2}   p95 {:.2}",
        pct(&busy, 0.5) as f64 / pct(&idle, 0.5).max(1) as f64,
        pct(&busy, 0.95) as f64 / pct(&idle, 0.95).max(1) as f64
    );
}
