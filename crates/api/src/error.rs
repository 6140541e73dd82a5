use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sluice_engine::EngineError;

/// An API error: an HTTP status, a stable code and a message. The body carries `status` because
/// the JS SDK reads the outcome from the body and defaults it to 200.
#[derive(Debug, thiserror::Error)]
#[error("[{code}] {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "SLUICE-4001", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "SLUICE-4004", message)
    }
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SLUICE-1004",
            format!("request body is over the {limit} byte limit"),
        )
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::Protocol(sluice_protocol::ProtocolError::EventTooLarge { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            EngineError::Protocol(_) | EngineError::Expression { .. } => StatusCode::BAD_REQUEST,
            EngineError::RunNotFound(_) | EngineError::DeploymentNotFound(_) => StatusCode::NOT_FOUND,
            EngineError::IllegalDeploymentMove { .. } => StatusCode::CONFLICT,
            EngineError::RunEnded(_) => StatusCode::CONFLICT,
            EngineError::Unreachable { .. } | EngineError::SyncFailed { .. } => StatusCode::BAD_GATEWAY,
            EngineError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<sluice_store::StoreError> for ApiError {
    fn from(e: sluice_store::StoreError) -> Self {
        EngineError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "ok": false,
            "status": self.status.as_u16(),
            "error": self.message,
            "code": self.code,
        });
        (self.status, Json(body)).into_response()
    }
}
