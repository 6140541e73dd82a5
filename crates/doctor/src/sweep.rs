//! `sluice doctor sweep`: bulk cancellation of ghost runs, the safe version of the reference
//! workload's `sweep-stale-runs` (which edited the server's SQLite by hand). Runs are cancelled the
//! way `DELETE /v1/runs/{id}` cancels them (finish and cancelled events emitted), after a backup.
//!
//! A candidate is a run that has not ended, of one of the named functions, with no progress for
//! `--older-than`, and that nothing is legitimately moving: no call in flight within its lease, no
//! future timer, no pause waiting. Guards: `--function` is required, `--older-than` has a 5-minute
//! floor (`--allow-young` lifts it), more candidates than `--max` refuses the whole sweep, and a
//! failed backup changes nothing.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use serde_json::json;
use sluice_protocol::duration::format_rfc3339_ms;
use sluice_store::diagnostics::BackupInfo;
use sluice_store::{Diagnostics, PauseKind};

use crate::checks::Liveness;
use crate::model::*;
use crate::repair::{Executor, RepairResult};
use crate::{DoctorError, Result};

/// The youngest `--older-than` accepted without `--allow-young`.
pub const MIN_AGE_MS: i64 = 5 * 60_000;

#[derive(Debug, Clone)]
pub struct SweepScope {
    pub older_than: i64,
    pub older_than_text: String,
    pub functions: Vec<String>,
    pub max: usize,
    pub allow_young: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub run_id: String,
    pub function_id: String,
    pub status: String,
    pub last_progress: String,
    pub idle_ms: i64,
}

pub fn validate(scope: &SweepScope) -> Result<()> {
    if scope.functions.is_empty() {
        return Err(DoctorError::InvalidSweepScope("name the functions to sweep with --function (repeatable)".into()));
    }
    if scope.max == 0 {
        return Err(DoctorError::InvalidSweepScope("--max must be at least 1".into()));
    }
    if scope.older_than < MIN_AGE_MS && !scope.allow_young {
        return Err(DoctorError::SweepTooYoung { given: scope.older_than_text.clone(), floor: "5m".into() });
    }
    Ok(())
}

pub async fn candidates(
    diag: &dyn Diagnostics,
    scope: &SweepScope,
    now: i64,
    liveness: &Liveness,
) -> Result<Vec<Candidate>> {
    let snap = diag.diagnostic_snapshot(now, 0).await?;
    let progress: HashMap<&str, _> = snap.progress.iter().map(|p| (p.run_id.as_str(), p)).collect();
    let mut out = Vec::new();
    for run in snap.active_runs.iter().filter(|r| scope.functions.contains(&r.function_id)) {
        let items: Vec<_> = snap.items.iter().filter(|i| i.run_id == run.id).collect();
        let in_flight = liveness.no_live_node.is_none()
            && items.iter().any(|i| i.lease_owner.is_some() && i.lease_expires_at.is_some_and(|t| t > now));
        let timer = items.iter().any(|i| !i.parked && i.lease_owner.is_none() && i.available_at > now);
        let waiting =
            snap.pauses.iter().any(|p| p.run_id == run.id && p.kind != PauseKind::CancelOn && p.expires_at > now);
        if in_flight || timer || waiting {
            continue;
        }
        let last = [Some(run.updated_at), run.started_at, progress.get(run.id.as_str()).and_then(|p| p.last_step_at)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(run.created_at);
        if now - last < scope.older_than {
            continue;
        }
        out.push(Candidate {
            run_id: run.id.clone(),
            function_id: run.function_id.clone(),
            status: run.status.as_str().into(),
            last_progress: format_rfc3339_ms(last),
            idle_ms: now - last,
        });
    }
    if out.len() > scope.max {
        return Err(DoctorError::SweepTooBroad { found: out.len(), max: scope.max });
    }
    Ok(out)
}

/// Back up, then cancel every candidate. Nothing changes if the backup fails.
pub async fn apply(
    executor: &Executor,
    candidates: &[Candidate],
    backup_dir: &Path,
    now: i64,
) -> Result<(Option<BackupInfo>, Vec<RepairResult>)> {
    if candidates.is_empty() {
        return Ok((None, vec![]));
    }
    let ids: Vec<String> = candidates.iter().map(|c| c.run_id.clone()).collect();
    let backup =
        executor.diag.backup(backup_dir, &ids, now).await.map_err(|e| DoctorError::BackupFailed(e.to_string()))?;
    let mut results = Vec::new();
    for c in candidates {
        let finding = Finding {
            code: Code::StaleRun,
            severity: Severity::Error,
            subject_kind: "run".into(),
            subject: c.run_id.clone(),
            run_id: Some(c.run_id.clone()),
            function_id: Some(c.function_id.clone()),
            app_id: None,
            message: format!("swept: no progress since {}", c.last_progress),
            evidence: json!({"sweep": c, "backup": backup.path}),
            repair: None,
            fix: String::new(),
        };
        let repair = Repair {
            action: Action::CancelRun { run_id: c.run_id.clone() },
            description: "cancel (finish and cancelled events emitted)".into(),
            reversible: false,
            idempotency_key: format!("sweep-cancel:{}", c.run_id),
        };
        results.push(executor.apply(&finding, &repair, now).await?);
    }
    Ok((Some(backup), results))
}
