//! Admission of new runs: the keys a run must hold to be created (idempotency, rate limit,
//! singleton), its cancelOn pauses and its start/finish timeouts — all derived from the function
//! config and written in the same transaction as the run.

use serde_json::Value;
use sluice_expr::{ExprCache, Vars};
use sluice_protocol::duration::{parse_duration, MAX_DURATION_MS};
use sluice_protocol::function::FunctionConfig;
use sluice_store::{ItemKind, PauseKind, PauseRecord, QueueItem, RunGuard};

/// Idempotency keys hold for 24 h (Inngest: rateLimit {limit 1, period 24h, key}).
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// A guard released only when its run ends.
const UNTIL_RUN_ENDS: i64 = i64::MAX / 2;

/// Evaluate a key expression to its string form. A missing key expression is the empty key
/// (one bucket for the whole function).
pub fn eval_key(exprs: &ExprCache, source: Option<&str>, event: &Value) -> Option<String> {
    let Some(source) = source.filter(|s| !s.trim().is_empty()) else {
        return Some(String::new());
    };
    match exprs.get(source) {
        // A key that is not valid CEL or does not evaluate (the workload has bare `x-post` keys)
        // still limits: its source text becomes one shared bucket, as Inngest shares one too.
        Ok(expr) => {
            expr.eval_key(&Vars { event: Some(event), ..Default::default() }).or_else(|| Some(source.to_string()))
        }
        Err(_) => Some(source.to_string()),
    }
}

fn duration_ms(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_str).and_then(|s| parse_duration(s).ok())
}

/// The guards for a run of `config` triggered by `event`.
pub fn guards(exprs: &ExprCache, config: &FunctionConfig, event: &Value, now: i64) -> Vec<RunGuard> {
    let mut out = Vec::new();
    let fn_id = &config.id;
    if let Some(source) = config.extra.get("idempotency").and_then(Value::as_str) {
        if let Some(key) = eval_key(exprs, Some(source), event) {
            out.push(RunGuard {
                keys: vec![format!("idem\0{fn_id}\0{key}")],
                expires_at: now + IDEMPOTENCY_WINDOW_MS,
                release_on_end: false,
            });
        }
    }
    if let Some(rl) = config.extra.get("rateLimit") {
        let limit = rl.get("limit").and_then(Value::as_u64).unwrap_or(0).min(10_000);
        let period = duration_ms(rl.get("period"));
        let key = eval_key(exprs, rl.get("key").and_then(Value::as_str), event);
        if let (true, Some(period), Some(key)) = (limit > 0, period, key) {
            // `limit` slots, each held for `period` after use: at most `limit` runs in any window.
            out.push(RunGuard {
                keys: (0..limit).map(|slot| format!("rate\0{fn_id}\0{key}\0{slot}")).collect(),
                expires_at: now + period,
                release_on_end: false,
            });
        }
    }
    if let Some((key, _mode)) = singleton(exprs, config, event) {
        out.push(RunGuard { keys: vec![key], expires_at: UNTIL_RUN_ENDS, release_on_end: true });
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingletonMode {
    Skip,
    Cancel,
}

/// The singleton guard key and mode, when the function is a singleton.
pub fn singleton(exprs: &ExprCache, config: &FunctionConfig, event: &Value) -> Option<(String, SingletonMode)> {
    let s = config.extra.get("singleton")?;
    let mode = match s.get("mode").and_then(Value::as_str) {
        Some("cancel") => SingletonMode::Cancel,
        _ => SingletonMode::Skip,
    };
    let key = eval_key(exprs, s.get("key").and_then(Value::as_str), event)?;
    Some((format!("single\0{}\0{key}", config.id), mode))
}

/// cancelOn rules become pauses created with the run.
pub fn cancel_pauses(config: &FunctionConfig, run_id: &str, event: &Value, now: i64) -> Vec<PauseRecord> {
    let Some(rules) = config.extra.get("cancel").and_then(Value::as_array) else {
        return vec![];
    };
    rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            let event_name = rule.get("event")?.as_str()?.to_string();
            let timeout = duration_ms(rule.get("timeout")).unwrap_or(MAX_DURATION_MS);
            Some(PauseRecord {
                id: format!("{run_id}:cancel:{i}"),
                run_id: run_id.to_string(),
                kind: PauseKind::CancelOn,
                step_id: None,
                event_name,
                expression: rule.get("if").and_then(Value::as_str).map(str::to_string),
                match_key: None,
                trigger_event: event.clone(),
                expires_at: now + timeout,
                created_at: now,
            })
        })
        .collect()
}

/// `timeouts.start`: cancel the run if it has not started by then.
pub fn start_timeout_item(config: &FunctionConfig, run_id: &str, now: i64) -> Option<QueueItem> {
    let ms = duration_ms(config.extra.get("timeouts")?.get("start"))?;
    Some(run_timeout_item(run_id, "start", now + ms, now))
}

pub fn finish_timeout_ms(config: &FunctionConfig) -> Option<i64> {
    duration_ms(config.extra.get("timeouts")?.get("finish"))
}

pub fn run_timeout_item(run_id: &str, which: &str, at: i64, now: i64) -> QueueItem {
    QueueItem::new(format!("{run_id}:rt:{which}"), run_id, ItemKind::RunTimeout, which, at, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: Value) -> FunctionConfig {
        let mut f: FunctionConfig = serde_json::from_value(json!({
            "id": "app-f", "triggers": [{"event": "e"}],
            "steps": {"step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": "http://x/api?fnId=app-f&stepId=step"}}}
        }))
        .unwrap();
        f.extra = extra.as_object().unwrap().clone();
        f
    }

    #[test]
    fn idempotency_rate_limit_and_singleton_become_guards() {
        let exprs = ExprCache::default();
        let ev = json!({"name": "e", "data": {"user": "u1"}});
        let c = config(
            json!({"idempotency": "event.data.user", "rateLimit": {"limit": 3, "period": "1m", "key": "event.data.user"},
                              "singleton": {"mode": "cancel"}}),
        );
        let g = guards(&exprs, &c, &ev, 1_000);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].keys, vec!["idem\0app-f\0u1".to_string()]);
        assert_eq!(g[0].expires_at, 1_000 + IDEMPOTENCY_WINDOW_MS);
        assert_eq!(g[1].keys.len(), 3);
        assert_eq!(g[1].expires_at, 61_000);
        assert!(g[2].release_on_end);
        assert_eq!(singleton(&exprs, &c, &ev).unwrap().1, SingletonMode::Cancel);
    }

    #[test]
    fn cancel_rules_and_timeouts() {
        let c =
            config(json!({"cancel": [{"event": "app/stop", "if": "event.data.id == async.data.id", "timeout": "1h"}],
                              "timeouts": {"start": "10s", "finish": "2m"}}));
        let p = cancel_pauses(&c, "r", &json!({}), 0);
        assert_eq!(p[0].event_name, "app/stop");
        assert_eq!(p[0].expires_at, 3_600_000);
        assert_eq!(start_timeout_item(&c, "r", 0).unwrap().available_at, 10_000);
        assert_eq!(finish_timeout_ms(&c), Some(120_000));
    }
}
