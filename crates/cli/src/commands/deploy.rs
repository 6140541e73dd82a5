//! `sluice deploy` (the gate pipeline of the `sluice-deploy` crate) and
//! `sluice deploy verify-runtime` (the single verification surface).
//!
//! Reports are persisted as one JSON file per deploy under the state dir (`--state-dir`,
//! `SLUICE_DEPLOY_DIR`, default `./.sluice/deploys`): `<deploy id>.json`, rewritten on every gate
//! change so an ongoing deploy can be read, and `latest` holding the last deploy id. Workers that
//! `--start` launched are recorded in `workers/<app id>.json` so the next `--start` deploy can stop
//! the old process once its deployment has drained and the bake passed.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sluice_deploy::config::parse_duration;
use sluice_deploy::otel::OtelEmitter;
use sluice_deploy::pipeline::now_ms;
use sluice_deploy::{
    run_deploy, DeployReport, DeployRequest, Gate, GateConfig, GateReport, GateStatus, Observer, RuntimeAdapter,
    SluiceAdapter, Verdict,
};

use crate::client::ApiArgs;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DeployArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Where deploy reports and started-worker records live.
    #[arg(long, env = "SLUICE_DEPLOY_DIR", default_value = "./.sluice/deploys", global = true)]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Option<DeploySub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum DeploySub {
    /// Every gate's status of the last (or a given, or the ongoing) deploy, or of the live runtime.
    VerifyRuntime(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    /// The deploy to report on (default: the last one).
    #[arg(long = "deploy")]
    deploy: Option<String>,
    /// Check the live runtime instead: health, apps reachable, stats, doctor.
    #[arg(long)]
    live: bool,
}

#[derive(Args, Default)]
struct RunArgs {
    /// The new worker's serve URL (you own its process).
    #[arg(long, conflicts_with = "start")]
    url: Option<String>,
    /// Start the new worker with this shell command, with PORT=<free port> in its env.
    #[arg(long)]
    start: Option<String>,
    /// Serve path of a worker started with --start.
    #[arg(long, default_value = "/api/inngest")]
    serve_path: String,
    /// How long a --start worker has to start listening.
    #[arg(long, default_value = "30s")]
    start_timeout: String,
    /// Shell command run right after cutover (env: SLUICE_NEW_URL, SLUICE_PREVIOUS_URL, ...).
    #[arg(long)]
    on_cutover: Option<String>,
    /// Shell command run after a rollback.
    #[arg(long)]
    on_rollback: Option<String>,
    #[arg(long, default_value = "2m")]
    hook_timeout: String,
    /// TOML file with gate thresholds (top level or a [deploy] table); flags override it.
    #[arg(long = "gates")]
    gates_file: Option<PathBuf>,
    #[arg(long)]
    warm_window: Option<String>,
    #[arg(long)]
    check_interval: Option<String>,
    #[arg(long)]
    probe_deadline: Option<String>,
    #[arg(long)]
    drain_timeout: Option<String>,
    #[arg(long)]
    drain_threshold: Option<u64>,
    #[arg(long)]
    bake_window: Option<String>,
    #[arg(long)]
    baseline_window: Option<String>,
    #[arg(long)]
    max_failure_rate_increase: Option<f64>,
    #[arg(long)]
    stale_after: Option<String>,
    /// A function the new deployment may drop (repeatable).
    #[arg(long = "allow-removed")]
    allow_removed: Vec<String>,
}

/// Fix hints of the SLUICE-7xxx codes (the same table as docs/errors.md).
pub fn deploy_hint(code: &str) -> &'static str {
    match code {
        "SLUICE-7001" => "The runtime answered something unexpected: check that --api points at sluice.",
        "SLUICE-7101" => "The new worker failed warm: read `result.gates[warm].evidence` (sync error, health, removed functions; allow a removal with --allow-removed).",
        "SLUICE-7201" => "The callback probe failed on the new worker: run the probe function locally and read the worker's logs.",
        "SLUICE-7301" => "The old deployment still has calls in flight: wait and re-run verify-runtime, or raise --drain-timeout. Nothing was shut down.",
        "SLUICE-7302" => "Add a probe function on `sluice/deploy.probe` (README, Deploying workers) so the probe can pass instead of degrading.",
        "SLUICE-7401" => "Cutover failed (activation or the --on-cutover hook): read the cutover evidence.",
        "SLUICE-7501" => "The bake found a regression and rolled back: read the bake evidence (breaches).",
        "SLUICE-7601" => "A breach could not be rolled back: make the prior deployment current by hand (POST /v1/deployments/{id}/activate).",
        "SLUICE-7701" => "No deploy report: run `sluice deploy --url URL`, or `verify-runtime --live`.",
        "SLUICE-7702" => "The deploy is still running: re-run verify-runtime when it ends.",
        "SLUICE-7801" => "The live runtime is unhealthy: read `result.checks`.",
        "SLUICE-7901" => "The --start command did not listen on $PORT in time: run it by hand and read its log.",
        "SLUICE-7902" => "Fix the deploy flag or gate file value named in the message.",
        _ => "See docs/errors.md.",
    }
}

