//! A small HTTP client for the CLI's inspection commands.

use serde_json::Value;

#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// sluice's API address.
    #[arg(long, env = "SLUICE_API_URL", default_value = "http://127.0.0.1:8288", global = true)]
    pub api: String,
    /// Signing key, for a sluice in production mode.
    #[arg(long, env = "SLUICE_SIGNING_KEY", global = true, hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Print the JSON envelope on stdout instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug)]
pub struct ApiFailure {
    pub code: String,
    pub message: String,
}

impl ApiArgs {
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, ApiFailure> {
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().expect("client");
        let url = format!("{}{}", self.api.trim_end_matches('/'), path);
        let mut req = client.request(method, &url);
        if let Some(key) = &self.signing_key {
            req = req.bearer_auth(sluice_protocol::signing::hashed_signing_key(key));
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| ApiFailure {
            code: "SLUICE-5001".into(),
            message: format!("cannot reach sluice at {}: {e}", self.api),
        })?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(ApiFailure {
                code: value["code"].as_str().unwrap_or("SLUICE-5001").to_string(),
                message: value["error"].as_str().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}")),
            })
        }
    }
}
