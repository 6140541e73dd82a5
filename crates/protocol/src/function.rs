//! App registration: the body an SDK `POST`s to `/fn/register` (or returns from an in-band sync)
//! and the function configuration inside it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ProtocolError;

/// Default number of retries when a function sets none (the Inngest server's `DefaultRetryCount`).
pub const DEFAULT_RETRIES: u32 = 4;
/// The Inngest server refuses more than this many retries.
pub const MAX_RETRIES: u32 = 20;

/// Register body. JS and Python spell some fields differently; unknown fields are ignored.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RegisterRequest {
    #[serde(default)]
    pub url: String,
    #[serde(default, alias = "appname", alias = "app_id", rename = "appName")]
    pub app_name: String,
    #[serde(default, alias = "deploy_type", rename = "deployType")]
    pub deploy_type: Option<String>,
    #[serde(default)]
    pub framework: Option<String>,
    #[serde(default)]
    pub functions: Vec<FunctionConfig>,
    #[serde(default)]
    pub sdk: Option<String>,
    #[serde(default)]
    pub v: Option<String>,
    #[serde(default, alias = "deploy_id", rename = "deployId")]
    pub deploy_id: Option<String>,
    #[serde(default, alias = "app_version", rename = "appVersion")]
    pub app_version: Option<String>,
    #[serde(default)]
    pub capabilities: Option<Value>,
}

impl RegisterRequest {
    pub fn parse(body: &[u8]) -> Result<RegisterRequest, ProtocolError> {
        let req: RegisterRequest =
            serde_json::from_slice(body).map_err(|e| ProtocolError::MalformedJson(e.to_string()))?;
        req.validate()?;
        Ok(req)
    }

