//! Application claims kept outside sluice: Redis keys (a configured `SCAN MATCH` pattern, e.g.
//! `agent-loop:claim:*`) whose values name the run or the event the claim was taken for, possibly
//! prefixed (`event:<id>`, `run:<id>`). A claim whose run ended, whose event's runs all ended, or
//! that names nothing sluice knows is orphaned: nothing will ever release it.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_store::Store;

use crate::config::{ClaimSource, DoctorConfig};
use crate::model::*;
use crate::{DoctorError, Result};

const TIMEOUT: Duration = Duration::from_secs(3);

/// One claim key as read.
#[derive(Debug, Clone)]
pub struct Claim {
    pub key: String,
    pub value: String,
    /// Milliseconds left (`PTTL`); -1 without an expiry.
    pub ttl_ms: i64,
}

fn connect(url: &str) -> std::result::Result<redis::Connection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let conn = client.get_connection_with_timeout(TIMEOUT).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    Ok(conn)
}

fn source_error(source: &ClaimSource, message: String) -> DoctorError {
    DoctorError::ClaimSource { source_name: format!("{} {}", source.redis, source.pattern), message }
}

/// Every key matching the source's pattern, with value and TTL (blocking).
pub fn read_claims(source: &ClaimSource) -> Result<Vec<Claim>> {
    let mut conn = connect(&source.redis).map_err(|e| source_error(source, e))?;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&source.pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
            .map_err(|e| source_error(source, e.to_string()))?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        let value: Option<String> =
            redis::cmd("GET").arg(&key).query(&mut conn).map_err(|e| source_error(source, e.to_string()))?;
        let ttl_ms: i64 =
            redis::cmd("PTTL").arg(&key).query(&mut conn).map_err(|e| source_error(source, e.to_string()))?;
        if let Some(value) = value {
            out.push(Claim { key, value, ttl_ms });
        }
    }
    Ok(out)
}

/// Delete `key` only while it still holds `value` (atomic in Redis). Returns whether it did.
pub fn delete_if_value(url: &str, key: &str, value: &str) -> std::result::Result<bool, String> {
    let mut conn = connect(url)?;
    let deleted: i64 = redis::cmd("EVAL")
        .arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end")
        .arg(1)
        .arg(key)
        .arg(value)
        .query(&mut conn)
        .map_err(|e| e.to_string())?;
    Ok(deleted == 1)
}

/// Put a deleted claim back (undo), only if nobody took the key meanwhile. Returns whether it did.
pub fn restore(url: &str, key: &str, value: &str, ttl_ms: i64) -> std::result::Result<bool, String> {
    let mut conn = connect(url)?;
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value).arg("NX");
    if ttl_ms > 0 {
        cmd.arg("PX").arg(ttl_ms);
    }
    let set: Option<String> = cmd.query(&mut conn).map_err(|e| e.to_string())?;
    Ok(set.is_some())
}

/// The run or event id a claim value names: the value itself, or what follows its last `:`.
pub fn claim_target(value: &str) -> &str {
    let v = value.trim();
    v.rsplit_once(':').map_or(v, |(_, id)| id)
}

/// Check every configured claim source against the store.
pub async fn check(store: &dyn Store, config: &DoctorConfig) -> Result<(Vec<Finding>, Value)> {
    let mut findings = Vec::new();
    let mut checked = Vec::new();
    for source in &config.claims {
        let src = source.clone();
        let claims = tokio::task::spawn_blocking(move || read_claims(&src))
            .await
            .map_err(|e| DoctorError::Engine(format!("claim reader failed: {e}")))??;
        let mut orphaned = 0;
        for claim in &claims {
            let target = claim_target(&claim.value);
            let verdict = judge(store, target).await?;
            let Some((state, run)) = verdict.orphaned(source.absent_is_orphaned) else { continue };
            orphaned += 1;
            findings.push(Finding {
                code: Code::OrphanedClaim,
                severity: Severity::Error,
                subject_kind: "redis_key".into(),
                subject: claim.key.clone(),
                run_id: run.as_ref().map(|r| r.id.clone()),
                function_id: run.as_ref().map(|r| r.function_id.clone()),
                app_id: run.as_ref().map(|r| r.app_id.clone()),
                message: format!("claim {} names {target}, {state}; nothing will release it", claim.key),
                evidence: json!({"redis": source.redis, "key": claim.key, "value": claim.value, "ttl_ms": claim.ttl_ms,
                                 "names": target, "state": state}),
                repair: Some(Repair {
                    action: Action::DeleteClaim {
                        redis: source.redis.clone(),
                        key: claim.key.clone(),
                        value: claim.value.clone(),
                    },
                    description: "delete the key if it still holds this value; its value and TTL are kept in the \
                                  audit log, so `sluice doctor undo` can put it back"
                        .into(),
                    reversible: true,
                    idempotency_key: format!("claim:{}:{}", claim.key, claim.value),
                }),
                fix: "Delete it (`sluice doctor --fix --apply`), then re-fire the work it guarded if it is still \
                      wanted."
                    .into(),
            });
        }
        checked.push(
            json!({"redis": source.redis, "pattern": source.pattern, "keys": claims.len(), "orphaned": orphaned}),
        );
    }
    Ok((findings, Value::Array(checked)))
}

enum Verdict {
    /// A run that has not ended holds it: fine.
    Live,
    Ended(sluice_store::RunRecord),
    EventDone {
        runs: usize,
        last: Option<sluice_store::RunRecord>,
    },
    Absent,
}

impl Verdict {
    fn orphaned(self, absent_is_orphaned: bool) -> Option<(String, Option<sluice_store::RunRecord>)> {
        match self {
            Verdict::Live => None,
            Verdict::Ended(run) => Some((format!("whose run {} ended {}", run.id, run.status.as_str()), Some(run))),
            Verdict::EventDone { runs: 0, .. } => Some(("an event that triggered no run".into(), None)),
            Verdict::EventDone { runs, last } => Some((format!("an event whose {runs} run(s) all ended"), last)),
            Verdict::Absent if absent_is_orphaned => Some(("which is no run or event sluice knows".into(), None)),
            Verdict::Absent => None,
        }
    }
}

async fn judge(store: &dyn Store, target: &str) -> Result<Verdict> {
    if let Some(run) = store.get_run(target).await? {
        return Ok(if run.status.is_terminal() { Verdict::Ended(run) } else { Verdict::Live });
    }
    if store.get_event(target).await?.is_some() {
        let runs = store.runs_for_event(target).await?;
        if runs.iter().any(|r| !r.status.is_terminal()) {
            return Ok(Verdict::Live);
        }
        let n = runs.len();
        return Ok(Verdict::EventDone { runs: n, last: runs.into_iter().last() });
    }
    Ok(Verdict::Absent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_values_name_their_target() {
        assert_eq!(claim_target("event:01J0ABC"), "01J0ABC");
        assert_eq!(claim_target("run:01J0ABC"), "01J0ABC");
        assert_eq!(claim_target(" 01J0ABC "), "01J0ABC");
    }
}
