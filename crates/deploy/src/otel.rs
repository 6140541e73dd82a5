//! OTEL stage events `deploy.runtime.{warm,callback_probe,drain,cutover,bake,rollback}`: one span
//! per gate (start and end are the gate's), exported over OTLP when the standard variables are set:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and
//! `OTEL_EXPORTER_OTLP_PROTOCOL` = `http/protobuf` (the spec's default) or `grpc`.
//! Attributes: `deploy.id`, `deploy.app_id`, `deploy.deployment.new`, `deploy.deployment.previous`,
//! `deploy.gate`, `deploy.gate.status`, `deploy.gate.message`, `deploy.gate.duration_ms`,
//! `deploy.verdict` (so far), `deploy.evidence` (JSON) and `deploy.evidence.<key>` for scalar evidence.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Span, SpanKind, Status, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::Value;

use crate::report::{DeployReport, GateReport, GateStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

pub struct OtelEmitter {
    provider: SdkTracerProvider,
    pub protocol: Protocol,
}

impl OtelEmitter {
    /// From the standard environment; `Ok(None)` when no endpoint is set.
    pub fn from_env() -> Result<Option<OtelEmitter>, String> {
        let set = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
            return Ok(None);
        }
        let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
            .unwrap_or("http/protobuf")
        {
            "grpc" => Protocol::Grpc,
            "http/protobuf" => Protocol::HttpProtobuf,
            other => {
                return Err(format!("OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: use grpc or http/protobuf"))
            }
        };
        Self::build(protocol, None).map(Some)
    }

    /// Build with an explicit endpoint (`None`: from the environment, as the SDK reads it).
    /// Must be called inside a tokio runtime (the gRPC channel spawns its worker there).
    pub fn build(protocol: Protocol, endpoint: Option<&str>) -> Result<OtelEmitter, String> {
        let exporter = match protocol {
            Protocol::Grpc => {
                let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e);
                }
                b.with_timeout(Duration::from_secs(5)).build()
            }
            Protocol::HttpProtobuf => {
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
                if let Some(e) = endpoint {
                    b = b.with_endpoint(format!("{}/v1/traces", e.trim_end_matches('/')));
                }
                // The blocking client is built on its own thread: building it on a runtime thread panics.
                let client = std::thread::spawn(|| {
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().ok()
                })
                .join()
                .ok()
                .flatten();
                if let Some(c) = client {
                    b = b.with_http_client(c);
                }
                b.build()
            }
        }
        .map_err(|e| format!("OTLP exporter: {e}"))?;
        let resource = Resource::builder().with_service_name("sluice-deploy").build();
        // The batch processor exports from its own thread, never blocking the runtime's workers.
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        Ok(OtelEmitter { provider, protocol })
    }

    /// One span for a finished gate.
    pub fn emit(&self, report: &DeployReport, gate: &GateReport) {
        let tracer = self.provider.tracer("sluice-deploy");
        let to_time = |ms: Option<i64>| ms.map(|m| UNIX_EPOCH + Duration::from_millis(m.max(0) as u64));
        let mut attrs = vec![
            KeyValue::new("deploy.id", report.deploy_id.clone()),
            KeyValue::new("deploy.adapter", report.adapter.clone()),
            KeyValue::new("deploy.url", report.url.clone()),
            KeyValue::new("deploy.app_id", report.app_id.clone().unwrap_or_default()),
            KeyValue::new("deploy.deployment.new", report.new_deployment_id.clone().unwrap_or_default()),
            KeyValue::new("deploy.deployment.previous", report.previous_deployment_id.clone().unwrap_or_default()),
            KeyValue::new("deploy.gate", gate.gate.as_str()),
            KeyValue::new("deploy.gate.status", gate.status.as_str()),
            KeyValue::new("deploy.gate.message", gate.message.clone()),
            KeyValue::new("deploy.gate.duration_ms", gate.duration_ms.unwrap_or(0)),
            KeyValue::new("deploy.verdict", report.verdict.as_str()),
            KeyValue::new("deploy.evidence", gate.evidence.to_string()),
        ];
        if let Value::Object(m) = &gate.evidence {
            for (k, v) in m {
                let key = format!("deploy.evidence.{k}");
                match v {
                    Value::String(s) => attrs.push(KeyValue::new(key, s.clone())),
                    Value::Bool(b) => attrs.push(KeyValue::new(key, *b)),
                    Value::Number(n) if n.is_i64() => attrs.push(KeyValue::new(key, n.as_i64().unwrap_or(0))),
                    Value::Number(n) => attrs.push(KeyValue::new(key, n.as_f64().unwrap_or(0.0))),
                    _ => {}
                }
            }
        }
        let mut builder =
            tracer.span_builder(gate.gate.event_name()).with_kind(SpanKind::Internal).with_attributes(attrs);
        if let Some(t) = to_time(gate.started_at_ms) {
            builder = builder.with_start_time(t);
        }
        let mut span = builder.start(&tracer);
        let status = match gate.status {
            GateStatus::Fail => Status::error(gate.message.clone()),
            _ => Status::Ok,
        };
        span.set_status(status);
        span.end_with_timestamp(to_time(gate.ended_at_ms).unwrap_or_else(SystemTime::now));
    }

    /// Flush and stop (blocking: call from `spawn_blocking` or a plain thread).
    pub fn shutdown(&self) -> Result<(), String> {
        self.provider.force_flush().map_err(|e| e.to_string())?;
        self.provider.shutdown().map_err(|e| e.to_string())
    }
}
