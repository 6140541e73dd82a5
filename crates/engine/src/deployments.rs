//! Deployments on the engine side: every sync is recorded as a deployment of its app; a new one
//! becomes current unless it was staged by `sluice deploy` (which activates it at cutover).
//! Runs are pinned to the deployment current when they were created; a pinned deployment that
//! stops answering hands its runs to the current one after a grace period.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};
use sluice_protocol::deployment::DeploymentStatus;
use sluice_protocol::event::Event;
use sluice_protocol::function::FunctionConfig;
use sluice_store::{AppRecord, DeploymentRecord, RunFilter, RunRecord};

use crate::error::EngineError;
use crate::registry::DeploymentView;
use crate::Engine;

/// `deployId` prefix of a staging sync's PUT: a register carrying it is recorded, not activated.
pub const STAGED_DEPLOY_PREFIX: &str = "sluice-staged-";

/// The event name that triggers a deploy callback-probe function.
pub const PROBE_EVENT: &str = "sluice/deploy.probe";

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FunctionDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

pub fn diff(current: &[FunctionConfig], next: &[FunctionConfig]) -> FunctionDiff {
    let a: BTreeMap<_, _> = current.iter().map(|f| (f.id.as_str(), f)).collect();
    let b: BTreeMap<_, _> = next.iter().map(|f| (f.id.as_str(), f)).collect();
    let strip = |f: &FunctionConfig| {
        // The runtime URL differs between deployments by design; compare everything else.
        let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
        if let Some(steps) = v.get_mut("steps").and_then(Value::as_object_mut) {
            for s in steps.values_mut() {
                if let Some(rt) = s.get_mut("runtime").and_then(Value::as_object_mut) {
                    rt.remove("url");
                }
            }
        }
        v
    };
    FunctionDiff {
        added: b.keys().filter(|k| !a.contains_key(*k)).map(|k| k.to_string()).collect(),
        removed: a.keys().filter(|k| !b.contains_key(*k)).map(|k| k.to_string()).collect(),
        changed: b
            .iter()
            .filter(|(k, f)| a.get(*k).is_some_and(|old| strip(old) != strip(f)))
            .map(|(k, _)| k.to_string())
            .collect(),
    }
}

pub struct SyncedDeployment {
    pub record: DeploymentRecord,
    pub diff: FunctionDiff,
    pub modified: bool,
}

/// What makes two syncs the same deployment: where it runs and which version it says it is.
pub fn identity(app: &AppRecord) -> String {
    format!("{}|{}", app.normalized_url, app.app_version.as_deref().unwrap_or(""))
}

