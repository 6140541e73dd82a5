//! `POST /e/{key}`: one event or an array. Answers only after the events (and the runs they
//! trigger) are durably stored.

use axum::extract::{Path, Request, State};
use axum::Json;
use serde_json::{json, Value};
use sluice_protocol::event::parse_event_batch;

use crate::auth::{check_event_key, read_body};
use crate::error::ApiError;
use crate::AppState;

/// Inngest's per-request cap on events.
const MAX_EVENTS_PER_REQUEST: usize = 5_000;

pub async fn send_events(
    State(state): State<AppState>,
    Path(key): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    check_event_key(&state.config, &key)?;
    let seed = request.headers().get("x-inngest-event-id-seed").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = read_body(&state.config, request.into_body()).await?;
    let events = parse_event_batch(&body).map_err(sluice_engine::EngineError::from)?;
    if events.len() > MAX_EVENTS_PER_REQUEST {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "SLUICE-1005",
            format!("{} events in one request, over the limit of {MAX_EVENTS_PER_REQUEST}", events.len()),
        ));
    }
    let result = state.engine.ingest_events(events, seed.as_deref()).await?;
    Ok(Json(json!({ "ids": result.ids, "status": 200 })))
}
