//! Production-mode checks: event keys on `/e`, the hashed signing key as Bearer token elsewhere.

use axum::http::HeaderMap;
use sluice_protocol::signing::hashed_signing_key;

use crate::error::ApiError;
use crate::ApiConfig;

pub fn check_event_key(config: &ApiConfig, key: &str) -> Result<(), ApiError> {
    if config.event_keys.is_empty() {
        return Ok(());
    }
    if config.event_keys.iter().any(|k| k == key) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("event key not found"))
    }
}

/// SDKs send `Bearer signkey-<env>-<sha256>`; operators may send the raw key. Dev mode accepts
/// anything (JS sends `Bearer undefined` there).
pub fn check_bearer(config: &ApiConfig, headers: &HeaderMap) -> Result<(), ApiError> {
    if config.signing_keys.is_empty() {
        return Ok(());
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <hashed signing key>"))?;
    let ok = config.signing_keys.iter().any(|k| token == hashed_signing_key(k) || token == k);
    if ok {
        Ok(())
    } else {
        Err(ApiError::unauthorized("the Bearer token does not match the signing key"))
    }
}

pub async fn read_body(config: &ApiConfig, body: axum::body::Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, config.max_request_bytes)
        .await
        .map_err(|_| ApiError::too_large(config.max_request_bytes))
}