fn envelope(command: &str, ok: bool, result: Value, error: Option<(&str, String)>, next: Vec<Value>) -> Value {
    let mut v = json!({"ok": ok, "command": format!("sluice {command}"), "result": result, "next_actions": next});
    if let Some((code, message)) = error {
        v["error"] = json!({"message": message, "code": code});
        v["fix"] = json!(deploy_hint(code));
    }
    v
}

fn action(command: &str, description: &str) -> Value {
    json!({"command": command, "description": description})
}

fn verdict_code(r: &DeployReport) -> Option<&'static str> {
    let failed = |g: Gate| r.gate(g).status == GateStatus::Fail;
    Some(match r.verdict {
        Verdict::Healthy => return None,
        Verdict::Running => "SLUICE-7702",
        Verdict::Held => "SLUICE-7301",
        Verdict::Degraded => "SLUICE-7302",
        Verdict::Blocked if failed(Gate::Warm) => "SLUICE-7101",
        Verdict::Blocked => "SLUICE-7201",
        Verdict::RolledBack if failed(Gate::Cutover) => "SLUICE-7401",
        Verdict::RolledBack => "SLUICE-7501",
        Verdict::Failed => "SLUICE-7601",
    })
}

fn report_envelope(command: &str, r: &DeployReport) -> Value {
    let error = verdict_code(r).map(|c| (c, r.message.clone()));
    let next = vec![
        action("sluice deploy verify-runtime --live", "Check the live runtime"),
        action(&format!("sluice deploy verify-runtime --deploy {}", r.deploy_id), "Re-read this deploy's gates"),
    ];
    let mut result = serde_json::to_value(r).unwrap_or(Value::Null);
    result["mode"] = json!("deploy");
    result["verdict"] = json!(r.verdict.as_str());
    envelope(command, r.verdict == Verdict::Healthy, result, error, next)
}

pub async fn run(args: DeployArgs) -> i32 {
    let bearer = args.api.signing_key.as_deref().map(sluice_protocol::signing::hashed_signing_key);
    let adapter = SluiceAdapter::new(&args.api.api, bearer);
    match args.command {
        Some(DeploySub::VerifyRuntime(v)) => verify(&adapter, &args.state_dir, v).await,
        None => deploy(&adapter, &args.state_dir, args.run).await,
    }
}

fn config_error(message: String) -> i32 {
    println!("{}", envelope("deploy", false, Value::Null, Some(("SLUICE-7902", message)), vec![]));
    4
}

fn gate_config(a: &RunArgs) -> Result<GateConfig, String> {
    let mut c = match &a.gates_file {
        Some(p) => {
            GateConfig::from_toml(&std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?)
                .map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => GateConfig::default(),
    };
    let d = |v: &Option<String>, slot: &mut Duration| -> Result<(), String> {
        if let Some(s) = v {
            *slot = parse_duration(s)?;
        }
        Ok(())
    };
    d(&a.warm_window, &mut c.warm_window)?;
    d(&a.check_interval, &mut c.check_interval)?;
    d(&a.probe_deadline, &mut c.probe_deadline)?;
    d(&a.drain_timeout, &mut c.drain_timeout)?;
    d(&a.bake_window, &mut c.bake_window)?;
    d(&a.baseline_window, &mut c.baseline_window)?;
    d(&a.stale_after, &mut c.stale_after)?;
    if let Some(t) = a.drain_threshold {
        c.drain_threshold = t;
    }
    if let Some(m) = a.max_failure_rate_increase {
        c.max_failure_rate_increase = m;
    }
    c.allow_removed.extend(a.allow_removed.iter().cloned());
    Ok(c)
}

// ---------------------------------------------------------------- persistence

fn report_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

fn save_report(dir: &Path, r: &DeployReport) {
    let _ = std::fs::create_dir_all(dir);
    let tmp = dir.join(format!(".{}.tmp", r.deploy_id));
    if std::fs::write(&tmp, serde_json::to_vec_pretty(r).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, report_path(dir, &r.deploy_id));
    }
    let _ = std::fs::write(dir.join("latest"), &r.deploy_id);
}