/// Record a sync as a deployment and decide whether it becomes current.
pub async fn record_sync(
    engine: &Arc<Engine>,
    app: &AppRecord,
    functions: &[FunctionConfig],
) -> Result<SyncedDeployment, EngineError> {
    // One at a time: two registers of one app at once (the SDK's own register racing a sync)
    // would both miss `find_deployment` and create two deployments for one identity. (Across
    // nodes this needs a unique (app_id, identity) in the store.)
    static RECORDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = RECORDING.lock().await;
    let now = engine.now();
    let identity = identity(app);
    let current = engine.registry.current_deployment(&app.id).and_then(|id| engine.registry.deployment(&id));
    let diff = diff(current.as_ref().map(|c| c.record.functions.as_slice()).unwrap_or(&[]), functions);
    // Staged by this node (in-band sync), or by any node: the staging PUT carries a `deployId` the
    // SDK repeats on its register call, whichever node that call reaches.
    let staged = engine.staged_urls.lock().unwrap().contains(&app.normalized_url)
        || app.deploy_id.as_deref().is_some_and(|d| d.starts_with(STAGED_DEPLOY_PREFIX));
    let existing = engine.store.find_deployment(&app.id, &identity).await?;
    let hash = crate::registry::config_hash(functions);
    let (mut record, modified) = match existing {
        Some(mut d) => {
            let modified = d.config_hash != hash;
            d.url = app.url.clone();
            d.deploy_id = app.deploy_id.clone().or(d.deploy_id);
            d.config_hash = hash;
            d.functions = functions.to_vec();
            d.updated_at = now;
            (d, modified)
        }
        None => (
            DeploymentRecord {
                id: ulid::Ulid::new().to_string(),
                app_id: app.id.clone(),
                url: app.url.clone(),
                identity,
                deploy_id: app.deploy_id.clone(),
                app_version: app.app_version.clone(),
                config_hash: hash,
                functions: functions.to_vec(),
                status: DeploymentStatus::Registered,
                created_at: now,
                updated_at: now,
                activated_at: None,
            },
            true,
        ),
    };
    engine.store.put_deployment(record.clone()).await?;
    // A plain sync activates a new (or still current) deployment; a staged one waits for cutover;
    // a draining, drained, rolled-back or retired one re-syncing (its worker is still up) never
    // takes traffic back on its own.
    let activate = !staged && matches!(record.status, DeploymentStatus::Registered | DeploymentStatus::Current);
    if activate && record.status != DeploymentStatus::Current {
        activate_deployment(engine, &app.id, &record.id, DeploymentStatus::Draining).await?;
        record.status = DeploymentStatus::Current;
        record.activated_at = Some(now);
    } else {
        engine.registry.put_deployment(record.clone());
    }
    Ok(SyncedDeployment { record, diff, modified })
}

/// Make `id` current (cutover, or rollback with `previous_status = RolledBack`).
pub async fn activate_deployment(
    engine: &Arc<Engine>,
    app_id: &str,
    id: &str,
    previous_status: DeploymentStatus,
) -> Result<Option<String>, EngineError> {
    let now = engine.now();
    let previous = engine.store.activate_deployment(app_id, id, previous_status, now).await?;
    for dep in [Some(id.to_string()), previous.clone()].into_iter().flatten() {
        if let Some(d) = engine.store.get_deployment(&dep).await? {
            engine.registry.put_deployment(d);
        }
    }
    // The app's current function set (trigger matching) follows the current deployment.
    if let Some(d) = engine.registry.deployment(id) {
        let mut app = engine.registry.app(app_id).unwrap_or_else(|| AppRecord {
            id: app_id.to_string(),
            url: d.record.url.clone(),
            normalized_url: sluice_protocol::sync_url::normalize_app_url(&d.record.url),
            framework: None,
            sdk: None,
            deploy_id: None,
            app_version: None,
            config_hash: String::new(),
            status: sluice_store::AppStatus::Synced,
            last_error: None,
            synced_at: Some(now),
            updated_at: now,
        });
        app.url = d.record.url.clone();
        app.normalized_url = sluice_protocol::sync_url::normalize_app_url(&d.record.url);
        app.config_hash = d.record.config_hash.clone();
        app.deploy_id = d.record.deploy_id.clone();
        app.app_version = d.record.app_version.clone();
        app.updated_at = now;
        let mut compiled = Vec::new();
        let mut records = Vec::new();
        for f in &d.record.functions {
            let record = sluice_store::FunctionRecord {
                id: f.id.clone(),
                app_id: app_id.to_string(),
                name: f.display_name().to_string(),
                config: f.clone(),
                updated_at: now,
            };
            records.push(record.clone());
            compiled.push(engine.registry.compile(record)?);
        }
        engine.store.upsert_app(app.clone(), records).await?;
        engine.registry.install_app(app.clone(), compiled);
        let current: Vec<_> = engine.registry.functions().into_iter().filter(|f| f.record.app_id == app.id).collect();
        crate::cron::ensure_items(engine, &current).await?;
    }
    // Re-sync follows the current deployment; the replaced one is no longer re-synced.
    if let Some(d) = engine.registry.deployment(id) {
        engine.watch_url(&d.record.url);
    }
    if let Some(prev) = previous.as_deref().and_then(|p| engine.registry.deployment(p)) {
        let prev_url = sluice_protocol::sync_url::normalize_app_url(&prev.record.url);
        engine.watched_urls.lock().unwrap().retain(|u| sluice_protocol::sync_url::normalize_app_url(u) != prev_url);
    }
    tracing::info!(app = %app_id, deployment = %id, previous = ?previous, "deployment activated");
    engine.notify_work();
    Ok(previous)
}