    pub fn validate(&self) -> Result<(), ProtocolError> {
        if self.app_name.trim().is_empty() {
            return Err(ProtocolError::InvalidFunction {
                function: "<app>".into(),
                reason: "register body has no appName".into(),
            });
        }
        for f in &self.functions {
            f.validate()?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct FunctionConfig {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    #[serde(default)]
    pub steps: std::collections::BTreeMap<String, StepConfig>,
    /// Flow-control and lifecycle blocks, kept verbatim: concurrency, throttle, debounce, cancel, …
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Trigger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct StepConfig {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub runtime: StepRuntime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct StepRuntime {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Retries {
    pub attempts: u32,
}

impl FunctionConfig {
    /// The URL Call Requests for this function go to.
    pub fn step_url(&self) -> Option<&str> {
        self.steps.get("step").or_else(|| self.steps.values().next()).map(|s| s.runtime.url.as_str())
    }

    /// Retries after the first attempt. JS omits `retries` when the user sets none.
    pub fn retries(&self) -> u32 {
        self.steps
            .values()
            .next()
            .and_then(|s| s.retries.as_ref())
            .map(|r| r.attempts.min(MAX_RETRIES))
            .unwrap_or(DEFAULT_RETRIES)
    }

    pub fn max_attempts(&self) -> u32 {
        self.retries() + 1
    }

    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    pub fn validate(&self) -> Result<(), ProtocolError> {
        let invalid = |reason: String| ProtocolError::InvalidFunction { function: self.id.clone(), reason };
        if self.id.trim().is_empty() {
            return Err(invalid("function id is empty".into()));
        }
        if self.triggers.is_empty() {
            // Invoke-only functions have their invoke trigger stripped by the SDK, so none is legal.
        }
        for t in &self.triggers {
            match (&t.event, &t.cron) {
                (Some(e), None) if !e.trim().is_empty() => {}
                (None, Some(cron)) => validate_cron(&self.id, cron)?,
                (Some(_), Some(_)) => return Err(invalid("a trigger has both event and cron".into())),
                _ => return Err(invalid("a trigger needs an event name or a cron".into())),
            }
        }
        let Some(url) = self.step_url() else {
            return Err(invalid("no step runtime URL".into()));
        };
        if url::Url::parse(url).is_err() {
            return Err(invalid(format!("step runtime URL {url:?} is not a URL")));
        }
        if let Some(r) = self.steps.values().next().and_then(|s| s.retries.as_ref()) {
            if r.attempts > MAX_RETRIES {
                return Err(invalid(format!("retries {} is over the maximum of {MAX_RETRIES}", r.attempts)));
            }
        }
        Ok(())
    }
}

/// A cron trigger split into its optional time zone and the schedule itself.
pub fn split_cron_tz(cron: &str) -> (Option<&str>, &str) {
    let trimmed = cron.trim();
    for prefix in ["TZ=", "CRON_TZ="] {
        if let Some(rest) = trimmed.strip_prefix(prefix) {
            if let Some((tz, schedule)) = rest.split_once(char::is_whitespace) {
                return (Some(tz), schedule.trim());
            }
        }
    }
    (None, trimmed)
}

/// A cron trigger is valid when it parses as Inngest parses it (robfig/cron v3, see `crate::cron`).
pub fn validate_cron(function: &str, cron: &str) -> Result<(), ProtocolError> {
    crate::cron::CronSchedule::parse_for(function, cron).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fn_json(triggers: Value) -> Value {
        json!({"id":"app-f","name":"F","triggers":triggers,
               "steps":{"step":{"id":"step","name":"step","runtime":{"type":"http","url":"http://localhost:3000/api/inngest?fnId=app-f&stepId=step"}}},
               "concurrency":[{"limit":2,"scope":"fn"}]})
    }

    #[test]
    fn parses_js_and_python_spellings() {
        let js = json!({"url":"http://x","appName":"a","deployType":"ping","functions":[fn_json(json!([{"event":"e"}]))],"featureObservations":{}});
        let py = json!({"url":"http://x","appname":"a","deploy_type":"ping","functions":[fn_json(json!([{"cron":"TZ=Europe/Paris 0 9 * * *"}]))]});
        let js = RegisterRequest::parse(js.to_string().as_bytes()).unwrap();
        let py = RegisterRequest::parse(py.to_string().as_bytes()).unwrap();
        assert_eq!(js.app_name, "a");
        assert_eq!(py.app_name, "a");
        assert_eq!(py.deploy_type.as_deref(), Some("ping"));
        assert_eq!(js.functions[0].retries(), DEFAULT_RETRIES);
        assert!(js.functions[0].extra.contains_key("concurrency"));
    }

    #[test]
    fn rejects_bad_triggers_and_crons() {
        let bad_cron = json!({"appName":"a","functions":[fn_json(json!([{"cron":"not a cron"}]))]});
        let err = RegisterRequest::parse(bad_cron.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.code(), "SLUICE-1102");
        let empty = json!({"appName":"a","functions":[fn_json(json!([{}]))]});
        let err = RegisterRequest::parse(empty.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.code(), "SLUICE-1101");
        assert!(validate_cron("f", "@daily").is_ok());
        assert!(validate_cron("f", "@every 5m").is_ok());
        assert!(validate_cron("f", "*/5 * * * *").is_ok());
    }

    #[test]
    fn splits_time_zone_prefixes() {
        assert_eq!(split_cron_tz("TZ=Europe/Paris 0 9 * * *"), (Some("Europe/Paris"), "0 9 * * *"));
        assert_eq!(split_cron_tz("CRON_TZ=UTC @daily"), (Some("UTC"), "@daily"));
        assert_eq!(split_cron_tz("0 9 * * *"), (None, "0 9 * * *"));
    }
}

/// Conformance: the register bodies captured from the real SDKs (fixtures/*/register-sample.json).
#[cfg(test)]
mod sdk_samples {
    use super::*;

    #[test]
    fn the_js_sdk_register_body_parses() {
        let body = include_bytes!("../../../fixtures/ts-worker/register-sample.json");
        let req = RegisterRequest::parse(body).unwrap();
        assert_eq!(req.app_name, "ts-app");
        assert_eq!(req.deploy_type.as_deref(), Some("ping"));
        let failure = req.functions.iter().find(|f| f.id == "ts-app-with-failure-failure").unwrap();
        assert_eq!(failure.triggers[0].event.as_deref(), Some("inngest/function.failed"));
        assert_eq!(failure.triggers[0].expression.as_deref(), Some("event.data.function_id == 'ts-app-with-failure'"));
        let retry = req.functions.iter().find(|f| f.id == "ts-app-retry-then-succeed").unwrap();
        assert_eq!(retry.retries(), 3);
        // JS omits `retries` when the user sets none: the server default applies.
        let hello = req.functions.iter().find(|f| f.id == "ts-app-hello").unwrap();
        assert_eq!(hello.retries(), DEFAULT_RETRIES);
        assert!(hello.step_url().unwrap().contains("fnId=ts-app-hello&stepId=step"));
    }

    #[test]
    fn the_python_sdk_register_body_parses_with_its_spellings() {
        let body = include_bytes!("../../../fixtures/py-worker/register-sample.json");
        let req = RegisterRequest::parse(body).unwrap();
        assert_eq!(req.app_name, "py-app");
        assert_eq!(req.deploy_type.as_deref(), Some("ping"));
        assert!(req.functions.iter().any(|f| f.id == "py-app-py-steps"));
    }
}
