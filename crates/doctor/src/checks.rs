//! The diagnosis: every check reads one consistent snapshot (plus targeted look-ups for chains and
//! claims) and turns what it finds into findings with evidence and a repair.
//!
//! How a run that has not ended is judged (first match wins):
//!
//! | state | verdict |
//! |---|---|
//! | `PausedUnreachable` | PAUSED_UNREACHABLE (resumes when its app answers) |
//! | a call leased by a live node, lease not expired | in flight: fine |
//! | an item due in the future (sleep, retry backoff), or a wait/invoke pause not yet expired | waiting: fine |
//! | a lease held by a dead node | ORPHANED_CLAIM on the item (its release moves the run) |
//! | an item due, not picked up for longer than the threshold | STALE_RUN (no node drains the queue) |
//! | an item due | about to run: fine |
//! | nothing queued, no progress past the threshold: never started, triggered by another run | CHAIN_BROKEN |
//! | … every step stored (none pending) | FINALIZATION_FAILED |
//! | … otherwise | STALE_RUN |

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{json, Value};
use sluice_engine::Registry;
use sluice_protocol::duration::format_rfc3339_ms;
use sluice_protocol::run::RunStatus;
use sluice_store::diagnostics::{is_send_event_step, sent_event_ids, DiagSnapshot};
use sluice_store::{AppStatus, Diagnostics, ItemKind, PauseKind, QueueItem, RunRecord, Store};

use crate::config::DoctorConfig;
use crate::model::*;
use crate::Result;

/// What the caller knows about which nodes are alive, beyond the store.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    /// Set when no sluice process can be holding a lease (SQLite: nobody holds the database's
    /// lock file); the text says why. Every lease is then orphaned.
    pub no_live_node: Option<String>,
}

/// Diagnose the store: every finding, with its repair.
pub async fn diagnose(
    store: &dyn Store,
    diag: &dyn Diagnostics,
    config: &DoctorConfig,
    now: i64,
    liveness: &Liveness,
) -> Result<Report> {
    let since = now - config.lookback;
    let snap = diag.diagnostic_snapshot(since, config.limit).await?;
    let registry = registry_of(&snap);
    let mut cx = Cx { store, diag, config, now, liveness, snap: &snap, registry, findings: vec![], resolved: vec![] };
    cx.deployments();
    cx.runs();
    cx.guards().await?;
    cx.finalization();
    cx.duplicates().await?;
    cx.sent_events().await?;
    cx.expectations().await?;
    let (claims, claims_checked) = crate::claims::check(store, config).await?;
    cx.findings.extend(claims);
    let checked = json!({
        "active_runs": snap.active_runs.len(),
        "queue_items": snap.items.len(),
        "leased_items": snap.items.iter().filter(|i| i.lease_owner.is_some()).count(),
        "pauses": snap.pauses.len(),
        "apps": snap.apps.len(),
        "functions": snap.functions.len(),
        "sent_event_steps": snap.sent.len(),
        "emitted_events": snap.emitted.len(),
        "nodes": snap.nodes.as_ref().map(|n| json!(n)).unwrap_or(Value::Null),
        "lookback_ms": config.lookback,
        "stale_after_ms": config.stale_after,
        "claims": claims_checked,
    });
    let Cx { findings, resolved, .. } = cx;
    Ok(Report::new(now, findings, resolved, checked))
}

/// The functions as sluice matches events against them (the registry rebuilt from the store).
pub fn registry_of(snap: &DiagSnapshot) -> Registry {
    let registry = Registry::default();
    for app in &snap.apps {
        let compiled = snap
            .functions
            .iter()
            .filter(|f| f.app_id == app.id)
            .filter_map(|f| registry.compile(f.clone()).ok())
            .collect();
        registry.install_app(app.clone(), compiled);
    }
    registry
}

struct Cx<'a> {
    store: &'a dyn Store,
    diag: &'a dyn Diagnostics,
    config: &'a DoctorConfig,
    now: i64,
    liveness: &'a Liveness,
    snap: &'a DiagSnapshot,
    registry: Registry,
    findings: Vec<Finding>,
    resolved: Vec<Value>,
}