pub async fn set_status(engine: &Arc<Engine>, id: &str, status: DeploymentStatus) -> Result<(), EngineError> {
    engine.store.set_deployment_status(id, status, engine.now()).await?;
    if let Some(d) = engine.store.get_deployment(id).await? {
        engine.registry.put_deployment(d);
    }
    Ok(())
}

/// Runs and calls still on a deployment: what drain waits for.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub in_flight_runs: usize,
    pub in_flight_calls: usize,
    pub run_ids: Vec<String>,
}

pub async fn load(engine: &Engine, deployment: &DeploymentRecord) -> Result<Load, EngineError> {
    let now = engine.now();
    let is_current = engine.registry.current_deployment(&deployment.app_id).as_deref() == Some(&deployment.id);
    let mut runs = Vec::new();
    for status in [
        sluice_protocol::run::RunStatus::Queued,
        sluice_protocol::run::RunStatus::Running,
        sluice_protocol::run::RunStatus::PausedUnreachable,
    ] {
        let filter = RunFilter {
            status: Some(status),
            app_id: Some(deployment.app_id.clone()),
            limit: 100_000,
            ..Default::default()
        };
        runs.extend(engine.store.list_runs(filter).await?);
    }
    let pinned: Vec<RunRecord> = runs
        .into_iter()
        .filter(|r| match r.state.deployment_id.as_deref() {
            Some(d) => d == deployment.id,
            None => is_current,
        })
        .collect();
    let mut calls = 0;
    for r in &pinned {
        calls += engine
            .store
            .items_for_run(&r.id)
            .await?
            .iter()
            .filter(|i| i.kind == sluice_store::ItemKind::Call && i.lease_expires_at.is_some_and(|t| t > now))
            .count();
    }
    Ok(Load {
        in_flight_runs: pinned.len(),
        in_flight_calls: calls,
        run_ids: pinned.iter().map(|r| r.id.clone()).collect(),
    })
}

/// The callback probe: a synthetic run of the deployment's probe function (triggered by
/// `sluice/deploy.probe`), pinned to that deployment only, run end to end through finalization.
/// Without a probe function, a signed trust probe plus an introspection call stand in.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ProbeStart {
    Function { run_id: String, event_id: String, function_id: String },
    Trust { ok: bool, function_count: Option<u64>, detail: String },
}

pub async fn probe(engine: &Arc<Engine>, deployment_id: &str) -> Result<ProbeStart, EngineError> {
    let dep = match engine.registry.deployment(deployment_id) {
        Some(d) => d,
        None => {
            let d = engine
                .store
                .get_deployment(deployment_id)
                .await?
                .ok_or_else(|| EngineError::DeploymentNotFound(deployment_id.to_string()))?;
            engine.registry.put_deployment(d);
            engine.registry.deployment(deployment_id).expect("just inserted")
        }
    };
    let probe_fn = dep
        .record
        .functions
        .iter()
        .find(|f| f.triggers.iter().any(|t| t.event.as_deref() == Some(PROBE_EVENT)))
        .cloned();
    match probe_fn {
        Some(f) => start_probe_run(engine, &dep, &f).await,
        None => trust_probe(engine, &dep).await,
    }
}

