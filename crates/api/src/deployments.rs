//! Deployment routes: what `sluice deploy` drives (stage, probe, cutover, drain, rollback) and
//! what the bake gate watches (`/v1/stats`).

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_engine::deployments::{self, Load};
use sluice_engine::registry::RoutingPolicy;
use sluice_engine::EngineError;
use sluice_protocol::deployment::DeploymentStatus;
use sluice_protocol::run::RunStatus;
use sluice_store::{DeploymentRecord, RunFilter};

use crate::auth::{check_bearer, read_body};
use crate::error::ApiError;
use crate::{views, AppState};

type ApiResult = Result<Json<Value>, ApiError>;

fn view(d: &DeploymentRecord, load: Option<&Load>, current: bool) -> Value {
    json!({
        "id": d.id,
        "app_id": d.app_id,
        "url": d.url,
        "deploy_id": d.deploy_id,
        "app_version": d.app_version,
        "config_hash": d.config_hash,
        "status": d.status.as_str(),
        "current": current,
        "functions": d.functions.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
        "created_at": sluice_protocol::duration::format_rfc3339_ms(d.created_at),
        "activated_at": d.activated_at.map(sluice_protocol::duration::format_rfc3339_ms),
        "in_flight_runs": load.map(|l| l.in_flight_runs),
        "in_flight_calls": load.map(|l| l.in_flight_calls),
    })
}

fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

async fn body_json(state: &AppState, request: Request) -> Result<Value, ApiError> {
    let body = read_body(&state.config, request.into_body()).await?;
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&body).map_err(|e| bad_request("SLUICE-1001", format!("malformed JSON: {e}")))
}

#[derive(Deserialize)]
pub struct ListQuery {
    app_id: Option<String>,
}

pub async fn list(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<ListQuery>) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let engine = &state.engine;
    let mut out = Vec::new();
    for d in engine.store.list_deployments(q.app_id.as_deref()).await? {
        let current = engine.registry.current_deployment(&d.app_id).as_deref() == Some(d.id.as_str());
        let load = deployments::load(engine, &d).await?;
        out.push(view(&d, Some(&load), current));
    }
    Ok(Json(views::wrap(Value::Array(out), engine.now())))
}

pub async fn get(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let engine = &state.engine;
    let d = engine.store.get_deployment(&id).await?.ok_or_else(|| EngineError::DeploymentNotFound(id.clone()))?;
    let current = engine.registry.current_deployment(&d.app_id).as_deref() == Some(d.id.as_str());
    let load = deployments::load(engine, &d).await?;
    let mut v = view(&d, Some(&load), current);
    v["in_flight_run_ids"] = json!(load.run_ids.iter().take(20).collect::<Vec<_>>());
    Ok(Json(views::wrap(v, engine.now())))
}

/// Cutover (`previous_status: draining`, the default) or rollback (`rolled_back`).
pub async fn activate(State(state): State<AppState>, Path(id): Path<String>, request: Request) -> ApiResult {
    check_bearer(&state.config, request.headers())?;
    let body = body_json(&state, request).await?;
    let previous_status = match body["previous_status"].as_str() {
        None => DeploymentStatus::Draining,
        Some(s) => {
            DeploymentStatus::parse(s).ok_or_else(|| bad_request("SLUICE-4002", format!("unknown status {s:?}")))?
        }
    };
    let engine = &state.engine;
    let d = engine.store.get_deployment(&id).await?.ok_or_else(|| EngineError::DeploymentNotFound(id.clone()))?;
    if !d.status.can_become(DeploymentStatus::Current) {
        return Err(EngineError::IllegalDeploymentMove {
            id: id.clone(),
            from: d.status.as_str().into(),
            to: "current".into(),
        }
        .into());
    }
    let previous = deployments::activate_deployment(engine, &d.app_id, &id, previous_status).await?;
    Ok(Json(views::wrap(json!({ "id": id, "previous": previous }), engine.now())))
}

