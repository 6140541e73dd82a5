//! Executes the gates the state machine ([`crate::machine`]) asks for, against a [`RuntimeAdapter`].

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::adapter::{doctor_findings, AdapterError, ProbeStart, RuntimeAdapter, Stats};
use crate::config::GateConfig;
use crate::hooks::run_hook;
use crate::machine::{Outcome, Phase};
use crate::report::{DeployReport, Gate, GateStatus, Verdict};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub deploy_id: String,
    /// The new worker's serve URL.
    pub url: String,
    pub config: GateConfig,
    pub on_cutover: Option<String>,
    pub on_rollback: Option<String>,
    pub hook_timeout: Duration,
}

/// Told about every change of the report (progress display, persistence, OTEL).
pub trait Observer: Send + Sync {
    fn gate_started(&self, _report: &DeployReport, _gate: Gate) {}
    fn gate_finished(&self, _report: &DeployReport, _gate: Gate) {}
    fn finished(&self, _report: &DeployReport) {}
}

struct Ctx<'a> {
    adapter: &'a dyn RuntimeAdapter,
    req: &'a DeployRequest,
    observers: &'a [&'a dyn Observer],
    report: DeployReport,
    baseline: Stats,
    baseline_doctor: Option<u64>,
    previous_url: Option<String>,
    cutover_at_ms: Option<i64>,
    reason: String,
}

struct GateResult {
    status: GateStatus,
    message: String,
    evidence: Value,
}

fn result(status: GateStatus, message: impl Into<String>, evidence: Value) -> GateResult {
    GateResult { status, message: message.into(), evidence }
}

fn err_evidence(e: &AdapterError) -> Value {
    json!({"error": e.message, "code": e.code})
}

/// Run the whole pipeline; never panics on runtime errors: they become gate failures.
pub async fn run_deploy(
    adapter: &dyn RuntimeAdapter,
    req: &DeployRequest,
    observers: &[&dyn Observer],
) -> DeployReport {
    let config = serde_json::to_value(&req.config).unwrap_or(Value::Null);
    let report =
        DeployReport::new(req.deploy_id.clone(), adapter.name(), &adapter.endpoint(), &req.url, config, now_ms());
    let mut ctx = Ctx {
        adapter,
        req,
        observers,
        report,
        baseline: Stats::default(),
        baseline_doctor: None,
        previous_url: None,
        cutover_at_ms: None,
        reason: String::new(),
    };
    let mut phase = Phase::START;
    while let Phase::Gate(gate) = phase {
        ctx.start(gate);
        let r = match gate {
            Gate::Warm => ctx.warm().await,
            Gate::CallbackProbe => ctx.probe().await,
            Gate::Cutover => ctx.cutover().await,
            Gate::Drain => ctx.drain().await,
            Gate::Bake => ctx.bake().await,
            Gate::Rollback => ctx.rollback().await,
        };
        let status = r.status;
        if matches!(status, GateStatus::Fail) && ctx.reason.is_empty() {
            ctx.reason = format!("{}: {}", gate.as_str(), r.message);
        }
        ctx.finish(gate, r);
        phase = phase.next(Outcome::Status(status));
    }
    if phase == Phase::Blocked {
        // The release never took traffic: make sure a later re-sync of it cannot take any either.
        if let Some(id) = ctx.report.new_deployment_id.clone() {
            if let Err(e) = ctx.adapter.set_status(&id, "rolled_back").await {
                ctx.report.processes["blocked_status_error"] = json!(e.message);
            }
        }
    }
    ctx.report.ended_at_ms = Some(now_ms());
    ctx.report.verdict = ctx.report.derive_verdict();
    ctx.report.message = match ctx.report.verdict {
        Verdict::Healthy => "all gates passed".into(),
        Verdict::Degraded => "released; the callback probe was degraded (no probe function: trust probe only)".into(),
        Verdict::Held => "released, but the old deployment did not drain in time: it was left running".into(),
        Verdict::Blocked => format!("release blocked ({}); the current deployment is unchanged", ctx.reason),
        Verdict::RolledBack => format!("rolled back ({}); the prior deployment is current again", ctx.reason),
        Verdict::Failed => format!("deploy failed ({})", ctx.reason),
        Verdict::Running => String::new(),
    };
    for o in ctx.observers {
        o.finished(&ctx.report);
    }
    ctx.report
}

