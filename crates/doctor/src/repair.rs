//! Carrying out repairs. Each one re-checks the state it was computed from (a compare-and-set on
//! the run's `rev`, the lease's owner and expiry, the claim's value, a deterministic event id), so
//! applying a plan twice, or racing the engine, changes nothing twice. Every attempt is written to
//! the audit log, `applied`, `noop` (already done) or `failed`.
//!
//! Repairs that must go through the engine (cancel, re-sync) use the running sluice's API when it
//! answers; with sluice stopped, cancel runs the engine's own cancel on the store.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use sluice_engine::ingest::{finish_events, ingest_item, FinishOutcome};
use sluice_engine::transition::{discovery_item, Finish};
use sluice_engine::{Engine, EngineConfig, EngineError, SystemClock};
use sluice_protocol::run::RunStatus;
use sluice_store::diagnostics::{AuditEntry, FUNCTION_FAILED};
use sluice_store::{Commit, Diagnostics, Store};
use tokio::sync::OnceCell;

use crate::model::*;
use crate::{deterministic_ulid, DoctorError, Result};

/// The running sluice's API, for repairs the engine must carry out.
#[derive(Debug, Clone)]
pub struct Api {
    pub url: String,
    /// Hashed into a Bearer token for a production-mode sluice.
    pub signing_key: Option<String>,
}

