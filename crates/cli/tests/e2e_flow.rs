//! Flow control and time with the real TypeScript SDK: concurrency per key, throttle spacing,
//! debounce, cron in a time zone (with the test clock), and a kill -9 of sluice while runs sleep,
//! wait, debounce and are throttled.

mod support;

use serde_json::{json, Value};
use support::*;

fn intervals(effects: &[Value], group: &str) -> Vec<(i64, i64)> {
    let mut starts = std::collections::HashMap::new();
    let mut out = vec![];
    for e in effects.iter().filter(|e| e["fn"] == "concurrent" && e["group"] == group) {
        let run = e["run"].as_str().unwrap().to_string();
        match e["phase"].as_str() {
            Some("start") => {
                starts.insert(run, e["t"].as_i64().unwrap());
            }
            Some("end") => {
                if let Some(s) = starts.remove(&run) {
                    out.push((s, e["t"].as_i64().unwrap()));
                }
            }
            _ => {}
        }
    }
    out
}

fn max_overlap(iv: &[(i64, i64)]) -> usize {
    let mut points: Vec<(i64, i32)> = iv.iter().flat_map(|(s, e)| [(*s, 1), (*e, -1)]).collect();
    // An end and a start at the same millisecond do not overlap.
    points.sort_by_key(|(t, d)| (*t, *d));
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in points {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

#[tokio::test]
async fn concurrency_limits_steps_executing_per_key() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let mut runs = vec![];
    for i in 0..6 {
        for group in ["a", "b"] {
            let id = sluice.send("test/concurrency", json!({"group": group, "i": i})).await;
            runs.push(sluice.run_of_event(&id).await);
        }
    }
    for r in &runs {
        sluice.wait_status(r, "Completed").await;
    }
    let effects = worker.effects();
    for group in ["a", "b"] {
        let iv = intervals(&effects, group);
        assert_eq!(iv.len(), 6, "every step of group {group} ran once");
        assert_eq!(max_overlap(&iv), 2, "at most (and, under this load, exactly) 2 at once in group {group}");
    }
    // Across both keys more than 2 ran at once: the limit is per key.
    let mut all = intervals(&effects, "a");
    all.extend(intervals(&effects, "b"));
    assert!(max_overlap(&all) > 2);
}

#[tokio::test]
async fn throttle_spaces_run_starts_and_drops_none() {
    let (sluice, worker) = dev_with_ts_worker().await;
    let mut runs = vec![];
    for n in 0..3 {
        let id = sluice.send("test/throttle", json!({"n": n})).await;
        runs.push(sluice.run_of_event(&id).await);
    }
    for r in &runs {
        sluice.wait_status(r, "Completed").await;
    }
    let mut starts: Vec<i64> =
        worker.effects().iter().filter(|e| e["fn"] == "throttled").map(|e| e["t"].as_i64().unwrap()).collect();
    starts.sort();
    assert_eq!(starts.len(), 3);
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= 1_900, "starts spaced by the 2s period: {starts:?}");
    }
}

#[tokio::test]
async fn debounce_runs_once_with_the_last_event() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    let mut ids = vec![];
    for n in 0..4 {
        ids.push(sluice.send("test/debounce", json!({"key": "k1", "n": n})).await);
    }
    let other = sluice.send("test/debounce", json!({"key": "k2", "n": 9})).await;
    let run = eventually("the debounced run", DEADLINE, || async {
        let runs = sluice.runs_of("ts-app-debounced").await;
        (runs.len() == 2 && runs.iter().all(|r| r["status"] == "Completed")).then_some(runs)
    })
    .await;
    let k1 = run.iter().find(|r| r["output"]["key"] == "k1").unwrap();
    assert_eq!(k1["output"]["n"], 3, "the run carries the last event");
    assert_eq!(k1["event_id"], ids[3].as_str());
    let k2 = run.iter().find(|r| r["output"]["key"] == "k2").unwrap();
    assert_eq!(k2["event_id"], other.as_str());
}

