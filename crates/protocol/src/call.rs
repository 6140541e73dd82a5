//! The Call Request sluice `POST`s to an SDK, and how it reads the answer's status.

use serde::Serialize;
use serde_json::{Map, Value};

/// Body of a Call Request. Field set per the protocol reference §5: the Python SDK insists on the
/// top-level `use_api` and on `ctx.{run_id, attempt, disable_immediate_execution, stack}`.
/// `ctx.fn_id` is deliberately absent: its presence turns on JS v4 checkpointing.
#[derive(Debug, Clone, Serialize)]
pub struct CallRequest {
    pub event: Value,
    pub events: Vec<Value>,
    pub steps: Map<String, Value>,
    pub version: i32,
    pub use_api: bool,
    pub ctx: CallContext,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallContext {
    pub run_id: String,
    pub attempt: u32,
    pub max_attempts: u32,
    pub disable_immediate_execution: bool,
    pub use_api: bool,
    pub stack: CallStack,
    pub env: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallStack {
    pub stack: Vec<String>,
    pub current: usize,
}

/// The request version sluice asks for until a run's first response names one.
pub const DEFAULT_REQUEST_VERSION: i32 = 2;

/// How an SDK's HTTP answer is classified before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// 200: the function returned; the body is its output.
    Completed,
    /// 206: a list of opcodes.
    Ops,
    /// Any other status: the function (not a step) errored.
    Error,
}

impl ResponseKind {
    pub fn from_status(status: u16) -> ResponseKind {
        match status {
            200 => ResponseKind::Completed,
            206 => ResponseKind::Ops,
            _ => ResponseKind::Error,
        }
    }
}

/// Whether an error answer may be retried: `X-Inngest-No-Retry` wins; without it a 4xx is final
/// and a 5xx is retried (the Inngest server's `ShouldRetry`).
pub fn error_is_retriable(status: u16, no_retry_header: Option<&str>) -> bool {
    match no_retry_header.map(|h| h.trim().to_ascii_lowercase()) {
        Some(h) if h == "true" => false,
        Some(h) if h == "false" => true,
        _ => status >= 500,
    }
}

/// Normalise an SDK error body into `{name, message, stack?}` (the shape JS validates in onFailure).
pub fn normalize_error(body: &Value, fallback_message: &str) -> Value {
    let mut out = Map::new();
    let name = body.get("name").and_then(Value::as_str).unwrap_or("Error").to_string();
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| body.get("error").and_then(Value::as_str))
        .map(str::to_string)
        .unwrap_or_else(|| fallback_message.to_string());
    out.insert("name".into(), Value::String(name));
    out.insert("message".into(), Value::String(message));
    if let Some(stack) = body.get("stack").and_then(Value::as_str) {
        out.insert("stack".into(), Value::String(stack.to_string()));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_rules_follow_the_inngest_server() {
        assert!(!error_is_retriable(500, Some("true")));
        assert!(error_is_retriable(400, Some("false")));
        assert!(!error_is_retriable(400, None));
        assert!(error_is_retriable(502, None));
    }

    #[test]
    fn error_bodies_are_normalised() {
        let e =
            normalize_error(&json!({"name":"NonRetriableError","message":"m","stack":"s","__serialized":true}), "x");
        assert_eq!(e, json!({"name":"NonRetriableError","message":"m","stack":"s"}));
        let e = normalize_error(&json!("text"), "status 500");
        assert_eq!(e, json!({"name":"Error","message":"status 500"}));
    }
}
