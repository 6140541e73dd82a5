//! The deploy report: every gate's status, timings and evidence, and the final verdict. It is what
//! `sluice deploy` prints on stdout, persists, and what `sluice deploy verify-runtime` reads back.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    Warm,
    CallbackProbe,
    Drain,
    Cutover,
    Bake,
    Rollback,
}

impl Gate {
    /// The ADR's order (rollback last: it only runs on a breach).
    pub const ALL: [Gate; 6] =
        [Gate::Warm, Gate::CallbackProbe, Gate::Drain, Gate::Cutover, Gate::Bake, Gate::Rollback];

    pub fn as_str(&self) -> &'static str {
        match self {
            Gate::Warm => "warm",
            Gate::CallbackProbe => "callback_probe",
            Gate::Drain => "drain",
            Gate::Cutover => "cutover",
            Gate::Bake => "bake",
            Gate::Rollback => "rollback",
        }
    }

    /// The OTEL stage event name.
    pub fn event_name(&self) -> String {
        format!("deploy.runtime.{}", self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStatus {
    Pass,
    Fail,
    Held,
    Degraded,
    Skipped,
    Running,
}

impl GateStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            GateStatus::Pass => "pass",
            GateStatus::Fail => "fail",
            GateStatus::Held => "held",
            GateStatus::Degraded => "degraded",
            GateStatus::Skipped => "skipped",
            GateStatus::Running => "running",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Gates still running.
    Running,
    /// Every gate passed.
    Healthy,
    /// Released, but a gate could only be checked weakly (trust probe).
    Degraded,
    /// Released, but the old deployment did not drain: it was left running.
    Held,
    /// A gate before cutover failed: the new deployment never took traffic.
    Blocked,
    /// A breach after cutover: the prior deployment is current again.
    RolledBack,
    /// A breach that could not be rolled back (no prior deployment, or the rollback failed).
    Failed,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Running => "running",
            Verdict::Healthy => "healthy",
            Verdict::Degraded => "degraded",
            Verdict::Held => "held",
            Verdict::Blocked => "blocked",
            Verdict::RolledBack => "rolled_back",
            Verdict::Failed => "failed",
        }
    }

    /// `sluice deploy` and `verify-runtime` exit codes: 0 only when healthy.
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Healthy => 0,
            Verdict::Blocked | Verdict::RolledBack | Verdict::Failed => 1,
            Verdict::Degraded | Verdict::Held => 2,
            Verdict::Running => 3,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateReport {
    pub gate: Gate,
    pub status: GateStatus,
    pub started_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub message: String,
    pub evidence: Value,
}