fn load_report(dir: &Path, id: Option<&str>) -> Option<DeployReport> {
    let id = match id {
        Some(i) => i.to_string(),
        None => std::fs::read_to_string(dir.join("latest")).ok()?.trim().to_string(),
    };
    serde_json::from_slice(&std::fs::read(report_path(dir, &id)).ok()?).ok()
}

fn worker_record_path(dir: &Path, app_id: &str) -> PathBuf {
    dir.join("workers").join(format!("{app_id}.json"))
}

fn pid_alive(pid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// SIGTERM the process group sluice started, then SIGKILL after 5 s.
async fn stop_process(pid: u32) -> Value {
    let signal = |sig: &str| {
        let _ = std::process::Command::new("kill")
            .args([sig, "--", &format!("-{pid}")])
            .stderr(std::process::Stdio::null())
            .status();
    };
    signal("-TERM");
    for _ in 0..50 {
        if !pid_alive(pid) {
            return json!({"pid": pid, "stopped": "SIGTERM"});
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal("-KILL");
    json!({"pid": pid, "stopped": "SIGKILL"})
}

// ---------------------------------------------------------------- progress and observers

struct Progress {
    tty: bool,
    current: Arc<Mutex<Option<(Gate, Instant)>>>,
}

impl Progress {
    fn new() -> Progress {
        let tty = std::io::stderr().is_terminal();
        let current: Arc<Mutex<Option<(Gate, Instant)>>> = Arc::new(Mutex::new(None));
        if tty {
            let c = current.clone();
            tokio::spawn(async move {
                let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
                let mut i = 0;
                loop {
                    if let Some((g, t)) = *c.lock().unwrap() {
                        eprint!(
                            "\r\x1b[2K{} {:<15} {:>6.1}s",
                            frames[i % frames.len()],
                            g.as_str(),
                            t.elapsed().as_secs_f64()
                        );
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        Progress { tty, current }
    }
}

impl Observer for Progress {
    fn gate_started(&self, _r: &DeployReport, gate: Gate) {
        *self.current.lock().unwrap() = Some((gate, Instant::now()));
        if !self.tty {
            eprintln!("[deploy] {:<15} running", gate.as_str());
        }
    }

    fn gate_finished(&self, r: &DeployReport, gate: Gate) {
        *self.current.lock().unwrap() = None;
        let g = r.gate(gate);
        let mark = match g.status {
            GateStatus::Pass => "✓",
            GateStatus::Fail => "✗",
            GateStatus::Held | GateStatus::Degraded => "!",
            _ => "-",
        };
        let secs = g.duration_ms.unwrap_or(0) as f64 / 1000.0;
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        eprintln!("{mark} {:<15} {:<9} {:>6.1}s  {}", gate.as_str(), g.status.as_str(), secs, g.message);
    }
}

struct Persist(PathBuf);

impl Observer for Persist {
    fn gate_started(&self, r: &DeployReport, _gate: Gate) {
        save_report(&self.0, r);
    }
    fn gate_finished(&self, r: &DeployReport, _gate: Gate) {
        save_report(&self.0, r);
    }
    fn finished(&self, r: &DeployReport) {
        save_report(&self.0, r);
    }
}

struct Otel(OtelEmitter);

impl Observer for Otel {
    fn gate_finished(&self, r: &DeployReport, gate: Gate) {
        self.0.emit(r, r.gate(gate));
    }
}

// ---------------------------------------------------------------- deploy

async fn start_worker(
    cmd: &str,
    serve_path: &str,
    timeout: Duration,
    dir: &Path,
) -> Result<(u32, String, PathBuf), String> {
    use std::os::unix::process::CommandExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let logs = dir.join("workers");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let log_path = logs.join(format!("worker-{port}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PORT", port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        // Its own process group: it outlives this command, and is stopped as a group.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let pid = child.id();
    let url = format!("http://127.0.0.1:{port}{serve_path}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        if client.get(&url).send().await.is_ok() {
            return Ok((pid, url, log_path));
        }
        if started.elapsed() > timeout || !pid_alive(pid) {
            stop_process(pid).await;
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = tail.chars().rev().take(400).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(format!("{cmd:?} did not listen on {url} within {timeout:?}: {tail}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn deploy(adapter: &SluiceAdapter, dir: &Path, a: RunArgs) -> i32 {
    let config = match gate_config(&a) {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    let hook_timeout = match parse_duration(&a.hook_timeout) {
        Ok(d) => d,
        Err(e) => return config_error(e),
    };
    let start_timeout = match parse_duration(&a.start_timeout) {
        Ok(d) => d,
        Err(e) => return config_error(e),
    };
    let mut started: Option<(u32, PathBuf)> = None;
    let url = match (&a.url, &a.start) {
        (Some(u), None) => u.clone(),
        (None, Some(cmd)) => match start_worker(cmd, &a.serve_path, start_timeout, dir).await {
            Ok((pid, url, log)) => {
                eprintln!("[deploy] started {cmd:?} (pid {pid}) at {url}");
                started = Some((pid, log));
                url
            }
            Err(e) => {
                println!("{}", envelope("deploy", false, Value::Null, Some(("SLUICE-7901", e)), vec![]));
                return 1;
            }
        },
        _ => return config_error("pass --url URL or --start CMD".into()),
    };
    let otel = match OtelEmitter::from_env() {
        Ok(o) => o.map(Otel),
        Err(e) => return config_error(e),
    };
    let req = DeployRequest {
        deploy_id: ulid::Ulid::new().to_string(),
        url,
        config,
        on_cutover: a.on_cutover.clone(),
        on_rollback: a.on_rollback.clone(),
        hook_timeout,
    };
    eprintln!("[deploy] {} → {} via {}", req.deploy_id, req.url, adapter.endpoint());
    let progress = Progress::new();
    let persist = Persist(dir.to_path_buf());
    let mut observers: Vec<&dyn Observer> = vec![&progress, &persist];
    if let Some(o) = &otel {
        observers.push(o);
    }
    let mut report = run_deploy(adapter, &req, &observers).await;

    // Processes: the new one we started stays only if it took traffic; the old one we started
    // is stopped only after its deployment drained and the bake passed (rollback needs it alive).
    let mut processes = report.processes.clone();
    processes["deployer_pid"] = json!(std::process::id());
    let released = matches!(report.verdict, Verdict::Healthy | Verdict::Degraded | Verdict::Held);
    if let Some(app) = report.app_id.clone() {
        let record_path = worker_record_path(dir, &app);
        let old: Option<Value> = std::fs::read(&record_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(old) = old {
            let same = old["deployment_id"].as_str() == report.previous_deployment_id.as_deref();
            let drained = report.gate(Gate::Drain).status == GateStatus::Pass;
            if let (true, true, true, Some(pid)) = (same, drained, released, old["pid"].as_u64()) {
                processes["old_worker"] = stop_process(pid as u32).await;
            } else if same {
                processes["old_worker"] = json!({"pid": old["pid"], "left_running": true});
            }
        }
        if let Some((pid, log)) = &started {
            if released {
                let rec = json!({"pid": pid, "url": req.url, "deployment_id": report.new_deployment_id,
                                 "deploy_id": report.deploy_id, "log": log});
                let _ = std::fs::create_dir_all(dir.join("workers"));
                let _ = std::fs::write(&record_path, rec.to_string());
                processes["new_worker"] = json!({"pid": pid, "log": log, "kept": true});
            } else {
                processes["new_worker"] = stop_process(*pid).await;
            }
        }
    } else if let Some((pid, _)) = &started {
        processes["new_worker"] = stop_process(*pid).await;
    }
    report.processes = processes;
    save_report(dir, &report);
    if let Some(o) = otel {
        let _ = tokio::task::spawn_blocking(move || o.0.shutdown()).await;
    }
    eprintln!("[deploy] verdict: {} — {}", report.verdict.as_str(), report.message);
    println!("{}", serde_json::to_string_pretty(&report_envelope("deploy", &report)).unwrap_or_default());
    report.verdict.exit_code()
}

// ---------------------------------------------------------------- verify-runtime

async fn verify(adapter: &SluiceAdapter, dir: &Path, v: VerifyArgs) -> i32 {
    const CMD: &str = "deploy verify-runtime";
    if v.live {
        return verify_live(adapter).await;
    }
    let Some(mut report) = load_report(dir, v.deploy.as_deref()) else {
        let msg = match &v.deploy {
            Some(id) => format!("no deploy report {id} under {}", dir.display()),
            None => format!("no deploy report under {}", dir.display()),
        };
        let next = vec![action("sluice deploy verify-runtime --live", "Check the live runtime without a deploy")];
        println!("{}", envelope(CMD, false, Value::Null, Some(("SLUICE-7701", msg)), next));
        return 4;
    };
    // An ongoing deploy whose process is gone was interrupted: it will never finish on its own.
    if report.verdict == Verdict::Running {
        let pid = report.processes["deployer_pid"].as_u64();
        if pid.is_some_and(|p| !pid_alive(p as u32)) {
            report.verdict = Verdict::Failed;
            report.message = "the deploy was interrupted before its gates finished".into();
        }
    }
    println!("{}", serde_json::to_string_pretty(&report_envelope(CMD, &report)).unwrap_or_default());
    report.verdict.exit_code()
}

async fn verify_live(adapter: &SluiceAdapter) -> i32 {
    const CMD: &str = "deploy verify-runtime";
    let started = now_ms();
    let mut checks: Vec<GateReport> = vec![];
    let mut push = |name: &str, status: GateStatus, message: String, evidence: Value| {
        let mut g = GateReport::pending(Gate::Bake);
        g.status = status;
        g.message = message;
        g.evidence = json!({"check": name, "detail": evidence});
        checks.push(g);
    };
    let health = adapter.health().await;
    let reachable = health.is_ok();
    match &health {
        Ok(h) => push("health", GateStatus::Pass, "sluice answers /health".into(), h.clone()),
        Err(e) => push("health", GateStatus::Fail, e.message.clone(), json!({"code": e.code})),
    }
    if reachable {
        match adapter.apps().await {
            Ok(apps) => {
                let bad: Vec<_> =
                    apps.iter().filter(|a| a["status"] == "Unreachable").map(|a| a["id"].clone()).collect();
                let st = if bad.is_empty() { GateStatus::Pass } else { GateStatus::Fail };
                push(
                    "apps",
                    st,
                    format!("{} apps, {} unreachable", apps.len(), bad.len()),
                    json!({"unreachable": bad}),
                );
                for app in apps.iter().filter_map(|a| a["id"].as_str()) {
                    if let Ok(ds) = adapter.deployments(app).await {
                        let current = ds.iter().find(|d| d.current);
                        let st = if current.is_some() { GateStatus::Pass } else { GateStatus::Fail };
                        let draining: Vec<_> =
                            ds.iter().filter(|d| d.status == "draining").map(|d| d.id.clone()).collect();
                        push(
                            &format!("deployments:{app}"),
                            st,
                            format!("current {}", current.map(|d| d.id.as_str()).unwrap_or("none")),
                            json!({"current": current.map(|d| &d.id), "draining": draining}),
                        );
                    }
                }
            }
            Err(e) => push("apps", GateStatus::Fail, e.message.clone(), json!({"code": e.code})),
        }
        match adapter.stats(0, GateConfig::default().stale_after.as_millis() as i64, None).await {
            Ok(s) => {
                let ok = s.stale_running == 0 && s.paused_unreachable == 0 && s.unreachable_apps.is_empty();
                let st = if ok { GateStatus::Pass } else { GateStatus::Fail };
                let msg = format!("{} stale running, {} parked unreachable", s.stale_running, s.paused_unreachable);
                push("stats", st, msg, serde_json::to_value(&s).unwrap_or(Value::Null));
            }
            Err(e) => push("stats", GateStatus::Fail, e.message.clone(), json!({"code": e.code})),
        }
        match adapter.doctor().await {
            Ok(Some(d)) => {
                let n = sluice_deploy::adapter::doctor_findings(&d);
                let st = if n == 0 { GateStatus::Pass } else { GateStatus::Fail };
                push("doctor", st, format!("{n} findings"), d);
            }
            Ok(None) => push("doctor", GateStatus::Skipped, "GET /v1/doctor is not available".into(), Value::Null),
            Err(e) => push("doctor", GateStatus::Fail, e.message.clone(), json!({"code": e.code})),
        }
    }
    let healthy = checks.iter().all(|c| matches!(c.status, GateStatus::Pass | GateStatus::Skipped));
    let checks_json: Vec<Value> = checks
        .iter()
        .map(|c| json!({"name": c.evidence["check"], "status": c.status.as_str(), "message": c.message, "evidence": c.evidence["detail"]}))
        .collect();
    let result = json!({
        "mode": "live",
        "adapter": adapter.name(),
        "api": adapter.endpoint(),
        "verdict": if healthy { "healthy" } else { "unhealthy" },
        "checked_at_ms": started,
        "duration_ms": now_ms() - started,
        "checks": checks_json,
    });
    let error = (!healthy).then(|| {
        let failed: Vec<_> = checks
            .iter()
            .filter(|c| c.status == GateStatus::Fail)
            .map(|c| c.evidence["check"].as_str().unwrap_or("").to_string())
            .collect();
        ("SLUICE-7801", format!("live runtime unhealthy: {}", failed.join(", ")))
    });
    let next = vec![action("sluice deploy verify-runtime", "Report on the last deploy")];
    println!("{}", serde_json::to_string_pretty(&envelope(CMD, healthy, result, error, next)).unwrap_or_default());
    if healthy {
        0
    } else {
        1
    }
}