impl Api {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
        let mut req = client.request(method, format!("{}{path}", self.url.trim_end_matches('/')));
        if let Some(key) = &self.signing_key {
            req = req.bearer_auth(sluice_protocol::signing::hashed_signing_key(key));
        }
        req
    }

    /// Whether sluice answers `/health`.
    pub async fn is_up(&self) -> bool {
        match self.request(reqwest::Method::GET, "/health").timeout(Duration::from_secs(2)).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairResult {
    pub code: Code,
    pub subject: String,
    pub action: String,
    /// `applied`, `noop` or `failed`.
    pub outcome: String,
    pub detail: Value,
    pub audit_id: String,
}

pub struct Executor {
    pub store: Arc<dyn Store>,
    pub diag: Arc<dyn Diagnostics>,
    /// Set when the running sluice answered: cancel and re-sync go through it.
    pub api: Option<Api>,
    pub actor: String,
    pub command: String,
    engine: OnceCell<Arc<Engine>>,
}

enum Outcome {
    Applied(Value),
    Noop(Value),
    Failed(Value),
}

impl Executor {
    pub fn new(
        store: Arc<dyn Store>,
        diag: Arc<dyn Diagnostics>,
        api: Option<Api>,
        actor: String,
        command: String,
    ) -> Executor {
        Executor { store, diag, api, actor, command, engine: OnceCell::new() }
    }

    /// An engine over the store (its registry loaded, no worker running), for the engine's own code
    /// paths: matching events to functions, building finish events, cancelling.
    async fn engine(&self) -> Result<&Arc<Engine>> {
        self.engine
            .get_or_try_init(|| async {
                Engine::new(self.store.clone(), EngineConfig::default(), Arc::new(SystemClock))
                    .await
                    .map_err(|e| DoctorError::Engine(e.to_string()))
            })
            .await
    }

    /// Carry out one finding's repair and record it.
    pub async fn apply(&self, finding: &Finding, repair: &Repair, now: i64) -> Result<RepairResult> {
        let (outcome, undo) = match self.run(finding, repair, now).await {
            Ok(r) => r,
            Err(e) => (Outcome::Failed(json!({"error": e.to_string(), "code": e.code()})), None),
        };
        let (label, detail) = match outcome {
            Outcome::Applied(d) => ("applied", d),
            Outcome::Noop(d) => ("noop", d),
            Outcome::Failed(d) => ("failed", d),
        };
        let entry = AuditEntry {
            id: ulid::Ulid::new().to_string(),
            at: now,
            actor: self.actor.clone(),
            command: self.command.clone(),
            finding_code: finding.code.as_str().to_string(),
            subject: finding.subject.clone(),
            action: repair.action.name().to_string(),
            outcome: label.to_string(),
            idempotency_key: repair.idempotency_key.clone(),
            detail: json!({"repair": repair, "evidence": finding.evidence, "result": detail}),
            undo,
        };
        self.diag.record_audit(entry.clone()).await?;
        Ok(RepairResult {
            code: finding.code,
            subject: finding.subject.clone(),
            action: entry.action,
            outcome: entry.outcome,
            detail,
            audit_id: entry.id,
        })
    }

    async fn run(&self, finding: &Finding, repair: &Repair, now: i64) -> Result<(Outcome, Option<Value>)> {
        Ok(match &repair.action {
            Action::Redrive { run_id, rev } => (self.redrive(run_id, *rev, now).await?, None),
            Action::ReleaseLease { item_id, owner, expires_at, .. } => {
                let done = self.diag.release_lease(item_id, owner, *expires_at).await?;
                let detail = json!({"item": item_id, "owner": owner});
                (
                    if done {
                        Outcome::Applied(detail)
                    } else {
                        Outcome::Noop(json!({"already": "released or re-leased", "item": item_id}))
                    },
                    None,
                )
            }
            Action::ReleaseGuard { key, run_id } => {
                let done = self.diag.release_guard(key, run_id).await?;
                (
                    if done {
                        Outcome::Applied(json!({"key": key}))
                    } else {
                        Outcome::Noop(json!({"already": "released"}))
                    },
                    None,
                )
            }
            Action::DeleteClaim { redis, key, value } => {
                let ttl = finding.evidence["ttl_ms"].as_i64().unwrap_or(-1);
                let (url, k, v) = (redis.clone(), key.clone(), value.clone());
                let deleted = tokio::task::spawn_blocking(move || crate::claims::delete_if_value(&url, &k, &v))
                    .await
                    .map_err(|e| DoctorError::Engine(e.to_string()))?
                    .map_err(|e| DoctorError::ClaimSource { source_name: redis.clone(), message: e })?;
                let undo = json!({"restore_claim": {"redis": redis, "key": key, "value": value, "ttl_ms": ttl}});
                if deleted {
                    (Outcome::Applied(json!({"deleted": key, "value": value, "ttl_ms": ttl})), Some(undo))
                } else {
                    (Outcome::Noop(json!({"already": "deleted or changed", "key": key})), None)
                }
            }
            Action::ReemitEvent { event_id, source_run_id } => {
                (self.reemit(event_id, source_run_id.clone(), now).await?, None)
            }
            Action::EmitFinishEvents { run_id, missing } => (self.emit_finish(run_id, missing, now).await?, None),
            Action::CancelRun { run_id } => (self.cancel(run_id).await?, None),
            Action::ResyncApp { app_id, url } => (self.resync(app_id, url).await?, None),
            Action::Acknowledge => (Outcome::Applied(json!({"acknowledged": finding.subject})), None),
        })
    }

    async fn redrive(&self, run_id: &str, rev: i64, now: i64) -> Result<Outcome> {
        let Some(run) = self.store.get_run(run_id).await? else {
            return Ok(Outcome::Noop(json!({"run": "absent"})));
        };
        if run.status.is_terminal() || run.rev != rev {
            return Ok(Outcome::Noop(
                json!({"run_changed": {"status": run.status.as_str(), "rev": run.rev, "expected_rev": rev}}),
            ));
        }
        // One id per (run, rev): two doctors re-driving the same state queue one call.
        let mut item = discovery_item(run_id, now, 0);
        item.id = format!("{run_id}:d:doctor-{rev}");
        let id = item.id.clone();
        self.store.commit(Commit { run_id: run_id.to_string(), enqueue: vec![item], ..Default::default() }).await?;
        Ok(Outcome::Applied(json!({"queued": id, "status": run.status.as_str()})))
    }

    async fn reemit(&self, event_id: &str, source_run_id: Option<String>, now: i64) -> Result<Outcome> {
        let Some(original) = self.store.get_event(event_id).await? else {
            return Ok(Outcome::Failed(json!({"event": "absent"})));
        };
        let engine = self.engine().await?;
        let id = deterministic_ulid(original.received_at, &format!("reemit:{event_id}"));
        let mut event = original.event.clone();
        // The client id would make it a duplicate of the original; the deterministic id dedups instead.
        event.id = String::new();
        let item = ingest_item(&engine.registry, event, id, now, source_run_id.or(original.source_run_id.clone()));
        let outcome = self.store.ingest(vec![item]).await?.remove(0);
        let detail = json!({"original": event_id, "reemitted_as": outcome.event_id, "runs": outcome.run_ids,
                            "skipped_runs": outcome.skipped_runs});
        Ok(if outcome.duplicate { Outcome::Noop(detail) } else { Outcome::Applied(detail) })
    }

    async fn emit_finish(&self, run_id: &str, missing: &[String], now: i64) -> Result<Outcome> {
        let Some(run) = self.store.get_run(run_id).await? else {
            return Ok(Outcome::Failed(json!({"run": "absent"})));
        };
        let outcome = match run.status {
            RunStatus::Completed => {
                FinishOutcome::Finished(Finish::Completed(run.output.clone().unwrap_or(Value::Null)))
            }
            RunStatus::Failed => FinishOutcome::Finished(Finish::Failed(run.error.clone().unwrap_or(Value::Null))),
            RunStatus::Cancelled => FinishOutcome::Cancelled,
            other => return Ok(Outcome::Noop(json!({"run_not_ended": other.as_str()}))),
        };
        let engine = self.engine().await?;
        let trigger: Vec<Value> =
            self.store.get_events(&run.event_ids).await?.into_iter().map(|e| e.event.to_sdk_json(&e.id)).collect();
        let at = run.ended_at.unwrap_or(now);
        let items: Vec<_> = finish_events(&engine.registry, &run, &trigger, &outcome, now)
            .into_iter()
            .filter(|i| missing.contains(&i.record.event.name))
            .map(|i| {
                let name = i.record.event.name.clone();
                let id = if name == FUNCTION_FAILED {
                    run.id.parse().unwrap_or_else(|_| deterministic_ulid(at, &format!("finish:{}:{name}", run.id)))
                } else {
                    deterministic_ulid(at, &format!("finish:{}:{name}", run.id))
                };
                ingest_item(&engine.registry, i.record.event, id, now, Some(run.id.clone()))
            })
            .collect();
        let outcomes = self.store.ingest(items).await?;
        let detail = json!({"emitted": outcomes.iter().map(|o| json!({"event_id": o.event_id, "duplicate": o.duplicate,
                                                                       "runs": o.run_ids})).collect::<Vec<_>>()});
        Ok(if outcomes.iter().all(|o| o.duplicate) { Outcome::Noop(detail) } else { Outcome::Applied(detail) })
    }

    async fn cancel(&self, run_id: &str) -> Result<Outcome> {
        if let Some(api) = &self.api {
            let resp = api
                .request(reqwest::Method::DELETE, &format!("/v1/runs/{run_id}"))
                .send()
                .await
                .map_err(|e| DoctorError::Engine(format!("cancel through {}: {e}", api.url)))?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Ok(match status {
                200..=299 => Outcome::Applied(json!({"via": "api", "run": body["data"]})),
                409 => Outcome::Noop(json!({"via": "api", "already": "ended"})),
                _ => Outcome::Failed(json!({"via": "api", "status": status, "body": body})),
            });
        }
        match self.engine().await?.cancel_run(run_id).await {
            Ok(()) => Ok(Outcome::Applied(json!({"via": "store", "cancelled": run_id}))),
            Err(EngineError::RunEnded(_)) => Ok(Outcome::Noop(json!({"via": "store", "already": "ended"}))),
            Err(EngineError::RunNotFound(_)) => Ok(Outcome::Noop(json!({"via": "store", "run": "absent"}))),
            Err(e) => Err(DoctorError::Engine(e.to_string())),
        }
    }

    async fn resync(&self, app_id: &str, url: &str) -> Result<Outcome> {
        let Some(api) = &self.api else {
            return Ok(Outcome::Failed(
                json!({"error": "re-syncing needs the running sluice: start it, or pass --api URL"}),
            ));
        };
        let resp = api
            .request(reqwest::Method::POST, "/v1/apps/sync")
            .json(&json!({"url": url}))
            .send()
            .await
            .map_err(|e| DoctorError::Engine(format!("sync through {}: {e}", api.url)))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        Ok(if (200..300).contains(&status) {
            Outcome::Applied(json!({"app": app_id, "synced": url}))
        } else {
            Outcome::Failed(json!({"app": app_id, "status": status, "error": body["error"], "code": body["code"]}))
        })
    }

    /// Undo an applied repair recorded in the audit log, where it can be undone.
    pub async fn undo(&self, audit_id: &str, now: i64) -> Result<Value> {
        let entry = self
            .diag
            .list_audit(usize::MAX)
            .await?
            .into_iter()
            .find(|e| e.id == audit_id)
            .ok_or_else(|| DoctorError::AuditNotFound(audit_id.to_string()))?;
        let Some(undo) = entry.undo.clone().filter(|_| entry.outcome == "applied") else {
            return Err(DoctorError::NotReversible(audit_id.to_string()));
        };
        let claim = &undo["restore_claim"];
        let (Some(url), Some(key), Some(value)) =
            (claim["redis"].as_str(), claim["key"].as_str(), claim["value"].as_str())
        else {
            return Err(DoctorError::NotReversible(audit_id.to_string()));
        };
        let ttl = claim["ttl_ms"].as_i64().unwrap_or(-1);
        let (u, k, v) = (url.to_string(), key.to_string(), value.to_string());
        let restored = tokio::task::spawn_blocking(move || crate::claims::restore(&u, &k, &v, ttl))
            .await
            .map_err(|e| DoctorError::Engine(e.to_string()))?
            .map_err(|e| DoctorError::ClaimSource { source_name: url.to_string(), message: e })?;
        let result = json!({"undid": audit_id, "key": key, "restored": restored});
        self.diag
            .record_audit(AuditEntry {
                id: ulid::Ulid::new().to_string(),
                at: now,
                actor: self.actor.clone(),
                command: self.command.clone(),
                finding_code: entry.finding_code.clone(),
                subject: entry.subject.clone(),
                action: "undo".into(),
                outcome: if restored { "applied" } else { "noop" }.into(),
                idempotency_key: format!("undo:{audit_id}"),
                detail: result.clone(),
                undo: None,
            })
            .await?;
        Ok(result)
    }
}