impl Ctx<'_> {
    fn cfg(&self) -> &GateConfig {
        &self.req.config
    }

    fn start(&mut self, gate: Gate) {
        let g = self.report.gate_mut(gate);
        g.status = GateStatus::Running;
        g.started_at_ms = Some(now_ms());
        g.message = "running".into();
        self.report.executed_order.push(gate);
        for o in self.observers {
            o.gate_started(&self.report, gate);
        }
    }

    fn finish(&mut self, gate: Gate, r: GateResult) {
        let g = self.report.gate_mut(gate);
        let end = now_ms();
        g.status = r.status;
        g.ended_at_ms = Some(end);
        g.duration_ms = g.started_at_ms.map(|s| end - s);
        g.message = r.message;
        g.evidence = r.evidence;
        for o in self.observers {
            o.gate_finished(&self.report, gate);
        }
    }

    fn hook_env(&self, gate: Gate) -> Vec<(String, String)> {
        let r = &self.report;
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        vec![
            ("SLUICE_DEPLOY_ID".into(), r.deploy_id.clone()),
            ("SLUICE_DEPLOY_GATE".into(), gate.as_str().into()),
            ("SLUICE_DEPLOY_REASON".into(), self.reason.clone()),
            ("SLUICE_API_URL".into(), r.api.clone()),
            ("SLUICE_APP_ID".into(), s(&r.app_id)),
            ("SLUICE_NEW_DEPLOYMENT_ID".into(), s(&r.new_deployment_id)),
            ("SLUICE_NEW_URL".into(), r.url.clone()),
            ("SLUICE_PREVIOUS_DEPLOYMENT_ID".into(), s(&r.previous_deployment_id)),
            ("SLUICE_PREVIOUS_URL".into(), s(&self.previous_url)),
        ]
    }

    async fn warm(&mut self) -> GateResult {
        let cfg = self.cfg().clone();
        let stale_ms = cfg.stale_after.as_millis() as i64;
        self.baseline_doctor = self.adapter.doctor().await.ok().flatten().map(|d| doctor_findings(&d));
        let staged = match self.adapter.stage(&self.req.url).await {
            Ok(s) => s,
            Err(e) => return result(GateStatus::Fail, format!("the new worker did not sync: {e}"), err_evidence(&e)),
        };
        self.report.app_id = Some(staged.app_id.clone());
        // The pre-deploy baseline the bake compares against: this app's runs only, so another app's
        // failures neither hide nor cause a breach.
        let since = now_ms() - cfg.baseline_window.as_millis() as i64;
        match self.adapter.stats(since, stale_ms, Some(&staged.app_id)).await {
            Ok(s) => self.baseline = s,
            Err(e) => return result(GateStatus::Fail, format!("runtime stats unavailable: {e}"), err_evidence(&e)),
        }
        self.report.new_deployment_id = Some(staged.deployment_id.clone());
        let previous = match self.adapter.deployments(&staged.app_id).await {
            Ok(list) => list.into_iter().find(|d| d.current && d.id != staged.deployment_id),
            Err(e) => return result(GateStatus::Fail, format!("cannot list deployments: {e}"), err_evidence(&e)),
        };
        self.report.previous_deployment_id = previous.as_ref().map(|d| d.id.clone());
        self.previous_url = previous.as_ref().map(|d| d.url.clone());
        let mut evidence = json!({
            "deployment_id": staged.deployment_id,
            "previous_deployment_id": self.report.previous_deployment_id,
            "deployment_status": staged.deployment_status,
            "function_count": staged.function_count,
            "diff": staged.diff,
            "baseline": self.baseline,
            "baseline_doctor_findings": self.baseline_doctor,
        });
        if staged.deployment_status == "current" {
            return result(GateStatus::Fail, "this worker is already the current deployment", evidence);
        }
        let removed: Vec<_> =
            staged.diff.removed.iter().filter(|f| !cfg.allows_removal(&staged.app_id, f)).cloned().collect();
        evidence["removed_not_allowed"] = json!(removed);
        if !removed.is_empty() {
            return result(
                GateStatus::Fail,
                format!(
                    "the new deployment lacks functions the current one has: {} (allow with --allow-removed)",
                    removed.join(", ")
                ),
                evidence,
            );
        }
        let _ = self.adapter.set_status(&staged.deployment_id, "warming").await;
        let started = Instant::now();
        let (mut checks, mut failures, mut streak) = (0u64, 0u64, 0u32);
        let mut last_error = Value::Null;
        loop {
            checks += 1;
            let ok = match self.adapter.introspect(&self.req.url).await {
                Ok(_) => match self.adapter.deployment(&staged.deployment_id).await {
                    Ok(d) if d.status == "rolled_back" || d.status == "retired" => {
                        last_error = json!(format!("deployment is {}", d.status));
                        false
                    }
                    Ok(_) => true,
                    Err(e) => {
                        last_error = json!(e.message);
                        false
                    }
                },
                Err(e) => {
                    last_error = json!(e.message);
                    false
                }
            };
            if ok {
                streak = 0;
            } else {
                failures += 1;
                streak += 1;
            }
            evidence["checks"] = json!(checks);
            evidence["failed_checks"] = json!(failures);
            evidence["last_error"] = last_error.clone();
            evidence["window_ms"] = json!(cfg.warm_window.as_millis() as u64);
            if streak >= cfg.max_health_failures.max(1) {
                return result(GateStatus::Fail, format!("the new worker stopped answering: {last_error}"), evidence);
            }
            if started.elapsed() >= cfg.warm_window {
                break;
            }
            tokio::time::sleep(cfg.check_interval.min(cfg.warm_window.saturating_sub(started.elapsed()))).await;
        }
        result(
            GateStatus::Pass,
            format!("synced and healthy for {}", crate::config::format_duration(cfg.warm_window)),
            evidence,
        )
    }

    async fn probe(&mut self) -> GateResult {
        let id = self.report.new_deployment_id.clone().unwrap_or_default();
        let deadline = self.cfg().probe_deadline;
        let started = Instant::now();
        let outcome = match self.adapter.probe(&id).await {
            Err(e) => return result(GateStatus::Fail, format!("the probe could not start: {e}"), err_evidence(&e)),
            Ok(ProbeStart::Trust { ok, function_count, detail }) => {
                let ev = json!({"mode": "trust", "ok": ok, "function_count": function_count, "detail": detail});
                if ok {
                    result(GateStatus::Degraded, "no probe function: signed trust probe and discovery only", ev)
                } else {
                    result(GateStatus::Fail, format!("trust probe failed: {detail}"), ev)
                }
            }
            Ok(ProbeStart::Function { run_id, function_id }) => {
                let mut ev = json!({"mode": "function", "run_id": run_id, "function_id": function_id,
                                    "deadline_ms": deadline.as_millis() as u64});
                loop {
                    let run = self.adapter.run(&run_id).await;
                    let status = run.as_ref().ok().and_then(|r| r["status"].as_str().map(str::to_string));
                    if let Ok(r) = &run {
                        ev["run_status"] = r["status"].clone();
                        ev["output"] = r["output"].clone();
                        ev["error"] = r["error"].clone();
                    }
                    match status.as_deref() {
                        Some("Completed") => {
                            ev["duration_ms"] = json!(started.elapsed().as_millis() as u64);
                            break result(GateStatus::Pass, "the synthetic run completed on the new deployment", ev);
                        }
                        Some("Failed") | Some("Cancelled") => {
                            break result(
                                GateStatus::Fail,
                                format!("the synthetic run ended {}", status.unwrap_or_default()),
                                ev,
                            )
                        }
                        _ => {}
                    }
                    if started.elapsed() > deadline {
                        break result(GateStatus::Fail, "the synthetic run did not finish before the deadline", ev);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        if matches!(outcome.status, GateStatus::Pass | GateStatus::Degraded) {
            let _ = self.adapter.set_status(&id, "probed").await;
        }
        outcome
    }

    async fn cutover(&mut self) -> GateResult {
        let id = self.report.new_deployment_id.clone().unwrap_or_default();
        let previous = match self.adapter.activate(&id, "draining").await {
            Ok(p) => p,
            Err(e) => return result(GateStatus::Fail, format!("activation failed: {e}"), err_evidence(&e)),
        };
        let at = now_ms();
        self.cutover_at_ms = Some(at);
        let mut ev =
            json!({"activated": id, "previous": previous, "activated_at_ms": at, "previous_status": "draining"});
        match self.adapter.deployment(&id).await {
            Ok(d) if d.current => {}
            Ok(d) => return result(GateStatus::Fail, format!("activation did not stick (status {})", d.status), ev),
            Err(e) => return result(GateStatus::Fail, format!("cannot confirm activation: {e}"), ev),
        }
        if let Some(cmd) = self.req.on_cutover.clone() {
            let (ok, hook) = run_hook(&cmd, &self.hook_env(Gate::Cutover), self.req.hook_timeout).await;
            ev["hook"] = hook;
            if !ok {
                return result(GateStatus::Fail, "the --on-cutover hook failed", ev);
            }
        }
        result(GateStatus::Pass, "the new deployment is current; new runs go to it", ev)
    }

    async fn drain(&mut self) -> GateResult {
        let Some(prev) = self.report.previous_deployment_id.clone() else {
            return result(GateStatus::Skipped, "no prior deployment to drain", json!({}));
        };
        let cfg = self.cfg().clone();
        let started = Instant::now();
        let mut ev = json!({"deployment_id": prev, "threshold": cfg.drain_threshold,
                            "timeout_ms": cfg.drain_timeout.as_millis() as u64, "no_new_work": true});
        let mut ok_streak = 0;
        loop {
            match self.adapter.deployment(&prev).await {
                Ok(d) => {
                    let calls = d.in_flight_calls.unwrap_or(0);
                    ev["in_flight_calls"] = json!(calls);
                    ev["in_flight_runs"] = json!(d.in_flight_runs);
                    ev["in_flight_run_ids"] = json!(d.in_flight_run_ids.iter().take(5).collect::<Vec<_>>());
                    ev["status"] = json!(d.status);
                    if d.current {
                        return result(GateStatus::Fail, "the old deployment is still current", ev);
                    }
                    ok_streak = if calls <= cfg.drain_threshold { ok_streak + 1 } else { 0 };
                    if ok_streak >= 2 {
                        ev["waited_ms"] = json!(started.elapsed().as_millis() as u64);
                        // Runs still pinned but idle (sleeping, waiting) keep the old deployment
                        // `draining`, so they finish there; with none left it is `drained`.
                        if d.in_flight_runs.unwrap_or(0) == 0 {
                            let _ = self.adapter.set_status(&prev, "drained").await;
                            ev["status"] = json!("drained");
                        }
                        return result(GateStatus::Pass, format!("in-flight calls at {calls}"), ev);
                    }
                }
                Err(e) => ev["last_error"] = json!(e.message),
            }
            if started.elapsed() >= cfg.drain_timeout {
                ev["waited_ms"] = json!(started.elapsed().as_millis() as u64);
                return result(
                    GateStatus::Held,
                    "the old deployment still has calls in flight after the drain timeout: nothing was shut down",
                    ev,
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn bake(&mut self) -> GateResult {
        let cfg = self.cfg().clone();
        let id = self.report.new_deployment_id.clone().unwrap_or_default();
        let since = self.cutover_at_ms.unwrap_or_else(now_ms);
        let stale_ms = cfg.stale_after.as_millis() as i64;
        let base = self.baseline.clone();
        let started = Instant::now();
        let mut ev = json!({"window_ms": cfg.bake_window.as_millis() as u64, "baseline": base,
                            "baseline_failure_rate": base.failure_rate(), "doctor": "not available"});
        let (mut checks, mut streak) = (0u64, 0u32);
        loop {
            checks += 1;
            ev["checks"] = json!(checks);
            let mut breaches: Vec<String> = vec![];
            match self.adapter.introspect(&self.req.url).await {
                Ok(_) => streak = 0,
                Err(e) => {
                    streak += 1;
                    ev["last_health_error"] = json!(e.message);
                    if streak >= cfg.max_health_failures.max(1) {
                        breaches.push(format!("the new worker is unreachable: {}", e.message));
                    }
                }
            }
            match self.adapter.deployment(&id).await {
                Ok(d) if !d.current => breaches.push(format!("the new deployment is no longer current ({})", d.status)),
                _ => {}
            }
            match self.adapter.stats(since, stale_ms, self.report.app_id.as_deref()).await {
                Ok(s) => {
                    if s.stale_running > base.stale_running {
                        breaches
                            .push(format!("stale running runs: {} (baseline {})", s.stale_running, base.stale_running));
                    }
                    if s.paused_unreachable > base.paused_unreachable {
                        breaches.push(format!(
                            "runs parked on an unreachable callback: {} (baseline {})",
                            s.paused_unreachable, base.paused_unreachable
                        ));
                    }
                    let new_unreachable: Vec<_> =
                        s.unreachable_apps.iter().filter(|a| !base.unreachable_apps.contains(a)).cloned().collect();
                    if !new_unreachable.is_empty() {
                        breaches.push(format!("apps became unreachable: {}", new_unreachable.join(", ")));
                    }
                    let rate = s.failure_rate();
                    if s.runs_failed >= cfg.min_failed_runs
                        && rate > base.failure_rate() + cfg.max_failure_rate_increase
                    {
                        breaches.push(format!(
                            "failure rate {:.0}% vs baseline {:.0}%",
                            rate * 100.0,
                            base.failure_rate() * 100.0
                        ));
                    }
                    ev["failure_rate"] = json!(rate);
                    ev["stats"] = json!(s);
                }
                Err(e) => ev["last_stats_error"] = json!(e.message),
            }
            match self.adapter.doctor().await {
                Ok(Some(d)) => {
                    let n = doctor_findings(&d);
                    ev["doctor"] = json!({"findings": n, "baseline": self.baseline_doctor});
                    if n > self.baseline_doctor.unwrap_or(0) {
                        breaches.push(format!("doctor findings: {n} (baseline {})", self.baseline_doctor.unwrap_or(0)));
                    }
                }
                Ok(None) => ev["doctor"] = json!("not available"),
                Err(e) => ev["doctor"] = json!({"error": e.message}),
            }
            if !breaches.is_empty() {
                ev["breaches"] = json!(breaches);
                ev["baked_ms"] = json!(started.elapsed().as_millis() as u64);
                return result(GateStatus::Fail, breaches.join("; "), ev);
            }
            if started.elapsed() >= cfg.bake_window {
                ev["breaches"] = json!([]);
                return result(GateStatus::Pass, "no regression against the pre-deploy baseline", ev);
            }
            tokio::time::sleep(cfg.check_interval.min(cfg.bake_window.saturating_sub(started.elapsed()))).await;
        }
    }

    async fn rollback(&mut self) -> GateResult {
        let new = self.report.new_deployment_id.clone().unwrap_or_default();
        let mut ev = json!({"reason": self.reason, "rolled_back": new});
        let Some(prev) = self.report.previous_deployment_id.clone() else {
            let _ = self.adapter.set_status(&new, "rolled_back").await;
            return result(GateStatus::Fail, "no prior deployment to roll back to", ev);
        };
        ev["restored"] = json!(prev);
        let new_is_current = self.adapter.deployment(&new).await.map(|d| d.current).unwrap_or(true);
        let outcome = if new_is_current {
            self.adapter.activate(&prev, "rolled_back").await.map(|_| ())
        } else {
            self.adapter.set_status(&new, "rolled_back").await
        };
        if let Err(e) = outcome {
            ev["error"] = json!(e.message);
            return result(GateStatus::Fail, format!("rollback failed: {e}"), ev);
        }
        let mut status = GateStatus::Pass;
        let mut message = "the prior deployment is current again".to_string();
        if let Some(cmd) = self.req.on_rollback.clone() {
            let (ok, hook) = run_hook(&cmd, &self.hook_env(Gate::Rollback), self.req.hook_timeout).await;
            ev["hook"] = hook;
            if !ok {
                status = GateStatus::Fail;
                message = "rolled back in sluice, but the --on-rollback hook failed".into();
            }
        }
        result(status, message, ev)
    }
}
