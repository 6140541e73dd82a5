//! App sync: sluice `PUT`s an SDK URL; the SDK registers (out of band, `POST /fn/register`) or
//! answers with its definition (in band). Apps that stop answering are re-synced every few
//! seconds, and their parked runs resume as soon as they answer again.

use std::sync::Arc;

use sluice_protocol::deployment::DeploymentStatus;
use sluice_protocol::function::RegisterRequest;
use sluice_protocol::sync_url::{normalize_app_url, strip_deploy_id};
use sluice_store::{AppRecord, AppStatus, FunctionRecord};

use crate::error::EngineError;
use crate::registry::config_hash;
use crate::Engine;

#[derive(Debug, Clone, serde::Serialize)]
pub struct RegisterReply {
    pub app_id: String,
    pub modified: bool,
    pub function_count: usize,
    pub deployment_id: String,
    pub deployment_status: String,
    /// Functions added, removed and changed against the current deployment.
    pub diff: crate::deployments::FunctionDiff,
}

/// Apply a register body. Everything is validated and compiled before anything is stored, so a
/// bad sync leaves the previous configuration in place.
pub async fn register(engine: &Arc<Engine>, req: RegisterRequest) -> Result<RegisterReply, EngineError> {
    req.validate()?;
    // This build speaks plain HTTP to SDKs (TLS is terminated in front of the worker); refuse an
    // https step URL at sync, with a reason, rather than park every run of it as unreachable later.
    if let Some(f) = req.functions.iter().find(|f| f.step_url().is_some_and(|u| u.starts_with("https://"))) {
        return Err(sluice_protocol::ProtocolError::InvalidFunction {
            function: f.id.clone(),
            reason: "https SDK URLs are not supported by this build: serve the worker over http to sluice \
                     (terminate TLS in front of it)"
                .into(),
        }
        .into());
    }
    let now = engine.now();
    let mut compiled = Vec::with_capacity(req.functions.len());
    for f in &req.functions {
        compiled.push(engine.registry.compile(FunctionRecord {
            id: f.id.clone(),
            app_id: req.app_name.clone(),
            name: f.display_name().to_string(),
            config: f.clone(),
            updated_at: now,
        })?);
    }
    let url = if req.url.is_empty() {
        req.functions
            .first()
            .and_then(|f| f.step_url())
            .and_then(|u| {
                let mut u = url::Url::parse(u).ok()?;
                u.set_query(None);
                Some(u.to_string())
            })
            .unwrap_or_default()
    } else {
        req.url.clone()
    };
    let app = AppRecord {
        id: req.app_name.clone(),
        normalized_url: normalize_app_url(&url),
        url: strip_deploy_id(&url),
        framework: req.framework.clone(),
        sdk: req.sdk.clone(),
        deploy_id: req.deploy_id.clone(),
        app_version: req.app_version.clone(),
        config_hash: config_hash(&req.functions),
        status: AppStatus::Synced,
        last_error: None,
        synced_at: Some(now),
        updated_at: now,
    };
    let deployment = crate::deployments::record_sync(engine, &app, &req.functions).await?;
    let activated = deployment.record.status == DeploymentStatus::Current;
    let mut modified = deployment.modified;
    if activated {
        let was_unreachable = engine.registry.app(&app.id).is_some_and(|a| a.status == AppStatus::Unreachable);
        let records = compiled.iter().map(|c| c.record.clone()).collect();
        modified |= engine.store.upsert_app(app.clone(), records).await?;
        engine.registry.install_app(app.clone(), compiled);
        let current: Vec<_> = engine.registry.functions().into_iter().filter(|f| f.record.app_id == app.id).collect();
        crate::cron::ensure_items(engine, &current).await?;
        // A sync is proof of life: parked runs resume.
        let resumed = engine.store.unpark_app(&app.id, now).await?;
        if was_unreachable || resumed > 0 {
            tracing::info!(app = %app.id, resumed, "app answered again; parked runs resume");
            engine.notify_work();
        }
    }
    tracing::info!(app = %app.id, url = %app.url, deployment = %deployment.record.id,
        status = deployment.record.status.as_str(), functions = req.functions.len(), modified, "app synced");
    let reply = RegisterReply {
        app_id: app.id,
        modified,
        function_count: req.functions.len(),
        deployment_id: deployment.record.id.clone(),
        deployment_status: deployment.record.status.as_str().to_string(),
        diff: deployment.diff,
    };
    engine.recent_syncs.lock().unwrap().insert(app.normalized_url.clone(), (reply.clone(), now));
    Ok(reply)
}