impl GateReport {
    pub fn pending(gate: Gate) -> GateReport {
        GateReport {
            gate,
            status: GateStatus::Skipped,
            started_at_ms: None,
            ended_at_ms: None,
            duration_ms: None,
            message: "not reached".into(),
            evidence: Value::Object(Default::default()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployReport {
    pub deploy_id: String,
    pub adapter: String,
    pub api: String,
    pub url: String,
    pub app_id: Option<String>,
    pub new_deployment_id: Option<String>,
    pub previous_deployment_id: Option<String>,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub verdict: Verdict,
    pub message: String,
    /// Gates in the ADR's order (warm, callback_probe, drain, cutover, bake, rollback).
    pub gates: Vec<GateReport>,
    /// The order the gates actually ran in (see the crate docs on drain and cutover).
    pub executed_order: Vec<Gate>,
    pub config: Value,
    /// Processes sluice started or stopped for this deploy (`--start`).
    #[serde(default)]
    pub processes: Value,
}

impl DeployReport {
    pub fn new(deploy_id: String, adapter: &str, api: &str, url: &str, config: Value, started_at_ms: i64) -> Self {
        DeployReport {
            deploy_id,
            adapter: adapter.into(),
            api: api.into(),
            url: url.into(),
            app_id: None,
            new_deployment_id: None,
            previous_deployment_id: None,
            started_at_ms,
            ended_at_ms: None,
            verdict: Verdict::Running,
            message: String::new(),
            gates: Gate::ALL.iter().map(|g| GateReport::pending(*g)).collect(),
            executed_order: vec![],
            config,
            processes: Value::Object(Default::default()),
        }
    }

    pub fn gate(&self, gate: Gate) -> &GateReport {
        self.gates.iter().find(|g| g.gate == gate).expect("every gate is listed")
    }

    pub fn gate_mut(&mut self, gate: Gate) -> &mut GateReport {
        self.gates.iter_mut().find(|g| g.gate == gate).expect("every gate is listed")
    }

    /// The verdict the gate statuses imply (used for ongoing and finished deploys alike).
    pub fn derive_verdict(&self) -> Verdict {
        let st = |g: Gate| self.gate(g).status;
        let reached = |g: Gate| self.gate(g).started_at_ms.is_some();
        if self.ended_at_ms.is_none() || self.gates.iter().any(|g| g.status == GateStatus::Running) {
            return Verdict::Running;
        }
        if reached(Gate::Rollback) {
            return if st(Gate::Rollback) == GateStatus::Pass { Verdict::RolledBack } else { Verdict::Failed };
        }
        if st(Gate::Warm) == GateStatus::Fail || st(Gate::CallbackProbe) == GateStatus::Fail {
            return Verdict::Blocked;
        }
        if [Gate::Cutover, Gate::Bake].iter().any(|g| st(*g) == GateStatus::Fail) || !reached(Gate::Bake) {
            return Verdict::Failed;
        }
        if st(Gate::Drain) == GateStatus::Held {
            return Verdict::Held;
        }
        if self.gates.iter().any(|g| g.status == GateStatus::Degraded) {
            return Verdict::Degraded;
        }
        Verdict::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(statuses: &[(Gate, GateStatus)]) -> DeployReport {
        let mut r = DeployReport::new("d".into(), "sluice", "http://x", "http://w", Value::Null, 1);
        for (g, s) in statuses {
            let gr = r.gate_mut(*g);
            gr.status = *s;
            gr.started_at_ms = Some(1);
        }
        r.ended_at_ms = Some(2);
        r
    }

    #[test]
    fn verdicts() {
        use Gate::*;
        use GateStatus::*;
        let all_pass = [(Warm, Pass), (CallbackProbe, Pass), (Drain, Pass), (Cutover, Pass), (Bake, Pass)];
        assert_eq!(finished(&all_pass).derive_verdict(), Verdict::Healthy);
        assert_eq!(finished(&[(Warm, Fail)]).derive_verdict(), Verdict::Blocked);
        assert_eq!(finished(&[(Warm, Pass), (CallbackProbe, Fail)]).derive_verdict(), Verdict::Blocked);
        let degraded = [(Warm, Pass), (CallbackProbe, Degraded), (Drain, Pass), (Cutover, Pass), (Bake, Pass)];
        assert_eq!(finished(&degraded).derive_verdict(), Verdict::Degraded);
        let held = [(Warm, Pass), (CallbackProbe, Pass), (Drain, Held), (Cutover, Pass), (Bake, Pass)];
        assert_eq!(finished(&held).derive_verdict(), Verdict::Held);
        let rb = [(Warm, Pass), (CallbackProbe, Pass), (Drain, Pass), (Cutover, Pass), (Bake, Fail), (Rollback, Pass)];
        assert_eq!(finished(&rb).derive_verdict(), Verdict::RolledBack);
        let rbf = [(Warm, Pass), (CallbackProbe, Pass), (Cutover, Fail), (Rollback, Fail)];
        assert_eq!(finished(&rbf).derive_verdict(), Verdict::Failed);
        let mut running = finished(&all_pass);
        running.ended_at_ms = None;
        assert_eq!(running.derive_verdict(), Verdict::Running);
        assert_eq!(Verdict::Healthy.exit_code(), 0);
        assert_ne!(Verdict::Degraded.exit_code(), 0);
        assert_eq!(Gate::CallbackProbe.event_name(), "deploy.runtime.callback_probe");
    }
}