async fn advance(sluice: &Sluice, ms: i64) -> i64 {
    let r = http().post(format!("{}/dev/clock", sluice.url())).json(&json!({"advance_ms": ms})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["now_ms"].as_i64().unwrap()
}

#[tokio::test]
async fn cron_fires_in_its_time_zone_once_per_tick_with_the_test_clock() {
    let sluice = Sluice::dev_with(&["--test-clock"]).await;
    let worker = Worker::ts(&sluice, &[("FUNCTIONS", "cron-paris")]).await;
    sluice.sync(&worker.url()).await;
    let (_, clock) = sluice.get("/dev/clock").await;
    let now = clock["now_ms"].as_i64().unwrap();
    let schedule = sluice_protocol::cron::CronSchedule::parse("TZ=Europe/Paris 0 9 * * *").unwrap();
    let tick = schedule.next_after(now).unwrap();
    assert!(sluice.runs_of("ts-app-cron-paris").await.is_empty());
    advance(&sluice, tick - now + 500).await;
    let runs = eventually("the 09:00 Paris tick", DEADLINE, || async {
        let runs = sluice.runs_of("ts-app-cron-paris").await;
        (!runs.is_empty() && runs[0]["status"] == "Completed").then_some(runs)
    })
    .await;
    assert_eq!(runs.len(), 1);
    let scheduled = runs[0]["output"]["scheduledAt"].as_str().unwrap();
    assert_eq!(scheduled, sluice_protocol::duration::format_rfc3339_ms(tick));
    let hour_utc = &scheduled[11..13];
    assert!(hour_utc == "07" || hour_utc == "08", "09:00 Paris is 07:00Z or 08:00Z: {scheduled}");
    assert_eq!(runs[0]["output"]["cron"], "TZ=Europe/Paris 0 9 * * *");
    // A day later: exactly one more run; a two-day jump fires only the latest missed tick.
    advance(&sluice, 24 * 3600 * 1000).await;
    eventually("the next day's tick", DEADLINE, || async {
        (sluice.runs_of("ts-app-cron-paris").await.len() == 2).then_some(())
    })
    .await;
    advance(&sluice, 2 * 24 * 3600 * 1000).await;
    eventually("one catch-up tick", DEADLINE, || async {
        (sluice.runs_of("ts-app-cron-paris").await.len() == 3).then_some(())
    })
    .await;
    // Still three once everything has settled (no burst for the missed day).
    let last = sluice.runs_of("ts-app-cron-paris").await;
    for r in &last {
        sluice.wait_status(r["run_id"].as_str().unwrap(), "Completed").await;
    }
    assert_eq!(sluice.runs_of("ts-app-cron-paris").await.len(), 3);
}

#[tokio::test]
async fn a_kill_9_loses_no_sleep_wait_debounce_or_throttled_run() {
    let mut sluice = Sluice::dev().await;
    let worker = Worker::ts(&sluice, &[]).await;
    sluice.sync(&worker.url()).await;
    let sleeping = sluice.send("test/sleep", json!({"duration": "2s"})).await;
    let sleeping = sluice.run_of_event(&sleeping).await;
    let wait_id = ulid::Ulid::new().to_string();
    let waiting = sluice.send("test/wait.start", json!({"id": wait_id, "timeout": "60s"})).await;
    let waiting = sluice.run_of_event(&waiting).await;
    let mut throttled = vec![];
    for n in 0..3 {
        let id = sluice.send("test/throttle", json!({"n": n})).await;
        throttled.push(sluice.run_of_event(&id).await);
    }
    let debounce_event = sluice.send("test/debounce", json!({"key": "crash", "n": 1})).await;
    worker.wait_effect("the sleeper's first step", |e| e["run"] == sleeping.as_str()).await;
    worker.wait_effect("the waiter's first step", |e| e["run"] == waiting.as_str()).await;
    eventually("the wait to be registered", DEADLINE, || async {
        let run = sluice.get_run(&waiting).await;
        (run["pending_steps"].as_array().map(|p| !p.is_empty()) == Some(true)).then_some(())
    })
    .await;

    sluice.kill9();
    sluice.restart().await;

    sluice.send("test/wait.approve", json!({"id": wait_id})).await;
    assert_eq!(sluice.wait_status(&sleeping, "Completed").await["output"], "slept");
    assert_eq!(sluice.wait_status(&waiting, "Completed").await["output"]["approved"]["id"], wait_id.as_str());
    for r in &throttled {
        sluice.wait_status(r, "Completed").await;
    }
    let debounced = eventually("the debounced run after restart", DEADLINE, || async {
        let runs = sluice.runs_of("ts-app-debounced").await;
        (runs.len() == 1 && runs[0]["status"] == "Completed").then_some(runs)
    })
    .await;
    assert_eq!(debounced[0]["event_id"], debounce_event.as_str());
    assert_eq!(worker.count(&sleeping, "sleeper", "before"), 1);
    assert_eq!(worker.count(&sleeping, "sleeper", "after"), 1);
}

#[tokio::test]
async fn batch_events_run_once_per_full_batch_and_flush_partial_batches_at_the_timeout() {
    let (sluice, _worker) = dev_with_ts_worker().await;
    for n in 0..5 {
        sluice.send("test/batch", json!({"n": n})).await;
    }
    let runs = eventually("a full batch and a flushed partial one", DEADLINE, || async {
        let runs = sluice.runs_of("ts-app-batched").await;
        (runs.len() == 2 && runs.iter().all(|r| r["status"] == "Completed")).then_some(runs)
    })
    .await;
    let mut outputs: Vec<Value> = runs.iter().map(|r| r["output"].clone()).collect();
    outputs.sort_by_key(|o| o["ns"][0].as_i64());
    assert_eq!(outputs[0], json!({"count": 3, "ns": [0, 1, 2]}));
    assert_eq!(outputs[1], json!({"count": 2, "ns": [3, 4]}));
    let full = runs.iter().find(|r| r["output"]["count"] == 3).unwrap();
    assert_eq!(full["event_ids"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn priority_runs_higher_priority_work_first() {
    // One call at a time, so the order in which due work is claimed is the order it runs.
    let sluice = Sluice::dev_with(&["--max-inflight", "1"]).await;
    let worker = Worker::ts(&sluice, &[("FUNCTIONS", "prioritized")]).await;
    sluice.sync(&worker.url()).await;
    let blocker = sluice.send("test/priority", json!({"label": "blocker", "priority": 0, "ms": 1500})).await;
    let blocker = sluice.run_of_event(&blocker).await;
    worker.wait_effect("the blocker running", |e| e["run"] == blocker.as_str()).await;
    for label in ["low-1", "low-2", "low-3"] {
        sluice.send("test/priority", json!({"label": label, "priority": 0})).await;
    }
    sluice.send("test/priority", json!({"label": "high", "priority": 300})).await;
    eventually("all five runs", DEADLINE, || async {
        let runs = sluice.runs_of("ts-app-prioritized").await;
        (runs.len() == 5 && runs.iter().all(|r| r["status"] == "Completed")).then_some(())
    })
    .await;
    let order: Vec<String> =
        worker.effects().iter().map(|e| e["label"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(order[0], "blocker");
    assert_eq!(order[1], "high", "the high-priority run went ahead of the earlier low ones: {order:?}");
    assert_eq!(&order[2..], &["low-1", "low-2", "low-3"], "equal priorities keep FIFO order: {order:?}");
}