async fn start_probe_run(
    engine: &Arc<Engine>,
    dep: &DeploymentView,
    f: &FunctionConfig,
) -> Result<ProbeStart, EngineError> {
    let now = engine.now();
    let event_id = ulid::Ulid::new();
    let event = Event {
        name: PROBE_EVENT.into(),
        data: json!({ "deployment_id": dep.record.id, "synthetic": true }),
        id: String::new(),
        ts: now,
        user: json!({}),
        v: None,
    };
    let mut item = crate::ingest::ingest_item(&engine.registry, event, event_id, now, None);
    // Only this deployment's probe function runs: not whatever the current deployment matches.
    let probe = engine.registry.compile(sluice_store::FunctionRecord {
        id: f.id.clone(),
        app_id: dep.record.app_id.clone(),
        name: f.display_name().to_string(),
        config: f.clone(),
        updated_at: now,
    })?;
    let sdk_event = item.record.event.to_sdk_json(&item.record.id);
    let mut new_run = crate::ingest::new_run(&engine.registry, &probe, &sdk_event, &item.record.id, now);
    new_run.run.state.max_attempts = 1;
    new_run.run.state.deployment_id = Some(dep.record.id.clone());
    let run_id = new_run.run.id.clone();
    item.runs = vec![new_run];
    engine.store.ingest(vec![item]).await?;
    engine.notify_work();
    Ok(ProbeStart::Function { run_id, event_id: event_id.to_string(), function_id: f.id.clone() })
}

async fn trust_probe(engine: &Arc<Engine>, dep: &DeploymentView) -> Result<ProbeStart, EngineError> {
    let url = &dep.record.url;
    let sep = if url.contains('?') { '&' } else { '?' };
    let trust = engine.client.trust_probe(&format!("{url}{sep}probe=trust")).await;
    let intro = engine.client.introspect(url).await;
    let function_count = intro
        .as_ref()
        .ok()
        .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .and_then(|v| v["function_count"].as_u64());
    // In dev mode sluice has no key to sign with, and the JS SDK refuses an unsigned trust probe
    // with 401 (observed, inngest 4.24.0): there the probe can only show the URL answers as an SDK.
    let unsigned_refusal = engine.config.signing_keys.is_empty() && matches!(&trust, Ok(r) if r.status == 401);
    let ok =
        (matches!(&trust, Ok(r) if r.status == 200) || unsigned_refusal) && matches!(&intro, Ok(r) if r.status == 200);
    let detail = format!(
        "trust probe: {}; introspection: {}",
        trust.map(|r| format!("HTTP {}", r.status)).unwrap_or_else(|e| e.0),
        intro.map(|r| format!("HTTP {}", r.status)).unwrap_or_else(|e| e.0)
    );
    Ok(ProbeStart::Trust { ok, function_count, detail })
}

impl Engine {
    /// Sync `url` as a staged deployment: registered, but not current until activated.
    pub async fn sync_staged(self: &Arc<Self>, url: &str) -> Result<crate::sync::RegisterReply, EngineError> {
        let key = sluice_protocol::sync_url::normalize_app_url(url);
        let sep = if url.contains('?') { '&' } else { '?' };
        let staged_url = format!("{url}{sep}deployId={STAGED_DEPLOY_PREFIX}{}", ulid::Ulid::new());
        self.staged_urls.lock().unwrap().insert(key.clone());
        let out = crate::sync::sync_url(self, &staged_url).await;
        self.staged_urls.lock().unwrap().remove(&key);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: &str, url: &str, retries: u32) -> FunctionConfig {
        serde_json::from_value(json!({"id": id, "triggers": [{"event": "e"}],
            "steps": {"step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": url}, "retries": {"attempts": retries}}}}))
        .unwrap()
    }

    #[test]
    fn diff_ignores_urls_and_reports_added_removed_changed() {
        let v1 = vec![f("a", "http://v1/a", 1), f("b", "http://v1/b", 1), f("c", "http://v1/c", 1)];
        let v2 = vec![f("a", "http://v2/a", 1), f("b", "http://v2/b", 3), f("d", "http://v2/d", 1)];
        let d = diff(&v1, &v2);
        assert_eq!(d.added, vec!["d"]);
        assert_eq!(d.removed, vec!["c"]);
        assert_eq!(d.changed, vec!["b"]);
    }
}
