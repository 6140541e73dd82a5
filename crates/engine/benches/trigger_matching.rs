//! Trigger matching cost with many functions registered (issue 3's benchmark).
//! `cargo bench -p sluice-engine --bench trigger_matching`
//!
//! Registers N functions (a third with CEL `if` expressions, a tenth with wildcard names) and
//! matches a stream of events against them; prints ns per event for N = 1, 50 and 500 and the
//! ratio to N = 1 (the peer measured in the same run).

use std::time::Instant;

use serde_json::json;
use sluice_engine::Registry;
use sluice_protocol::function::FunctionConfig;
use sluice_store::{AppRecord, AppStatus, FunctionRecord};

fn function(i: usize) -> FunctionConfig {
    let mut trigger = json!({ "event": format!("app/event.{}", i % 200) });
    if i.is_multiple_of(3) {
        trigger["expression"] = json!(format!("event.data.tier == 'gold' && event.data.n > {}", i % 7));
    }
    if i.is_multiple_of(10) {
        trigger = json!({ "event": format!("app/wild.{}/*", i % 20) });
    }
    serde_json::from_value(json!({
        "id": format!("app-f{i}"),
        "triggers": [trigger],
        "steps": {"step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": format!("http://localhost:3000/api/inngest?fnId=app-f{i}&stepId=step")}}}
    }))
    .unwrap()
}

fn registry(n: usize) -> Registry {
    let registry = Registry::default();
    let compiled = (0..n)
        .map(|i| {
            let config = function(i);
            registry
                .compile(FunctionRecord {
                    id: config.id.clone(),
                    app_id: "app".into(),
                    name: config.id.clone(),
                    config,
                    updated_at: 0,
                })
                .unwrap()
        })
        .collect();
    let app = AppRecord {
        id: "app".into(),
        url: "http://localhost:3000/api/inngest".into(),
        normalized_url: "http://localhost:3000/api/inngest".into(),
        framework: None,
        sdk: None,
        deploy_id: None,
        app_version: None,
        config_hash: String::new(),
        status: AppStatus::Synced,
        last_error: None,
        synced_at: None,
        updated_at: 0,
    };
    registry.install_app(app, compiled);
    registry
}

fn measure(n: usize, events: usize) -> (f64, usize) {
    let registry = registry(n);
    let evs: Vec<_> = (0..256u32)
        .map(|i| {
            let name = if i.is_multiple_of(5) { format!("app/wild.{}/x", i % 20) } else { format!("app/event.{}", i % 200) };
            (
                name.clone(),
                json!({"name": name, "data": {"tier": if i.is_multiple_of(2) {"gold"} else {"silver"}, "n": i % 9}, "ts": 0}),
            )
        })
        .collect();
    let mut matched = 0;
    let start = Instant::now();
    for i in 0..events {
        let (name, ev) = &evs[i % evs.len()];
        matched += registry.matching(name, ev).len();
    }
    (start.elapsed().as_nanos() as f64 / events as f64, matched)
}

fn main() {
    let events = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let compile_start = Instant::now();
    let _ = registry(500);
    let compile_ms = compile_start.elapsed().as_secs_f64() * 1000.0;
    let (base, _) = measure(1, events);
    println!("trigger_matching: events={events}");
    println!("  sync of 500 functions (compile + index): {compile_ms:.1} ms");
    println!("  {:>5} functions: {:>9.0} ns/event (ratio 1.00)", 1, base);
    for n in [50, 500] {
        let (ns, matched) = measure(n, events);
        println!("  {n:>5} functions: {ns:>9.0} ns/event (ratio {:.2} vs 1 function; {matched} matches)", ns / base);
    }
}
