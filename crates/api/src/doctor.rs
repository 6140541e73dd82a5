//! `GET /v1/doctor[?stale_after=30m]`: the integrity doctor's findings (the same report as
//! `sluice doctor --json`'s `result`), for the deploy bake gate and for monitoring. Read-only: it
//! never repairs. The server installs the doctor's store handle and settings at start
//! ([`install`]); until then the route answers 503.

use std::sync::{Arc, RwLock};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_doctor::{diagnose, DoctorConfig, Liveness};
use sluice_store::{Diagnostics, Store};

use crate::auth::check_bearer;
use crate::error::ApiError;
use crate::AppState;

/// What the route diagnoses: the server's own store and the doctor settings.
pub struct DoctorSource {
    pub store: Arc<dyn Store>,
    pub diag: Arc<dyn Diagnostics>,
    pub config: DoctorConfig,
}

static SOURCE: RwLock<Option<Arc<DoctorSource>>> = RwLock::new(None);

/// Make `GET /v1/doctor` answer from this store (one sluice server per process).
pub fn install(source: DoctorSource) {
    *SOURCE.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(source));
}

#[derive(Deserialize)]
pub struct DoctorQuery {
    stale_after: Option<String>,
}

pub async fn findings(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DoctorQuery>,
) -> Result<Json<Value>, ApiError> {
    check_bearer(&state.config, &headers)?;
    let source = SOURCE.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SLUICE-6004", "the doctor is not set up on this server")
    })?;
    let mut config = source.config.clone();
    if let Some(s) = q.stale_after.as_deref().filter(|s| !s.is_empty()) {
        config.stale_after = sluice_doctor::config::parse(s)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "SLUICE-6001", format!("stale_after: {e}")))?;
    }
    // This server is alive, so its own leases are too; expiry and node heartbeats still count.
    let report =
        diagnose(source.store.as_ref(), source.diag.as_ref(), &config, state.engine.now(), &Liveness::default())
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string()))?;
    Ok(Json(json!({ "data": report })))
}
