//! The runtime adapter behind the gates. sluice's own HTTP API is the first implementation; a
//! stock Inngest server or Restate would implement the same calls with their own primitives.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AdapterError {
    /// A stable sluice error code (SLUICE-xxxx).
    pub code: String,
    pub message: String,
    /// HTTP status when the runtime answered.
    pub status: Option<u16>,
}

impl AdapterError {
    pub fn new(code: &str, message: impl Into<String>) -> AdapterError {
        AdapterError { code: code.into(), message: message.into(), status: None }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionDiff {
    #[serde(default)]
    pub added: Vec<String>,
    #[serde(default)]
    pub removed: Vec<String>,
    #[serde(default)]
    pub changed: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Staged {
    pub app_id: String,
    pub deployment_id: String,
    pub deployment_status: String,
    #[serde(default)]
    pub function_count: Option<u64>,
    #[serde(default)]
    pub diff: FunctionDiff,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub app_id: String,
    pub url: String,
    pub status: String,
    #[serde(default)]
    pub current: bool,
    #[serde(default)]
    pub functions: Vec<String>,
    #[serde(default)]
    pub in_flight_runs: Option<u64>,
    #[serde(default)]
    pub in_flight_calls: Option<u64>,
    #[serde(default)]
    pub in_flight_run_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ProbeStart {
    Function {
        run_id: String,
        #[serde(default)]
        function_id: Option<String>,
    },
    Trust {
        ok: bool,
        #[serde(default)]
        function_count: Option<u64>,
        #[serde(default)]
        detail: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    #[serde(default)]
    pub runs_created: u64,
    #[serde(default)]
    pub runs_completed: u64,
    #[serde(default)]
    pub runs_failed: u64,
    #[serde(default)]
    pub stale_running: u64,
    #[serde(default)]
    pub paused_unreachable: u64,
    #[serde(default)]
    pub unreachable_apps: Vec<String>,
}

impl Stats {
    /// Failed / ended, or 0 when nothing ended.
    pub fn failure_rate(&self) -> f64 {
        let ended = self.runs_completed + self.runs_failed;
        if ended == 0 {
            0.0
        } else {
            self.runs_failed as f64 / ended as f64
        }
    }
}

#[async_trait]
pub trait RuntimeAdapter: Send + Sync {
    /// A short name for reports ("sluice", "inngest", "restate").
    fn name(&self) -> &'static str;
    /// Where the runtime is (for reports).
    fn endpoint(&self) -> String;
    /// The runtime's own health endpoint.
    async fn health(&self) -> Result<Value, AdapterError>;
    /// Registered apps with their reachability.
    async fn apps(&self) -> Result<Vec<Value>, AdapterError>;
    /// Register the worker at `url` as a new deployment that takes no traffic yet.
    async fn stage(&self, url: &str) -> Result<Staged, AdapterError>;
    async fn deployment(&self, id: &str) -> Result<Deployment, AdapterError>;
    async fn deployments(&self, app_id: &str) -> Result<Vec<Deployment>, AdapterError>;
    /// The worker's own introspection (an SDK GET on its serve URL).
    async fn introspect(&self, url: &str) -> Result<Value, AdapterError>;
    /// Start the callback probe on one deployment only.
    async fn probe(&self, id: &str) -> Result<ProbeStart, AdapterError>;
    async fn run(&self, run_id: &str) -> Result<Value, AdapterError>;
    /// Make `id` current; the previously current one becomes `previous_status` (draining on
    /// cutover, rolled_back on rollback). Returns the previous deployment's id.
    async fn activate(&self, id: &str, previous_status: &str) -> Result<Option<String>, AdapterError>;
    async fn set_status(&self, id: &str, status: &str) -> Result<(), AdapterError>;
    async fn stats(&self, since_ms: i64, stale_after_ms: i64, app_id: Option<&str>) -> Result<Stats, AdapterError>;
    /// Integrity findings; `Ok(None)` when the runtime has no doctor.
    async fn doctor(&self) -> Result<Option<Value>, AdapterError>;
}

/// sluice's HTTP API (`/v1/...`, JSON wrapped in `{"data": ...}`).
#[derive(Clone)]
pub struct SluiceAdapter {
    base: String,
    bearer: Option<String>,
    client: reqwest::Client,
}

impl SluiceAdapter {
    /// `bearer` is the already-hashed signing key for a production-mode sluice.
    pub fn new(base: &str, bearer: Option<String>) -> SluiceAdapter {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("an HTTP client");
        SluiceAdapter { base: base.trim_end_matches('/').to_string(), bearer, client }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, AdapterError> {
        let mut req = self.client.request(method, format!("{}{}", self.base, path));
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| AdapterError::new("SLUICE-5001", format!("cannot reach sluice at {}: {e}", self.base)))?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value.get("data").cloned().unwrap_or(value))
        } else {
            Err(AdapterError {
                code: value["code"].as_str().unwrap_or("SLUICE-5001").to_string(),
                message: value["error"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("HTTP {status} on {path}")),
                status: Some(status.as_u16()),
            })
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, AdapterError> {
        serde_json::from_value(v).map_err(|e| AdapterError::new("SLUICE-7001", format!("unexpected {what} reply: {e}")))
    }
}

#[async_trait]
impl RuntimeAdapter for SluiceAdapter {
    fn name(&self) -> &'static str {
        "sluice"
    }

    fn endpoint(&self) -> String {
        self.base.clone()
    }

    async fn health(&self) -> Result<Value, AdapterError> {
        self.call(reqwest::Method::GET, "/health", None).await
    }

    async fn apps(&self) -> Result<Vec<Value>, AdapterError> {
        Self::decode(self.call(reqwest::Method::GET, "/v1/apps", None).await?, "apps")
    }

    async fn stage(&self, url: &str) -> Result<Staged, AdapterError> {
        let v = self.call(reqwest::Method::POST, "/v1/apps/sync", Some(json!({"url": url, "activate": false}))).await?;
        Self::decode(v, "sync")
    }

    async fn deployment(&self, id: &str) -> Result<Deployment, AdapterError> {
        Self::decode(self.call(reqwest::Method::GET, &format!("/v1/deployments/{id}"), None).await?, "deployment")
    }

    async fn deployments(&self, app_id: &str) -> Result<Vec<Deployment>, AdapterError> {
        let v = self.call(reqwest::Method::GET, &format!("/v1/deployments?app_id={app_id}"), None).await?;
        Self::decode(v, "deployments")
    }

    async fn introspect(&self, url: &str) -> Result<Value, AdapterError> {
        let resp = self
            .client
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| AdapterError::new("SLUICE-3001", format!("{url} is unreachable: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(AdapterError {
                code: "SLUICE-3001".into(),
                message: format!("{url} answered HTTP {status}"),
                status: Some(status.as_u16()),
            });
        }
        Ok(resp.json().await.unwrap_or(Value::Null))
    }

    async fn probe(&self, id: &str) -> Result<ProbeStart, AdapterError> {
        let v = self.call(reqwest::Method::POST, &format!("/v1/deployments/{id}/probe"), Some(json!({}))).await?;
        Self::decode(v, "probe")
    }

    async fn run(&self, run_id: &str) -> Result<Value, AdapterError> {
        self.call(reqwest::Method::GET, &format!("/v1/runs/{run_id}"), None).await
    }

    async fn activate(&self, id: &str, previous_status: &str) -> Result<Option<String>, AdapterError> {
        let body = json!({"previous_status": previous_status});
        let v = self.call(reqwest::Method::POST, &format!("/v1/deployments/{id}/activate"), Some(body)).await?;
        Ok(v["previous"].as_str().map(str::to_string))
    }

    async fn set_status(&self, id: &str, status: &str) -> Result<(), AdapterError> {
        let body = json!({"status": status});
        self.call(reqwest::Method::POST, &format!("/v1/deployments/{id}/status"), Some(body)).await.map(|_| ())
    }

    async fn stats(&self, since_ms: i64, stale_after_ms: i64, app_id: Option<&str>) -> Result<Stats, AdapterError> {
        let mut path = format!("/v1/stats?since={since_ms}&stale_after_ms={stale_after_ms}");
        if let Some(a) = app_id {
            path.push_str(&format!("&app_id={a}"));
        }
        Self::decode(self.call(reqwest::Method::GET, &path, None).await?, "stats")
    }

    async fn doctor(&self) -> Result<Option<Value>, AdapterError> {
        match self.call(reqwest::Method::GET, "/v1/doctor", None).await {
            Ok(v) => Ok(Some(v)),
            // 404: no such route; 503: a doctor route whose checker is not set up on this server.
            Err(e) if matches!(e.status, Some(404 | 405 | 501 | 503)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// How many findings a doctor reply holds (`findings: [...]`, a bare array, or `count`).
pub fn doctor_findings(v: &Value) -> u64 {
    if let Some(a) = v.as_array() {
        return a.len() as u64;
    }
    if let Some(a) = v["findings"].as_array() {
        return a.len() as u64;
    }
    v["count"].as_u64().or_else(|| v["findings"].as_u64()).unwrap_or(0)
}
