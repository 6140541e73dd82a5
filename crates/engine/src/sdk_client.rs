//! Outbound HTTP to SDK workers. Every call has a deadline; in cloud mode every request is signed
//! over its JCS body and every answer's signature is checked.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use sluice_protocol::signing;

use crate::clock::SharedClock;
use crate::config::EngineConfig;

#[derive(Debug, Clone)]
pub struct SdkResponse {
    pub status: u16,
    /// Lower-cased header names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl SdkResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// The SDK could not be reached at all (refused, reset, timed out): not the function's fault.
#[derive(Debug, Clone)]
pub struct Unreachable(pub String);

#[derive(Clone)]
pub struct SdkClient {
    http: reqwest::Client,
    config: EngineConfig,
    clock: SharedClock,
}

impl SdkClient {
    pub fn new(config: EngineConfig, clock: SharedClock) -> SdkClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client with no TLS settings always builds");
        SdkClient { http, config, clock }
    }

    fn sign_headers(&self, body: &[u8]) -> Option<String> {
        let key = self.config.signing_key()?;
        Some(signing::sign(key, body, self.clock.now_ms() / 1000))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        extra_headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<SdkResponse, Unreachable> {
        let bytes = body.map(signing::canonical_json).unwrap_or_default();
        let mut req = self
            .http
            .request(method, url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("x-inngest-server-kind", self.config.server_kind)
            .header("user-agent", concat!("sluice/", env!("CARGO_PKG_VERSION")));
        for (k, v) in extra_headers {
            req = req.header(*k, *v);
        }
        if let Some(sig) = self.sign_headers(&bytes) {
            req = req.header("x-inngest-signature", sig);
        }
        let resp = req.body(bytes).send().await.map_err(|e| Unreachable(describe(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_string())))
            .collect();
        let body = resp.bytes().await.map_err(|e| Unreachable(describe(&e)))?.to_vec();
        Ok(SdkResponse { status, headers, body })
    }

    /// POST a Call Request.
    pub async fn call(&self, url: &str, body: &Value, run_id: &str) -> Result<SdkResponse, Unreachable> {
        self.send(
            reqwest::Method::POST,
            url,
            Some(body),
            &[("x-run-id", run_id), ("x-inngest-req-version", "2")],
            self.config.call_timeout,
        )
        .await
    }

    /// Ask the SDK at `url` to sync: an in-band request it may answer with its whole definition,
    /// or acknowledge after calling `/fn/register` itself.
    pub async fn sync_put(&self, url: &str) -> Result<SdkResponse, Unreachable> {
        let body = serde_json::json!({ "url": url });
        self.send(
            reqwest::Method::PUT,
            url,
            Some(&body),
            &[("x-inngest-sync-kind", "in_band")],
            self.config.sync_timeout,
        )
        .await
    }

    /// `POST ?probe=trust`: the SDK answers 200 with an empty body (signed in cloud mode).
    pub async fn trust_probe(&self, url: &str) -> Result<SdkResponse, Unreachable> {
        self.send(reqwest::Method::POST, url, None, &[], self.config.sync_timeout).await
    }

    /// Introspection `GET` (signed in cloud mode, where JS refuses unsigned ones).
    pub async fn introspect(&self, url: &str) -> Result<SdkResponse, Unreachable> {
        self.send(reqwest::Method::GET, url, None, &[], self.config.sync_timeout).await
    }

    /// In cloud mode an answer must carry a valid signature; a forged or stripped one is refused.
    pub fn verify_answer(&self, resp: &SdkResponse) -> Result<(), String> {
        if self.config.signing_keys.is_empty() {
            return Ok(());
        }
        let Some(sig) = resp.header("x-inngest-signature") else {
            return Err("the SDK answer is not signed".into());
        };
        signing::verify(&self.config.signing_keys, sig, &resp.body, self.clock.now_ms() / 1000)
            .map_err(|e| e.to_string())
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// The step URL for one item: the function's runtime URL with `stepId` set.
pub fn step_url(base: &str, step_id: &str) -> String {
    match url::Url::parse(base) {
        Ok(mut u) => {
            let pairs: Vec<(String, String)> =
                u.query_pairs().filter(|(k, _)| k != "stepId").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            u.query_pairs_mut().clear().extend_pairs(pairs).append_pair("stepId", step_id);
            u.to_string()
        }
        Err(_) => base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn step_url_replaces_the_step_id() {
        assert_eq!(
            super::step_url("http://localhost:3000/api/inngest?fnId=app-f&stepId=step", "abc"),
            "http://localhost:3000/api/inngest?fnId=app-f&stepId=abc"
        );
    }
}
