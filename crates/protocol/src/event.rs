//! Events as clients send them (`POST /e/{key}`) and as sluice stores and forwards them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ProtocolError;

/// Events sluice itself emits. Names are fixed by the Inngest protocol.
pub mod names {
    pub const FUNCTION_FINISHED: &str = "inngest/function.finished";
    pub const FUNCTION_FAILED: &str = "inngest/function.failed";
    pub const FUNCTION_CANCELLED: &str = "inngest/function.cancelled";
    pub const FUNCTION_INVOKED: &str = "inngest/function.invoked";
    pub const SCHEDULED_TIMER: &str = "inngest/scheduled.timer";
}

/// An event as accepted from a client, normalised: `data` is an object, `ts` is integer milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub name: String,
    #[serde(default)]
    pub data: Value,
    /// Client-supplied id: an idempotency key (deduplicated for 24 h). Empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub ts: i64,
    #[serde(default)]
    pub user: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<String>,
}

impl Event {
    /// Validate and normalise one raw JSON event. `now_ms` fills a missing `ts`.
    pub fn from_json(raw: Value, now_ms: i64, max_bytes: usize) -> Result<Event, ProtocolError> {
        let size = serde_json::to_vec(&raw).map(|v| v.len()).unwrap_or(0);
        if size > max_bytes {
            return Err(ProtocolError::EventTooLarge { size, limit: max_bytes });
        }
        let Value::Object(mut obj) = raw else {
            return Err(ProtocolError::MalformedJson("an event must be a JSON object".into()));
        };
        let name = match obj.remove("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            _ => return Err(ProtocolError::EventWithoutName),
        };
        let data = match obj.remove("data") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err(ProtocolError::MalformedJson("event data must be an object".into())),
        };
        let id = match obj.remove("id") {
            Some(Value::String(s)) => s,
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let ts = match obj.remove("ts") {
            Some(Value::Number(n)) => {
                n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).filter(|t| *t > 0).unwrap_or(now_ms)
            }
            _ => now_ms,
        };
        let user = match obj.remove("user") {
            Some(v @ Value::Object(_)) => v,
            _ => Value::Object(Map::new()),
        };
        let v = match obj.remove("v") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        Ok(Event { name, data, id, ts, user, v })
    }

    /// The event as sent to an SDK: always with `user` and an integer `ts` (Python validates both),
    /// and `id` set to the client id, or else sluice's internal id.
    pub fn to_sdk_json(&self, internal_id: &str) -> Value {
        let mut obj = Map::new();
        obj.insert("name".into(), Value::String(self.name.clone()));
        obj.insert("data".into(), self.data.clone());
        let id = if self.id.is_empty() { internal_id } else { &self.id };
        obj.insert("id".into(), Value::String(id.to_string()));
        obj.insert("ts".into(), Value::from(self.ts));
        obj.insert("user".into(), if self.user.is_object() { self.user.clone() } else { Value::Object(Map::new()) });
        if let Some(v) = &self.v {
            obj.insert("v".into(), Value::String(v.clone()));
        }
        Value::Object(obj)
    }
}

/// Parse a request body that is one event or an array of events.
pub fn parse_event_batch(body: &[u8]) -> Result<Vec<Value>, ProtocolError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ProtocolError::MalformedJson(e.to_string()))?;
    match value {
        Value::Array(items) => Ok(items),
        obj @ Value::Object(_) => Ok(vec![obj]),
        _ => Err(ProtocolError::MalformedJson("expected an event object or an array of events".into())),
    }
}

/// Does an event name match a trigger name? Triggers may end in `*` as a prefix wildcard (`app/*`).
pub fn trigger_name_matches(trigger: &str, event_name: &str) -> bool {
    match trigger.strip_suffix('*') {
        Some(prefix) => event_name.starts_with(prefix),
        None => trigger == event_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalises_a_minimal_event() {
        let e = Event::from_json(json!({"name":"a/b"}), 42, 1024).unwrap();
        assert_eq!(e.ts, 42);
        assert_eq!(e.data, json!({}));
        let sdk = e.to_sdk_json("01H");
        assert_eq!(sdk["id"], "01H");
        assert_eq!(sdk["user"], json!({}));
    }

    #[test]
    fn rejects_bad_events_with_codes() {
        let err = Event::from_json(json!({"data":{}}), 1, 1024).unwrap_err();
        assert_eq!(err.code(), "SLUICE-1002");
        let err = Event::from_json(json!({"name":"x","data":{"big":"x".repeat(100)}}), 1, 50).unwrap_err();
        assert_eq!(err.code(), "SLUICE-1003");
        let err = Event::from_json(json!({"name":"x","data":[1]}), 1, 1024).unwrap_err();
        assert_eq!(err.code(), "SLUICE-1001");
    }

    #[test]
    fn wildcard_triggers() {
        assert!(trigger_name_matches("app/*", "app/user.created"));
        assert!(!trigger_name_matches("app/*", "other/x"));
        assert!(trigger_name_matches("a/b", "a/b"));
        assert!(!trigger_name_matches("a/b", "a/bc"));
    }
}
