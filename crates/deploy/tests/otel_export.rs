//! The stage events reach a real OTLP receiver over both transports: gRPC (the in-process
//! `fake-opentelemetry-collector`) and HTTP/protobuf (a minimal receiver on a TCP socket).

use std::time::Duration;

use serde_json::json;
use sluice_deploy::otel::{OtelEmitter, Protocol};
use sluice_deploy::{DeployReport, Gate, GateStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn report() -> DeployReport {
    let mut r = DeployReport::new("dep-1".into(), "sluice", "http://sluice", "http://w/api/inngest", json!({}), 1_000);
    r.new_deployment_id = Some("new-dep".into());
    r.previous_deployment_id = Some("old-dep".into());
    for g in [Gate::Warm, Gate::CallbackProbe, Gate::Rollback] {
        let gr = r.gate_mut(g);
        gr.status = if g == Gate::Rollback { GateStatus::Pass } else { GateStatus::Degraded };
        gr.started_at_ms = Some(1_000);
        gr.ended_at_ms = Some(2_000);
        gr.duration_ms = Some(1_000);
        gr.evidence = json!({"checks": 3, "mode": "trust"});
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_reaches_the_fake_collector() {
    let mut collector = fake_opentelemetry_collector::FakeCollectorServer::start().await.unwrap();
    let emitter = OtelEmitter::build(Protocol::Grpc, Some(&collector.endpoint())).unwrap();
    let r = report();
    for g in [Gate::Warm, Gate::CallbackProbe, Gate::Rollback] {
        emitter.emit(&r, r.gate(g));
    }
    tokio::task::spawn_blocking(move || emitter.shutdown()).await.unwrap().unwrap();
    let spans = collector.exported_spans(3, Duration::from_secs(10)).await;
    let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"deploy.runtime.warm"), "{names:?}");
    assert!(names.contains(&"deploy.runtime.callback_probe"), "{names:?}");
    assert!(names.contains(&"deploy.runtime.rollback"), "{names:?}");
    let probe = spans.iter().find(|s| s.name == "deploy.runtime.callback_probe").unwrap();
    assert!(probe.attributes["deploy.gate.status"].contains("degraded"), "{probe:?}");
    assert!(probe.attributes["deploy.deployment.new"].contains("new-dep"), "{probe:?}");
    assert!(probe.attributes["deploy.evidence.mode"].contains("trust"), "{probe:?}");
    assert_eq!(probe.start_time_unix_nano, 1_000_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_posts_to_v1_traces() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![];
        let mut chunk = [0u8; 8192];
        // Read headers, then Content-Length bytes of body.
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len || n == 0 {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        buf
    });
    let emitter = OtelEmitter::build(Protocol::HttpProtobuf, Some(&endpoint)).unwrap();
    let r = report();
    emitter.emit(&r, r.gate(Gate::Warm));
    tokio::task::spawn_blocking(move || emitter.shutdown()).await.unwrap().unwrap();
    let buf = tokio::time::timeout(Duration::from_secs(10), received).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("POST /v1/traces"), "{text}");
    assert!(text.to_ascii_lowercase().contains("application/x-protobuf"), "{text}");
    for needle in ["deploy.runtime.warm", "deploy.gate.status", "degraded", "new-dep", "old-dep", "sluice-deploy"] {
        assert!(text.contains(needle), "{needle} in the protobuf body: {text}");
    }
}
