//! Shell hooks (`--on-cutover`, `--on-rollback`): `sh -c CMD` with the deployments in the env,
//! so a Kubernetes or launchd user can flip traffic their own way.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Run `cmd` with `env`; returns the evidence (exit code, duration, output tail) and whether it succeeded.
pub async fn run_hook(cmd: &str, env: &[(String, String)], timeout: Duration) -> (bool, Value) {
    let started = Instant::now();
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(cmd).stdin(std::process::Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = tokio::time::timeout(timeout, c.output()).await;
    let ms = started.elapsed().as_millis() as u64;
    let tail = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        let s = s.trim();
        s.chars().rev().take(500).collect::<Vec<_>>().into_iter().rev().collect::<String>()
    };
    match out {
        Err(_) => (false, json!({"command": cmd, "ok": false, "error": "timed out", "duration_ms": ms})),
        Ok(Err(e)) => (false, json!({"command": cmd, "ok": false, "error": e.to_string(), "duration_ms": ms})),
        Ok(Ok(o)) => {
            let ok = o.status.success();
            (
                ok,
                json!({"command": cmd, "ok": ok, "exit_code": o.status.code(), "duration_ms": ms,
                       "stdout": tail(&o.stdout), "stderr": tail(&o.stderr)}),
            )
        }
    }
}