fn ts(ms: i64) -> String {
    format_rfc3339_ms(ms)
}

fn human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

fn run_finding(code: Code, severity: Severity, run: &RunRecord, message: String, evidence: Value) -> Finding {
    Finding {
        code,
        severity,
        subject_kind: "run".into(),
        subject: run.id.clone(),
        run_id: Some(run.id.clone()),
        function_id: Some(run.function_id.clone()),
        app_id: Some(run.app_id.clone()),
        message,
        evidence,
        repair: None,
        fix: String::new(),
    }
}

fn redrive(run: &RunRecord, description: &str) -> Repair {
    Repair {
        action: Action::Redrive { run_id: run.id.clone(), rev: run.rev },
        description: description.to_string(),
        reversible: false,
        idempotency_key: format!("redrive:{}:{}", run.id, run.rev),
    }
}

impl Cx<'_> {
    /// Why a lease's holder is gone, or None while it may still be working.
    fn dead_lease(&self, item: &QueueItem) -> Option<String> {
        let owner = item.lease_owner.as_deref()?;
        if let Some(reason) = &self.liveness.no_live_node {
            return Some(reason.clone());
        }
        if let Some(until) = item.lease_expires_at {
            if until <= self.now {
                return Some(format!("the lease expired at {} and nobody took the item back", ts(until)));
            }
        }
        let node = self.snap.nodes.as_ref()?.iter().find(|n| n.id == owner)?;
        (node.heartbeat_at + self.config.node_timeout <= self.now).then(|| {
            format!(
                "node {owner} last heartbeated at {} ({} ago, timeout {})",
                ts(node.heartbeat_at),
                human(self.now - node.heartbeat_at),
                human(self.config.node_timeout)
            )
        })
    }

    fn deployments(&mut self) {
        for app in self.snap.apps.iter().filter(|a| a.status == AppStatus::Unreachable) {
            let parked: Vec<&String> = self
                .snap
                .active_runs
                .iter()
                .filter(|r| r.app_id == app.id && r.status == RunStatus::PausedUnreachable)
                .map(|r| &r.id)
                .collect();
            self.findings.push(Finding {
                code: Code::UnreachableDeployment,
                severity: if parked.is_empty() { Severity::Warning } else { Severity::Error },
                subject_kind: "app".into(),
                subject: app.id.clone(),
                run_id: None,
                function_id: None,
                app_id: Some(app.id.clone()),
                message: format!(
                    "app {} at {} does not answer ({} parked run{})",
                    app.id,
                    app.url,
                    parked.len(),
                    if parked.len() == 1 { "" } else { "s" }
                ),
                evidence: json!({
                    "url": app.url, "status": app.status.as_str(), "last_error": app.last_error,
                    "since": ts(app.updated_at), "parked_runs": parked,
                }),
                repair: Some(Repair {
                    action: Action::ResyncApp { app_id: app.id.clone(), url: app.url.clone() },
                    description: format!(
                        "sync {} again through sluice; if it answers, its parked runs resume where they stopped",
                        app.url
                    ),
                    reversible: false,
                    idempotency_key: format!("resync:{}:{}", app.id, app.updated_at),
                }),
                fix: format!(
                    "Start (or fix) the worker serving {}; sluice re-syncs it and resumes its runs. If that \
                     deployment is gone for good, cancel its runs with `sluice doctor sweep`.",
                    app.url
                ),
            });
        }
    }

    fn runs(&mut self) {
        let mut items: HashMap<&str, Vec<&QueueItem>> = HashMap::new();
        for i in &self.snap.items {
            items.entry(i.run_id.as_str()).or_default().push(i);
        }
        // Leases first: every orphaned lease is a finding whatever its run is doing.
        for item in self.snap.items.iter().filter(|i| i.lease_owner.is_some()) {
            if let Some(reason) = self.dead_lease(item) {
                let owner = item.lease_owner.clone().unwrap_or_default();
                let run = self.snap.active_runs.iter().find(|r| r.id == item.run_id);
                self.findings.push(Finding {
                    code: Code::OrphanedClaim,
                    severity: Severity::Error,
                    subject_kind: "queue_item".into(),
                    subject: item.id.clone(),
                    run_id: Some(item.run_id.clone()),
                    function_id: run.map(|r| r.function_id.clone()),
                    app_id: run.map(|r| r.app_id.clone()),
                    message: format!(
                        "{} item {} is leased by {owner}, which is gone: {reason}",
                        item.kind.as_str(),
                        item.id
                    ),
                    evidence: json!({
                        "item": item.id, "kind": item.kind.as_str(), "step_id": item.step_id,
                        "lease_owner": owner, "lease_expires_at": item.lease_expires_at.map(ts), "reason": reason,
                    }),
                    repair: Some(Repair {
                        action: Action::ReleaseLease {
                            item_id: item.id.clone(),
                            run_id: item.run_id.clone(),
                            owner: owner.clone(),
                            expires_at: item.lease_expires_at,
                        },
                        description: "release the lease so a live node claims the item now; the SDK gets every \
                                      stored step, so no stored step runs again"
                            .into(),
                        reversible: false,
                        idempotency_key: format!(
                            "release:{}:{owner}:{}",
                            item.id,
                            item.lease_expires_at.map(|v| v.to_string()).unwrap_or_default()
                        ),
                    }),
                    fix: "Release it (`sluice doctor --fix --apply`), or start sluice: a starting SQLite node \
                          releases every lease."
                        .into(),
                });
            }
        }
        let progress: HashMap<&str, _> = self.snap.progress.iter().map(|p| (p.run_id.as_str(), p)).collect();
        for run in &self.snap.active_runs {
            let run_items = items.get(run.id.as_str()).cloned().unwrap_or_default();
            if run.status == RunStatus::PausedUnreachable {
                let app = self.snap.apps.iter().find(|a| a.id == run.app_id);
                let mut f = run_finding(
                    Code::PausedUnreachable,
                    Severity::Warning,
                    run,
                    format!(
                        "run {} of {} is parked since {}: {}",
                        run.id,
                        run.function_id,
                        ts(run.updated_at),
                        run.parked_reason.as_deref().unwrap_or("its app does not answer")
                    ),
                    json!({
                        "status": run.status.as_str(), "parked_reason": run.parked_reason,
                        "parked_items": run_items.iter().filter(|i| i.parked).count(),
                        "app_status": app.map(|a| a.status.as_str()), "app_url": app.map(|a| a.url.clone()),
                        "since": ts(run.updated_at),
                    }),
                );
                f.fix = format!(
                    "It resumes by itself when app {} answers again (the UNREACHABLE_DEPLOYMENT repair re-syncs \
                     it). If that deployment is gone, cancel it: `sluice doctor sweep --older-than 30m --function {} \
                     --apply`.",
                    run.app_id, run.function_id
                );
                self.findings.push(f);
                continue;
            }
            let live = |i: &&&QueueItem| i.lease_owner.is_some() && self.dead_lease(i).is_none();
            if run_items.iter().any(|i| live(&i)) {
                continue;
            }
            if run_items.iter().any(|i| i.lease_owner.is_some()) {
                continue; // its orphaned lease is the finding; releasing it moves the run
            }
            let unparked: Vec<&&QueueItem> = run_items.iter().filter(|i| !i.parked).collect();
            if unparked.iter().any(|i| i.available_at > self.now) {
                continue; // a timer or a retry backoff will fire
            }
            let waiting = self
                .snap
                .pauses
                .iter()
                .any(|p| p.run_id == run.id && p.kind != PauseKind::CancelOn && p.expires_at > self.now);
            if waiting {
                continue;
            }
            let threshold = self.config.stale_after_for(&run.function_id);
            if let Some(oldest) = unparked.iter().map(|i| i.available_at).min() {
                if self.now - oldest > threshold {
                    let mut f = run_finding(
                        Code::StaleRun,
                        Severity::Error,
                        run,
                        format!(
                            "run {} has work due since {} ({} ago) that no node picked up",
                            run.id,
                            ts(oldest),
                            human(self.now - oldest)
                        ),
                        json!({"status": run.status.as_str(), "due_since": ts(oldest), "threshold_ms": threshold,
                               "items": unparked.iter().map(|i| i.id.clone()).collect::<Vec<_>>()}),
                    );
                    f.fix = "No sluice node is draining the queue: start sluice on this database.".into();
                    self.findings.push(f);
                }
                continue;
            }
            if run_items.iter().any(|i| i.parked) {
                continue; // parked with its app; the app's finding covers it
            }
            let p = progress.get(run.id.as_str());
            let last = [Some(run.updated_at), run.started_at, p.and_then(|p| p.last_step_at)]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(run.created_at);
            let idle = self.now - last;
            if idle <= threshold {
                continue;
            }
            let steps = p.map_or(0, |p| p.steps);
            let evidence = json!({
                "status": run.status.as_str(), "last_progress": ts(last), "idle_ms": idle, "threshold_ms": threshold,
                "steps_stored": steps, "pending": run.state.pending, "queued_items": 0, "waiting_pauses": 0,
            });
            let trigger = self.snap.emitted.iter().find(|e| e.event.id == run.event_id);
            let sent_by = self
                .snap
                .sent
                .iter()
                .find(|s| sent_event_ids(&s.value).contains(&run.event_id))
                .map(|s| s.run_id.clone())
                .or_else(|| trigger.and_then(|e| e.event.source_run_id.clone()));
            let mut f =
                if run.status == RunStatus::Queued && run.started_at.is_none() && steps == 0 && sent_by.is_some() {
                    let mut f = run_finding(
                        Code::ChainBroken,
                        Severity::Error,
                        run,
                        format!(
                            "run {} of {} was triggered by event {} (sent by run {}) and never started",
                            run.id,
                            run.function_id,
                            run.event_id,
                            sent_by.clone().unwrap_or_default()
                        ),
                        json!({"kind": "run_never_started", "event_id": run.event_id, "sent_by_run": sent_by,
                           "created_at": ts(run.created_at), "detail": evidence}),
                    );
                    f.repair = Some(redrive(run, "queue its first call so it starts"));
                    f
                } else if run.status == RunStatus::Running && steps > 0 && run.state.pending.is_empty() {
                    let mut f = run_finding(
                        Code::FinalizationFailed,
                        Severity::Error,
                        run,
                        format!(
                            "run {} has every planned step stored ({steps}) but never finished ({} idle)",
                            run.id,
                            human(idle)
                        ),
                        json!({"kind": "never_finished", "detail": evidence}),
                    );
                    f.repair = Some(redrive(
                        run,
                        "queue a discovery call: the SDK replays the stored steps and returns the result, and \
                     the engine finishes the run and emits its finish events",
                    ));
                    f
                } else {
                    let mut f = run_finding(
                        Code::StaleRun,
                        Severity::Error,
                        run,
                        format!(
                            "run {} of {} made no progress for {} (threshold {}) and nothing is queued to move it",
                            run.id,
                            run.function_id,
                            human(idle),
                            human(threshold)
                        ),
                        evidence,
                    );
                    f.repair = Some(redrive(
                        run,
                        "queue a discovery call: the SDK replays the stored steps and the run moves on",
                    ));
                    f
                };
            f.fix =
                format!("Re-drive it (`sluice doctor --fix --apply`), or cancel it: `sluice runs cancel {}`.", run.id);
            self.findings.push(f);
        }
    }

    async fn guards(&mut self) -> Result<()> {
        let active: HashSet<&str> = self.snap.active_runs.iter().map(|r| r.id.as_str()).collect();
        for g in &self.snap.guards {
            if !g.release_on_end || g.expires_at <= self.now || active.contains(g.run_id.as_str()) {
                continue;
            }
            let run = self.store.get_run(&g.run_id).await?;
            let state = run.as_ref().map_or("absent".to_string(), |r| format!("ended {}", r.status.as_str()));
            self.findings.push(Finding {
                code: Code::OrphanedClaim,
                severity: Severity::Error,
                subject_kind: "guard".into(),
                subject: g.key.replace('\0', ":"),
                run_id: Some(g.run_id.clone()),
                function_id: run.as_ref().map(|r| r.function_id.clone()),
                app_id: run.as_ref().map(|r| r.app_id.clone()),
                message: format!(
                    "singleton key {} is held by run {}, which is {state}",
                    g.key.replace('\0', ":"),
                    g.run_id
                ),
                evidence: json!({"key": g.key, "run_id": g.run_id, "run": state}),
                repair: Some(Repair {
                    action: Action::ReleaseGuard { key: g.key.clone(), run_id: g.run_id.clone() },
                    description: "delete the key so the next run of the function is admitted".into(),
                    reversible: false,
                    idempotency_key: format!("guard:{}:{}", g.key, g.run_id),
                }),
                fix: "Release it (`sluice doctor --fix --apply`).".into(),
            });
        }
        Ok(())
    }

    fn finalization(&mut self) {
        for u in &self.snap.unfinalized {
            let run = &u.run;
            let mut f = run_finding(
                Code::FinalizationFailed,
                Severity::Error,
                run,
                format!(
                    "run {} ended {} at {} without {}",
                    run.id,
                    run.status.as_str(),
                    run.ended_at.map(ts).unwrap_or_default(),
                    u.missing.join(" and ")
                ),
                json!({"kind": "finish_events_missing", "status": run.status.as_str(), "missing": u.missing,
                       "ended_at": run.ended_at.map(ts)}),
            );
            f.repair = Some(Repair {
                action: Action::EmitFinishEvents { run_id: run.id.clone(), missing: u.missing.clone() },
                description: format!(
                    "emit {} as the run's end would have (deterministic ids; onFailure and other listeners run)",
                    u.missing.join(", ")
                ),
                reversible: false,
                idempotency_key: format!("finish:{}:{}", run.id, u.missing.join(",")),
            });
            f.fix = "Emit them (`sluice doctor --fix --apply`).".into();
            self.findings.push(f);
        }
    }

    async fn duplicates(&mut self) -> Result<()> {
        for d in &self.snap.duplicates {
            let key = format!("ack-duplicate:{}:{}:{}", d.run_id, d.step_id, d.received_at);
            if self.diag.audit_for_key(&key).await?.iter().any(|a| a.outcome == "applied") {
                self.resolved.push(json!({"code": "DUPLICATE_STEP", "subject": d.step_id, "run_id": d.run_id,
                                          "by": "acknowledged"}));
                continue;
            }
            let run = self.store.get_run(&d.run_id).await?;
            self.findings.push(Finding {
                code: Code::DuplicateStep,
                severity: Severity::Warning,
                subject_kind: "step".into(),
                subject: d.step_id.clone(),
                run_id: Some(d.run_id.clone()),
                function_id: run.as_ref().map(|r| r.function_id.clone()),
                app_id: run.as_ref().map(|r| r.app_id.clone()),
                message: format!(
                    "step {} of run {} reported a result again at {}: its body ran more than once",
                    d.step_id,
                    d.run_id,
                    ts(d.received_at)
                ),
                evidence: json!({"kept": d.stored_value, "discarded": d.value, "received_at": ts(d.received_at),
                                 "same_result": d.stored_value.as_ref() == Some(&d.value)}),
                repair: Some(Repair {
                    action: Action::Acknowledge,
                    description: "the first result was kept and the run used it; check the step's side effects \
                                  for a double, then acknowledge"
                        .into(),
                    reversible: false,
                    idempotency_key: key,
                }),
                fix: "Check the step's side effects (they happened twice); make the step idempotent.".into(),
            });
        }
        Ok(())
    }

    /// Events runs emitted (sendEvent steps, sluice's own non-lifecycle events) that nobody consumed.
    async fn sent_events(&mut self) -> Result<()> {
        let mut candidates: Vec<(String, Option<String>, Option<String>)> = Vec::new(); // (event, run, step)
        let mut seen = BTreeSet::new();
        for step in self.snap.sent.iter().filter(|s| is_send_event_step(s)) {
            for id in sent_event_ids(&step.value) {
                if seen.insert(id.clone()) {
                    candidates.push((id, Some(step.run_id.clone()), step.name.clone()));
                }
            }
        }
        for e in self.snap.emitted.iter().filter(|e| e.run_count == 0) {
            if seen.insert(e.event.id.clone()) {
                candidates.push((e.event.id.clone(), e.event.source_run_id.clone(), None));
            }
        }
        for (event_id, source_run, step_name) in candidates {
            let Some(event) = self.store.get_event(&event_id).await? else {
                let run = match &source_run {
                    Some(r) => self.store.get_run(r).await?,
                    None => None,
                };
                self.findings.push(Finding {
                    code: Code::ChainBroken,
                    severity: Severity::Error,
                    subject_kind: "event".into(),
                    subject: event_id.clone(),
                    run_id: source_run.clone(),
                    function_id: run.as_ref().map(|r| r.function_id.clone()),
                    app_id: run.as_ref().map(|r| r.app_id.clone()),
                    message: format!(
                        "run {} sent event {event_id}, which sluice does not have",
                        source_run.clone().unwrap_or_default()
                    ),
                    evidence: json!({"kind": "sent_event_missing", "event_id": event_id, "sent_by_run": source_run,
                                     "step": step_name}),
                    repair: None,
                    fix: "The event is lost and its content unknown: send it again by hand.".into(),
                });
                continue;
            };
            if self.config.ignores_unmatched(&event.event.name)
                || !self.store.runs_for_event(&event.id).await?.is_empty()
            {
                continue;
            }
            let sdk = event.event.to_sdk_json(&event.id);
            let matching = self.registry.matching(&event.event.name, &sdk);
            // A function with admission guards may have skipped it on purpose (idempotency, rate limit, singleton).
            if matching.iter().any(|f| {
                !sluice_engine::admission::guards(self.registry.exprs(), f.config(), &sdk, self.now).is_empty()
            }) {
                continue;
            }
            if self.diag.event_consumed_by_step(&event.id).await? {
                continue; // it resolved a waitForEvent
            }
            let key = format!("reemit:{}", event.id);
            if let Some(done) = self.diag.audit_for_key(&key).await?.into_iter().find(|a| a.outcome == "applied") {
                self.resolved.push(json!({"code": "CHAIN_BROKEN", "subject": event.id, "by": "reemitted",
                                          "audit_id": done.id, "detail": done.detail}));
                continue;
            }
            let source_run = source_run.or(event.source_run_id.clone());
            let run = match &source_run {
                Some(r) => self.store.get_run(r).await?,
                None => None,
            };
            let listeners: Vec<String> = matching.iter().map(|f| f.record.id.clone()).collect();
            let (repair, fix) = if listeners.is_empty() {
                (
                    None,
                    format!(
                        "No function listens to {} now (removed in a re-sync?). Deploy and sync the app that \
                         handles it, then run `sluice doctor --fix --apply` to re-emit it.",
                        event.event.name
                    ),
                )
            } else {
                (
                    Some(Repair {
                        action: Action::ReemitEvent { event_id: event.id.clone(), source_run_id: source_run.clone() },
                        description: format!(
                            "store the event again so {} run{}",
                            listeners.join(", "),
                            if listeners.len() == 1 { "s" } else { "" }
                        ),
                        reversible: false,
                        idempotency_key: key,
                    }),
                    "Re-emit it (`sluice doctor --fix --apply`).".to_string(),
                )
            };
            self.findings.push(Finding {
                code: Code::ChainBroken,
                severity: Severity::Error,
                subject_kind: "event".into(),
                subject: event.id.clone(),
                run_id: source_run.clone(),
                function_id: run.as_ref().map(|r| r.function_id.clone()),
                app_id: run.as_ref().map(|r| r.app_id.clone()),
                message: format!(
                    "event {} ({}) sent by run {} matched no function",
                    event.id,
                    event.event.name,
                    source_run.clone().unwrap_or_else(|| "?".into())
                ),
                evidence: json!({"kind": "event_matched_no_function", "event_id": event.id, "name": event.event.name,
                                 "sent_by_run": source_run, "sent_by_function": run.as_ref().map(|r| r.function_id.clone()),
                                 "received_at": ts(event.received_at), "listeners_now": listeners}),
                repair,
                fix,
            });
        }
        Ok(())
    }

    /// Declared expectations: after an event X, an event Y downstream of it within T.
    async fn expectations(&mut self) -> Result<()> {
        let rules = self.config.chain.expect.clone();
        for rule in rules {
            let since = self.now - self.config.lookback;
            for x in self.diag.events_named_since(&rule.after, since, self.config.limit).await? {
                let deadline = x.received_at + rule.within;
                if deadline > self.now {
                    continue;
                }
                let (found, walked) = self.descendant_named(&x.id, &rule.expect).await?;
                if found.is_some() {
                    continue;
                }
                self.findings.push(Finding {
                    code: Code::ChainBroken,
                    severity: Severity::Error,
                    subject_kind: "event".into(),
                    subject: x.id.clone(),
                    run_id: None,
                    function_id: None,
                    app_id: None,
                    message: format!(
                        "after {} {} at {}, no {} followed within {}",
                        rule.after,
                        x.id,
                        ts(x.received_at),
                        rule.expect,
                        human(rule.within)
                    ),
                    evidence: json!({"kind": "expectation_unmet", "after": rule.after, "expect": rule.expect,
                                     "within_ms": rule.within, "deadline": ts(deadline), "chain": walked}),
                    repair: None,
                    fix: "Follow the chain in the evidence to the run where it stopped; the other findings name \
                          the break (an unmatched event, a run that never started, a failed run)."
                        .into(),
                });
            }
        }
        Ok(())
    }

    /// Walk from an event through the runs it triggered and the events they emitted.
    async fn descendant_named(&self, root: &str, name: &str) -> Result<(Option<String>, Vec<Value>)> {
        let mut frontier = vec![root.to_string()];
        let mut seen: HashSet<String> = HashSet::new();
        let mut walked = Vec::new();
        for _depth in 0..12 {
            let mut next = Vec::new();
            for event_id in frontier.drain(..) {
                if !seen.insert(event_id.clone()) {
                    continue;
                }
                let runs = self.store.runs_for_event(&event_id).await?;
                walked.push(json!({"event": event_id, "runs": runs.iter().map(|r| json!({
                    "run_id": r.id, "function_id": r.function_id, "status": r.status.as_str()})).collect::<Vec<_>>()}));
                let run_ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
                let mut emitted = self.diag.events_from_runs(&run_ids).await?;
                for r in &run_ids {
                    let ids: Vec<String> = self
                        .store
                        .get_steps(r)
                        .await?
                        .iter()
                        .filter(|s| is_send_event_step(s))
                        .flat_map(|s| sent_event_ids(&s.value))
                        .collect();
                    emitted.extend(self.store.get_events(&ids).await?);
                }
                for e in emitted {
                    if e.event.name == name {
                        return Ok((Some(e.id), walked));
                    }
                    if !e.event.name.starts_with("inngest/") {
                        next.push(e.id);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        Ok((None, walked))
    }
}

/// Whether an item kind is work for a run (rather than pause matching, keyed by event id).
pub fn is_run_work(kind: ItemKind) -> bool {
    kind != ItemKind::MatchPauses
}
