//! `POST /fn/register` from SDKs, and `POST /v1/apps/sync` to ask sluice to sync a URL.

use axum::extract::{Request, State};
use axum::Json;
use serde_json::{json, Value};
use sluice_protocol::function::RegisterRequest;

use crate::auth::{check_bearer, read_body};
use crate::error::ApiError;
use crate::AppState;

pub async fn register(State(state): State<AppState>, request: Request) -> Result<Json<Value>, ApiError> {
    check_bearer(&state.config, request.headers())?;
    let deploy_id = request.uri().query().and_then(|q| {
        q.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == "deployId").map(|(_, v)| v.to_string())
    });
    let body = read_body(&state.config, request.into_body()).await?;
    let mut req = RegisterRequest::parse(&body).map_err(sluice_engine::EngineError::from)?;
    if req.deploy_id.is_none() {
        req.deploy_id = deploy_id;
    }
    let reply = sluice_engine::sync::register(&state.engine, req).await?;
    Ok(Json(json!({
        "ok": true,
        "status": 200,
        "modified": reply.modified,
        "app_id": reply.app_id,
        "message": format!("registered {} functions", reply.function_count),
    })))
}

#[derive(serde::Deserialize)]
pub struct SyncBody {
    url: String,
    /// `false`: sync as a staged deployment that is not current until activated (`sluice deploy`).
    #[serde(default = "yes")]
    activate: bool,
}

fn yes() -> bool {
    true
}

pub async fn sync_app(State(state): State<AppState>, request: Request) -> Result<Json<Value>, ApiError> {
    check_bearer(&state.config, request.headers())?;
    let body = read_body(&state.config, request.into_body()).await?;
    let SyncBody { url, activate } = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(axum::http::StatusCode::BAD_REQUEST, "SLUICE-1001", format!("malformed JSON: {e}"))
    })?;
    let reply = if activate {
        state.engine.watch_url(&url);
        sluice_engine::sync::sync_url(&state.engine, &url).await?
    } else {
        state.engine.sync_staged(&url).await?
    };
    Ok(Json(json!({ "data": reply })))
}