pub async fn set_status(State(state): State<AppState>, Path(id): Path<String>, request: Request) -> ApiResult {
    check_bearer(&state.config, request.headers())?;
    let body = body_json(&state, request).await?;
    let engine = &state.engine;
    let to = body["status"].as_str().and_then(DeploymentStatus::parse).ok_or_else(|| {
        bad_request(
            "SLUICE-4002",
            "body must be {\"status\": registered|warming|probed|draining|drained|retired|rolled_back}",
        )
    })?;
    let d = engine.store.get_deployment(&id).await?.ok_or_else(|| EngineError::DeploymentNotFound(id.clone()))?;
    if to == DeploymentStatus::Current || !d.status.can_become(to) {
        return Err(
            EngineError::IllegalDeploymentMove { id, from: d.status.as_str().into(), to: to.as_str().into() }.into()
        );
    }
    deployments::set_status(engine, &id, to).await?;
    Ok(Json(views::wrap(json!({ "id": id, "status": to.as_str() }), engine.now())))
}

pub async fn probe(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let started = deployments::probe(&state.engine, &id).await?;
    Ok(Json(views::wrap(serde_json::to_value(started).unwrap_or(Value::Null), state.engine.now())))
}

pub async fn set_routing(State(state): State<AppState>, Path(app_id): Path<String>, request: Request) -> ApiResult {
    check_bearer(&state.config, request.headers())?;
    let body = body_json(&state, request).await?;
    let policy: RoutingPolicy = serde_json::from_value(body["policy"].clone())
        .map_err(|_| bad_request("SLUICE-4002", "body must be {\"policy\": \"pinned\" | \"auto-upgrade\"}"))?;
    let name = serde_json::to_value(policy).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    state.engine.store.set_routing_policy(&app_id, &name, state.engine.now()).await?;
    state.engine.registry.set_policy(&app_id, policy);
    Ok(Json(views::wrap(json!({ "app_id": app_id, "policy": policy }), state.engine.now())))
}

#[derive(Deserialize)]
pub struct StatsQuery {
    /// Unix ms: count runs created at or after this.
    since: Option<i64>,
    /// A Running run with no change for this many ms counts as stale (default 10 minutes).
    stale_after_ms: Option<i64>,
    app_id: Option<String>,
}

/// What the bake gate compares against its pre-deploy baseline.
pub async fn stats(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<StatsQuery>) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let engine = &state.engine;
    let now = engine.now();
    let since = q.since.unwrap_or(0);
    let stale_after = q.stale_after_ms.unwrap_or(600_000);
    let runs =
        engine.store.list_runs(RunFilter { app_id: q.app_id.clone(), limit: 100_000, ..Default::default() }).await?;
    let recent: Vec<_> = runs.iter().filter(|r| r.created_at >= since).collect();
    let count = |s: RunStatus| recent.iter().filter(|r| r.status == s).count();
    let stale = runs.iter().filter(|r| r.status == RunStatus::Running && now - r.updated_at > stale_after).count();
    let paused = runs.iter().filter(|r| r.status == RunStatus::PausedUnreachable).count();
    let unreachable_apps: Vec<_> = engine
        .registry
        .apps()
        .into_iter()
        .filter(|a| a.status == sluice_store::AppStatus::Unreachable)
        .map(|a| a.id)
        .collect();
    Ok(Json(views::wrap(
        json!({
            "since": since,
            "runs_created": recent.len(),
            "runs_completed": count(RunStatus::Completed),
            "runs_failed": count(RunStatus::Failed),
            "runs_cancelled": count(RunStatus::Cancelled),
            "runs_running": runs.iter().filter(|r| matches!(r.status, RunStatus::Running | RunStatus::Queued)).count(),
            "stale_running": stale,
            "paused_unreachable": paused,
            "unreachable_apps": unreachable_apps,
        }),
        now,
    )))
}
