//! The HTTP API, one listener (default 127.0.0.1:8288), the same routes as the Inngest dev server
//! where they overlap:
//!
//! | route | for |
//! |---|---|
//! | `POST /e/{key}` | clients and SDKs sending events |
//! | `POST /fn/register` | SDK registration |
//! | `GET /v0/runs/{id}/batch`, `GET /v0/runs/{id}/actions` | SDKs with `use_api` |
//! | `GET /health`, `GET /dev` | liveness, apps and functions |
//! | `/v1/events…`, `/v1/runs…`, `/v1/apps…` | inspection, cancel, sync |

mod auth;
mod deployments;
pub mod doctor;
mod error;
mod events;
mod inspect;
mod register;
mod views;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use sluice_engine::Engine;

pub use error::ApiError;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Event keys accepted on `/e/{key}`; empty = dev mode (any key).
    pub event_keys: Vec<String>,
    /// Signing keys (current first, then fallback); empty = dev mode (no auth).
    pub signing_keys: Vec<String>,
    pub max_request_bytes: usize,
    /// Dev only (`--test-clock`): the engine's clock, advanced through `POST /dev/clock`.
    pub test_clock: Option<sluice_engine::OffsetClock>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { event_keys: vec![], signing_keys: vec![], max_request_bytes: 3 * 1024 * 1024, test_clock: None }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: Arc<ApiConfig>,
}

pub fn router(engine: Arc<Engine>, config: ApiConfig) -> Router {
    let state = AppState { engine, config: Arc::new(config) };
    Router::new()
        .route("/e/{key}", post(events::send_events))
        .route("/fn/register", post(register::register))
        .route("/health", get(inspect::health))
        .route("/dev", get(inspect::dev_info))
        .route("/dev/clock", get(inspect::clock).post(inspect::advance_clock))
        .route("/v0/runs/{id}/batch", get(inspect::run_batch))
        .route("/v0/runs/{id}/actions", get(inspect::run_actions))
        .route("/v1/events", get(inspect::list_events))
        .route("/v1/events/{id}", get(inspect::get_event))
        .route("/v1/events/{id}/runs", get(inspect::event_runs))
        .route("/v1/runs", get(inspect::list_runs))
        .route("/v1/runs/{id}", get(inspect::get_run).delete(inspect::cancel_run))
        .route("/v1/runs/{id}/steps", get(inspect::run_steps))
        .route("/v1/apps", get(inspect::list_apps))
        .route("/v1/apps/sync", post(register::sync_app))
        .route("/v1/apps/{id}/routing", axum::routing::put(deployments::set_routing))
        .route("/v1/deployments", get(deployments::list))
        .route("/v1/deployments/{id}", get(deployments::get))
        .route("/v1/deployments/{id}/activate", post(deployments::activate))
        .route("/v1/deployments/{id}/status", post(deployments::set_status))
        .route("/v1/deployments/{id}/probe", post(deployments::probe))
        .route("/v1/stats", get(deployments::stats))
        .route("/v1/doctor", get(doctor::findings))
        // Bodies are read with our own limit so oversize requests get a coded JSON error.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    config: ApiConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine, config)).with_graceful_shutdown(shutdown).await
}
