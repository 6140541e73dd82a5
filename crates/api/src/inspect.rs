//! Read-only inspection (`/health`, `/dev`, `/v1/...`), the v0 SDK API, and cancel.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sluice_protocol::run::RunStatus;
use sluice_store::RunFilter;

use crate::auth::check_bearer;
use crate::error::ApiError;
use crate::{views, AppState};

type ApiResult = Result<Json<Value>, ApiError>;

pub async fn health(State(state): State<AppState>) -> ApiResult {
    // A store round-trip, so health means "can accept events", not just "process is up".
    state.engine.store.next_due_at().await?;
    Ok(Json(json!({ "status": 200, "message": "OK", "ok": true })))
}

pub async fn dev_info(State(state): State<AppState>) -> ApiResult {
    let engine = &state.engine;
    let functions: Vec<Value> = engine
        .registry
        .functions()
        .iter()
        .map(|f| {
            let cfg = f.config();
            let mut out = Map::new();
            out.insert("id".into(), json!(cfg.id));
            out.insert("slug".into(), json!(cfg.id));
            out.insert("name".into(), json!(cfg.display_name()));
            out.insert("app_id".into(), json!(f.record.app_id));
            out.insert("triggers".into(), json!(cfg.triggers));
            let steps: Vec<Value> = cfg
                .steps
                .iter()
                .map(|(id, s)| {
                    json!({"id": id, "name": s.name, "uri": s.runtime.url,
                           "retries": s.retries.as_ref().map(|r| r.attempts)})
                })
                .collect();
            out.insert("steps".into(), Value::Array(steps));
            for (k, v) in &cfg.extra {
                out.entry(k.clone()).or_insert(v.clone());
            }
            Value::Object(out)
        })
        .collect();
    let handlers: Vec<Value> = engine
        .registry
        .apps()
        .iter()
        .map(|a| {
            let count = engine.registry.functions().iter().filter(|f| f.record.app_id == a.id).count();
            views::app(a, count)
        })
        .collect();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "authed": !state.config.signing_keys.is_empty(),
        "startOpts": { "sdkURLs": engine.watched_urls() },
        "functions": functions,
        "handlers": handlers,
        "isSingleNodeService": state.engine.store.work_signals().is_none(),
        "isMissingSigningKey": state.config.signing_keys.is_empty(),
        "isMissingEventKeys": state.config.event_keys.is_empty(),
        "features": {},
    })))
}

#[derive(Deserialize)]
pub struct EventQuery {
    name: Option<String>,
    limit: Option<usize>,
}

pub async fn list_events(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<EventQuery>) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let events = state.engine.store.list_events(q.name.as_deref(), q.limit.unwrap_or(50).min(1000)).await?;
    let data: Vec<Value> = events.iter().map(views::event).collect();
    Ok(Json(views::wrap(Value::Array(data), state.engine.now())))
}

pub async fn get_event(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let event =
        state.engine.store.get_event(&id).await?.ok_or_else(|| ApiError::not_found(format!("event {id} not found")))?;
    Ok(Json(views::wrap(views::event(&event), state.engine.now())))
}

pub async fn event_runs(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let runs = state.engine.store.runs_for_event(&id).await?;
    let data: Vec<Value> = runs.iter().map(views::run).collect();
    Ok(Json(views::wrap(Value::Array(data), state.engine.now())))
}

#[derive(Deserialize)]
pub struct RunQuery {
    status: Option<String>,
    function_id: Option<String>,
    app_id: Option<String>,
    limit: Option<usize>,
}

pub async fn list_runs(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<RunQuery>) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::new(axum::http::StatusCode::BAD_REQUEST, "SLUICE-4002", format!("unknown run status {s:?}"))
        })?),
    };
    let runs = state
        .engine
        .store
        .list_runs(RunFilter {
            status,
            function_id: q.function_id,
            app_id: q.app_id,
            limit: q.limit.unwrap_or(100).min(10_000),
        })
        .await?;
    let data: Vec<Value> = runs.iter().map(views::run).collect();
    Ok(Json(views::wrap(Value::Array(data), state.engine.now())))
}

pub async fn get_run(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let run =
        state.engine.store.get_run(&id).await?.ok_or_else(|| ApiError::not_found(format!("run {id} not found")))?;
    Ok(Json(views::wrap(views::run(&run), state.engine.now())))
}

pub async fn run_steps(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let steps = state.engine.store.get_steps(&id).await?;
    let data: Vec<Value> = steps.iter().map(views::step).collect();
    Ok(Json(views::wrap(Value::Array(data), state.engine.now())))
}

pub async fn cancel_run(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    state.engine.cancel_run(&id).await?;
    let run = state.engine.store.get_run(&id).await?;
    Ok(Json(views::wrap(run.as_ref().map(views::run).unwrap_or(Value::Null), state.engine.now())))
}

pub async fn list_apps(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let engine = &state.engine;
    let functions = engine.registry.functions();
    let data: Vec<Value> = engine
        .registry
        .apps()
        .iter()
        .map(|a| views::app(a, functions.iter().filter(|f| f.record.app_id == a.id).count()))
        .collect();
    Ok(Json(views::wrap(Value::Array(data), engine.now())))
}

/// `use_api: true` SDKs fetch the trigger events here.
pub async fn run_batch(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let run =
        state.engine.store.get_run(&id).await?.ok_or_else(|| ApiError::not_found(format!("run {id} not found")))?;
    let events = state.engine.store.get_events(&run.event_ids).await?;
    Ok(Json(Value::Array(events.iter().map(|e| e.event.to_sdk_json(&e.id)).collect())))
}

/// `use_api: true` SDKs fetch the memoized steps here.
pub async fn run_actions(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    check_bearer(&state.config, &headers)?;
    let steps = state.engine.store.get_steps(&id).await?;
    let map: Map<String, Value> = steps.into_iter().map(|s| (s.step_id, s.value)).collect();
    Ok(Json(Value::Object(map)))
}

/// The engine's notion of now (it differs from wall time only under `--test-clock`).
pub async fn clock(State(state): State<AppState>) -> ApiResult {
    let offset = state.config.test_clock.as_ref().map(|c| c.offset_ms()).unwrap_or(0);
    Ok(Json(
        json!({ "now_ms": state.engine.now(), "offset_ms": offset, "test_clock": state.config.test_clock.is_some() }),
    ))
}

#[derive(Deserialize)]
pub struct Advance {
    advance_ms: i64,
}

/// Move the test clock forward (`sluice dev --test-clock` only), so timers, crons and debounces
/// can be tested without waiting in real time.
pub async fn advance_clock(State(state): State<AppState>, Json(body): Json<Advance>) -> ApiResult {
    let Some(clock) = &state.config.test_clock else {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "SLUICE-4003",
            "the clock can only be moved when sluice runs with `sluice dev --test-clock`",
        ));
    };
    if body.advance_ms < 0 {
        return Err(ApiError::new(axum::http::StatusCode::BAD_REQUEST, "SLUICE-4002", "time only moves forward"));
    }
    clock.advance(body.advance_ms);
    state.engine.notify_work();
    Ok(Json(json!({ "now_ms": state.engine.now(), "offset_ms": clock.offset_ms() })))
}