/// The app answered a call or a probe: mark it reachable and resume its parked runs.
pub async fn app_answered(engine: &Arc<Engine>, mut app: AppRecord) -> Result<(), EngineError> {
    let now = engine.now();
    engine.store.set_app_status(&app.id, AppStatus::Synced, None, now).await?;
    app.status = AppStatus::Synced;
    app.last_error = None;
    engine.registry.set_app(app.clone());
    let resumed = engine.store.unpark_app(&app.id, now).await?;
    tracing::info!(app = %app.id, resumed, "app reachable again");
    engine.notify_work();
    Ok(())
}

/// Ask the SDK at `url` to sync. Returns once the app is registered (in band or out of band).
pub async fn sync_url(engine: &Arc<Engine>, url: &str) -> Result<RegisterReply, EngineError> {
    let started = engine.now();
    let target = strip_deploy_id(url);
    let resp =
        engine.client.sync_put(url).await.map_err(|u| EngineError::Unreachable { url: target.clone(), reason: u.0 })?;
    let failed = |reason: String| EngineError::SyncFailed { url: target.clone(), reason };
    if resp.header("x-inngest-sync-kind") == Some("in_band") && resp.status == 200 {
        engine.client.verify_answer(&resp).map_err(failed)?;
        let mut req = RegisterRequest::parse(&resp.body)?;
        if req.url.is_empty() {
            req.url = url.to_string();
        }
        return register(engine, req).await;
    }
    if resp.status == 401 {
        return Err(sluice_protocol::ProtocolError::InvalidSignature(format!(
            "the SDK at {target} refused sluice's signature (HTTP 401): the signing keys differ"
        ))
        .into());
    }
    if !(200..300).contains(&resp.status) {
        return Err(failed(format!(
            "HTTP {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body).chars().take(300).collect::<String>()
        )));
    }
    // Out of band: the SDK has called /fn/register before answering. Python passes our register
    // reply through with a 200 even when we refused it, so check what was registered, not the status.
    let wanted = normalize_app_url(url);
    let recent = engine.recent_syncs.lock().unwrap().get(&wanted).cloned();
    if let Some((reply, _)) = recent.filter(|(_, at)| *at >= started) {
        return Ok(reply);
    }
    // The register may have reached another node sharing the database: look for what it recorded.
    let prefix = format!("{wanted}|");
    let recorded = engine
        .store
        .list_deployments(None)
        .await?
        .into_iter()
        .rev()
        .find(|d| d.identity.starts_with(&prefix) && d.updated_at >= started);
    match recorded {
        Some(d) => Ok(RegisterReply {
            app_id: d.app_id.clone(),
            modified: true,
            function_count: d.functions.len(),
            deployment_id: d.id.clone(),
            deployment_status: d.status.as_str().to_string(),
            diff: Default::default(),
        }),
        None => Err(failed(format!(
            "the SDK answered the sync without registering: {}",
            String::from_utf8_lossy(&resp.body).chars().take(300).collect::<String>()
        ))),
    }
}

impl Engine {
    /// Sync `url` now and keep re-syncing it while it is not registered or unreachable (dev `-u`).
    pub fn watch_url(&self, url: &str) {
        let mut urls = self.watched_urls.lock().unwrap();
        if !urls.iter().any(|u| u == url) {
            urls.push(url.to_string());
        }
    }
}

pub(crate) async fn run_resync_loop(engine: Arc<Engine>) {
    loop {
        let watched = engine.watched_urls.lock().unwrap().clone();
        for url in watched {
            let normalized = normalize_app_url(&url);
            let healthy =
                engine.registry.apps().iter().any(|a| a.normalized_url == normalized && a.status == AppStatus::Synced);
            if !healthy {
                match sync_url(&engine, &url).await {
                    Ok(r) => tracing::info!(%url, app = %r.app_id, "synced"),
                    Err(e) => tracing::debug!(%url, code = e.code(), error = %e, "sync attempt failed"),
                }
            }
        }
        for app in engine.registry.apps() {
            if app.status != AppStatus::Unreachable || app.url.is_empty() {
                continue;
            }
            if engine.client.introspect(&app.url).await.is_ok() {
                match sync_url(&engine, &app.url).await {
                    Ok(_) => {}
                    Err(_) => {
                        if let Err(e) = app_answered(&engine, app).await {
                            tracing::warn!(error = %e, "marking app reachable failed");
                        }
                    }
                }
            }
        }
        tokio::time::sleep(engine.config.resync_interval).await;
    }
}

impl Engine {
    pub fn watched_urls(&self) -> Vec<String> {
        self.watched_urls.lock().unwrap().clone()
    }
}
