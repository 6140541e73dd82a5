//! `sluice doctor [--fix [--apply]]`, `sluice doctor audit`, `sluice doctor sweep`, `sluice doctor undo`.
//!
//! The doctor reads the database directly (`--db`, as `sluice start`), so it works with sluice
//! stopped, and uses the running sluice's API (`--api`) for the repairs the engine must make
//! (cancel, re-sync). Exit code: 0 clean, 1 something needs attention, 2 the doctor itself failed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sluice_doctor::config::{parse, ChainExpectation, ClaimSource};
use sluice_doctor::repair::Api;
use sluice_doctor::sweep::{self, SweepScope};
use sluice_doctor::{diagnose, DoctorConfig, DoctorError, Executor, Liveness, Report};
use sluice_store::{Diagnostics, PgOptions, PostgresStore, SqliteStore, Store};

use crate::envelope::action;

#[derive(Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    common: Common,
    /// Show the repair plan.
    #[arg(long)]
    fix: bool,
    /// Carry the repairs out (implies --fix); each is recorded in the audit log.
    #[arg(long)]
    apply: bool,
    #[command(subcommand)]
    command: Option<DoctorCommand>,
}

#[derive(Args, Clone)]
struct Common {
    /// Database: a SQLite file path (or sqlite://PATH) or a postgres:// URL (default ./.sluice/sluice.db).
    #[arg(long, env = "SLUICE_DB", global = true)]
    db: Option<String>,
    /// PostgreSQL schema holding sluice's tables (when not the connection's default).
    #[arg(long, env = "SLUICE_DB_SCHEMA", global = true)]
    db_schema: Option<String>,
    /// The running sluice's API, used for repairs the engine must make (cancel, re-sync).
    #[arg(long, env = "SLUICE_API_URL", default_value = "http://127.0.0.1:8288", global = true)]
    api: String,
    /// Signing key, for a sluice in production mode.
    #[arg(long, env = "SLUICE_SIGNING_KEY", global = true, hide_env_values = true)]
    signing_key: Option<String>,
    /// Print the JSON envelope on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Doctor settings (TOML; default $SLUICE_DOCTOR_CONFIG or ./sluice-doctor.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// No progress for this long makes a run stale (default 30m, or the config's).
    #[arg(long, global = true)]
    stale_after: Option<String>,
    /// How far back emitted events and chains are checked (default 24h).
    #[arg(long, global = true)]
    lookback: Option<String>,
    /// A node whose heartbeat is older than this is dead (multi-node stores; default 60s).
    #[arg(long, global = true)]
    node_timeout: Option<String>,
    /// Redis holding application claims (with --claim-pattern).
    #[arg(long, global = true)]
    redis: Option<String>,
    /// Claim key pattern in --redis, e.g. 'agent-loop:claim:*' (repeatable).
    #[arg(long = "claim-pattern", global = true)]
    claim_patterns: Vec<String>,
    /// A chain expectation 'AFTER=>EXPECT@WITHIN', e.g. 'app/a=>app/c@10m' (repeatable).
    #[arg(long = "expect", global = true)]
    expects: Vec<String>,
}

#[derive(Subcommand)]
enum DoctorCommand {
    /// The audit log of repairs, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Cancel ghost runs in bulk, after a backup: runs of the named functions with no progress for --older-than.
    Sweep {
        #[arg(long)]
        older_than: String,
        #[arg(long = "function", required = true)]
        functions: Vec<String>,
        #[arg(long, default_value_t = 200)]
        max: usize,
        /// Accept --older-than below the 5m floor.
        #[arg(long)]
        allow_young: bool,
        /// Where the backup goes (default: beside the SQLite file, or the current directory).
        #[arg(long)]
        backup_dir: Option<PathBuf>,
        #[arg(long)]
        apply: bool,
    },
    /// Undo a repair from the audit log, where it can be undone (a deleted claim is put back).
    Undo { audit_id: String },
}

struct Opened {
    store: Arc<dyn Store>,
    diag: Arc<dyn Diagnostics>,
    liveness: Liveness,
    sqlite_path: Option<PathBuf>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub async fn run(args: DoctorArgs) -> i32 {
    let c = args.common.clone();
    let (name, result) = match args.command {
        None => ("doctor", check(&c, args.fix || args.apply, args.apply).await),
        Some(DoctorCommand::Audit { limit }) => ("doctor audit", audit(&c, limit).await),
        Some(DoctorCommand::Sweep { older_than, functions, max, allow_young, backup_dir, apply }) => {
            let scope = match parse(&older_than) {
                Ok(ms) => Ok(SweepScope { older_than: ms, older_than_text: older_than, functions, max, allow_young }),
                Err(e) => Err(DoctorError::InvalidSweepScope(format!("--older-than: {e}"))),
            };
            let r = match scope {
                Ok(scope) => sweep_cmd(&c, scope, backup_dir, apply || args.apply).await,
                Err(e) => Err(e),
            };
            ("doctor sweep", r)
        }
        Some(DoctorCommand::Undo { audit_id }) => ("doctor undo", undo(&c, &audit_id).await),
    };
    match result {
        Ok((envelope, code)) => {
            if c.json {
                println!("{envelope}");
            } else {
                print_text(&envelope);
            }
            code
        }
        Err(e) => {
            let code = e.code();
            let message = e.to_string();
            if c.json {
                println!(
                    "{}",
                    json!({"ok": false, "command": format!("sluice {name}"), "result": null,
                           "error": {"message": message, "code": code}, "fix": hint(code), "next_actions": []})
                );
            } else {
                eprintln!("[{code}] {message}");
                eprintln!("  hint: {}", hint(code));
            }
            2
        }
    }
}

/// Fix hints of the doctor's own codes (the same as docs/errors.md).
pub fn hint(code: &str) -> &'static str {
    match code {
        "SLUICE-6000" => "Read the findings; `sluice doctor --fix` previews the repairs, `--fix --apply` makes them.",
        "SLUICE-6001" => "Fix the doctor configuration value named in the message.",
        "SLUICE-6002" => "Check that the claim source (Redis) is reachable at the configured URL.",
        "SLUICE-6003" => "The engine refused the repair; read the message, then retry or repair by hand.",
        "SLUICE-6004" => "Start sluice with `sluice dev` or `sluice start`; they set the doctor up.",
        "SLUICE-6101" => "Use --older-than of at least 5m, or pass --allow-young if you are sure.",
        "SLUICE-6102" => "Narrow the sweep (fewer --function, a larger --older-than) or raise --max.",
        "SLUICE-6103" => "Free disk space or pass --backup-dir to a writable directory; nothing was changed.",
        "SLUICE-6104" => "Name the functions to sweep with --function and a positive --max.",
        "SLUICE-6201" => "List the audit log with `sluice doctor audit` and use an id from it.",
        "SLUICE-6202" => "Only applied repairs that recorded an undo (deleted claims) can be undone.",
        "SLUICE-2003" => "Check the --db path (sluice's database) and its permissions.",
        other => crate::hints::hint(other),
    }
}

fn config_of(c: &Common) -> Result<DoctorConfig, DoctorError> {
    let mut config = DoctorConfig::discover(c.config.as_deref())?;
    if let Some(s) = &c.stale_after {
        config.stale_after = parse(s).map_err(|e| DoctorError::Config(format!("--stale-after: {e}")))?;
    }
    if let Some(s) = &c.lookback {
        config.lookback = parse(s).map_err(|e| DoctorError::Config(format!("--lookback: {e}")))?;
    }
    if let Some(s) = &c.node_timeout {
        config.node_timeout = parse(s).map_err(|e| DoctorError::Config(format!("--node-timeout: {e}")))?;
    }
    if !c.claim_patterns.is_empty() {
        let redis = c.redis.clone().unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        for pattern in &c.claim_patterns {
            config.claims.push(ClaimSource {
                redis: redis.clone(),
                pattern: pattern.clone(),
                absent_is_orphaned: true,
            });
        }
    }
    for e in &c.expects {
        let bad = || DoctorError::Config(format!("--expect {e:?}: use AFTER=>EXPECT@WITHIN, e.g. app/a=>app/c@10m"));
        let (after, rest) = e.split_once("=>").ok_or_else(bad)?;
        let (expect, within) = rest.rsplit_once('@').ok_or_else(bad)?;
        config.chain.expect.push(ChainExpectation {
            after: after.trim().into(),
            expect: expect.trim().into(),
            within: parse(within).map_err(|_| bad())?,
        });
    }
    Ok(config)
}

async fn open(c: &Common) -> Result<Opened, DoctorError> {
    let db = c.db.clone().unwrap_or_else(|| "./.sluice/sluice.db".into());
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        let options = PgOptions { pool_size: 2, schema: c.db_schema.clone(), ..Default::default() };
        let store = PostgresStore::connect(&db, options).await?;
        return Ok(Opened {
            store: Arc::new(store.clone()),
            diag: Arc::new(store),
            liveness: Liveness::default(),
            sqlite_path: None,
        });
    }
    let path = PathBuf::from(db.strip_prefix("sqlite://").unwrap_or(&db));
    if !path.exists() {
        return Err(sluice_store::StoreError::Open {
            path: path.display().to_string(),
            reason: "no sluice database there".into(),
        }
        .into());
    }
    let liveness = Liveness { no_live_node: sqlite_lock_free(&path) };
    let store = SqliteStore::open(&path)?;
    Ok(Opened { store: Arc::new(store.clone()), diag: Arc::new(store), liveness, sqlite_path: Some(path) })
}

/// One sluice process holds `<db>.lock` while it runs (see `sluice start`); when nobody holds it,
/// no process can be working on a leased item, so every lease is orphaned.
fn sqlite_lock_free(db: &Path) -> Option<String> {
    let lock_path = db.with_extension("lock");
    let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(&lock_path) else {
        return Some(format!("no sluice process has run on {} ({} is absent)", db.display(), lock_path.display()));
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            Some(format!("no sluice process holds {}", lock_path.display()))
        }
        Err(_) => None,
    }
}

fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host =
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("sluice {}", args.join(" "))
}

/// ` --db X` when the user named a database, so suggested commands are exact.
fn db_suffix(c: &Common) -> String {
    let mut s = String::new();
    if let Some(db) = &c.db {
        s.push_str(&format!(" --db {db}"));
    }
    if c.api != "http://127.0.0.1:8288" {
        s.push_str(&format!(" --api {}", c.api));
    }
    s
}

async fn executor(c: &Common, o: &Opened) -> Executor {
    let api = Api { url: c.api.clone(), signing_key: c.signing_key.clone() };
    let api = if api.is_up().await { Some(api) } else { None };
    Executor::new(o.store.clone(), o.diag.clone(), api, actor(), command_line())
}

fn report_json(r: &Report) -> Value {
    json!({"clean": r.clean, "checked_at": r.checked_at, "summary": r.summary, "findings": r.findings,
           "resolved": r.resolved, "checked": r.checked})
}

async fn check(c: &Common, fix: bool, apply: bool) -> Result<(Value, i32), DoctorError> {
    let config = config_of(c)?;
    let o = open(c).await?;
    let now = now_ms();
    let report = diagnose(o.store.as_ref(), o.diag.as_ref(), &config, now, &o.liveness).await?;
    let suffix = db_suffix(c);
    let mode = if apply {
        "apply"
    } else if fix {
        "preview"
    } else {
        "check"
    };
    let mut result = report_json(&report);
    result["mode"] = json!(mode);
    let plan: Vec<Value> =
        report.repairs().map(|(f, r)| json!({"code": f.code, "subject": f.subject, "repair": r})).collect();
    if fix {
        result["plan"] = json!(plan);
    }
    let mut final_report = report.clone();
    if apply {
        let ex = executor(c, &o).await;
        result["via_api"] = json!(ex.api.is_some());
        let mut done = Vec::new();
        for (f, r) in report.repairs() {
            done.push(ex.apply(f, r, now_ms()).await?);
        }
        result["repairs"] = json!(done);
        // Give the repairs that go through the engine a moment to land, then look again.
        if ex.api.is_some() && !done.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let after = diagnose(o.store.as_ref(), o.diag.as_ref(), &config, now_ms(), &o.liveness).await?;
        result["after"] = report_json(&after);
        final_report = after;
    }
    let clean = final_report.clean;
    let mut next = Vec::new();
    if !clean {
        let repairable = final_report.repairs().count();
        if repairable > 0 && !apply {
            if !fix {
                next.push(action(
                    &format!("sluice doctor --fix{suffix}"),
                    &format!("Preview the {repairable} repair(s)"),
                ));
            }
            next.push(action(
                &format!("sluice doctor --fix --apply{suffix}"),
                "Make the repairs (recorded in the audit log)",
            ));
        }
        for f in final_report.findings.iter().take(5) {
            match (f.code, &f.run_id) {
                (sluice_doctor::Code::PausedUnreachable, _) => next.push(action(
                    &format!(
                        "sluice doctor sweep --older-than 30m --function {} --apply{suffix}",
                        f.function_id.clone().unwrap_or_default()
                    ),
                    "Cancel the parked runs if their deployment is gone for good",
                )),
                (_, Some(run)) => next.push(action(&format!("sluice runs show {run}"), "Look at the run")),
                _ => {}
            }
        }
    } else if apply {
        next.push(action(&format!("sluice doctor audit{suffix}"), "See what was repaired"));
    }
    let mut envelope = json!({"ok": clean, "command": "sluice doctor", "result": result, "next_actions": next});
    if !clean {
        let n = final_report.findings.len();
        envelope["error"] = json!({"message": format!("{n} finding(s) need attention"), "code": "SLUICE-6000"});
        envelope["fix"] = json!(hint("SLUICE-6000"));
    }
    Ok((envelope, if clean { 0 } else { 1 }))
}

async fn audit(c: &Common, limit: usize) -> Result<(Value, i32), DoctorError> {
    let o = open(c).await?;
    let entries = o.diag.list_audit(limit).await?;
    let envelope = json!({"ok": true, "command": "sluice doctor audit", "result": {"entries": entries},
                          "next_actions": [action(&format!("sluice doctor{}", db_suffix(c)), "Diagnose again")]});
    Ok((envelope, 0))
}

async fn sweep_cmd(
    c: &Common,
    scope: SweepScope,
    backup_dir: Option<PathBuf>,
    apply: bool,
) -> Result<(Value, i32), DoctorError> {
    sweep::validate(&scope)?;
    let o = open(c).await?;
    let now = now_ms();
    let candidates = sweep::candidates(o.diag.as_ref(), &scope, now, &o.liveness).await?;
    let suffix = db_suffix(c);
    let functions: String = scope.functions.iter().map(|f| format!(" --function {f}")).collect();
    let base = format!("sluice doctor sweep --older-than {}{functions} --max {}", scope.older_than_text, scope.max);
    let mut result = json!({"mode": if apply { "apply" } else { "preview" }, "candidates": candidates,
                            "older_than_ms": scope.older_than, "functions": scope.functions, "max": scope.max});
    let mut next = Vec::new();
    if apply {
        let dir = backup_dir.unwrap_or_else(|| {
            o.sqlite_path.as_ref().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_else(|| PathBuf::from("."))
        });
        let ex = executor(c, &o).await;
        let (backup, done) = sweep::apply(&ex, &candidates, &dir, now).await?;
        result["backup"] = json!(backup);
        result["cancelled"] = json!(done);
        next.push(action(&format!("sluice doctor audit{suffix}"), "See what was cancelled"));
        let failed = done.iter().filter(|d| d.outcome == "failed").count();
        let ok = failed == 0;
        let mut envelope = json!({"ok": ok, "command": "sluice doctor sweep", "result": result, "next_actions": next});
        if !ok {
            envelope["error"] = json!({"message": format!("{failed} cancel(s) failed"), "code": "SLUICE-6003"});
        }
        return Ok((envelope, if ok { 0 } else { 1 }));
    }
    if !candidates.is_empty() {
        next.push(action(&format!("{base} --apply{suffix}"), "Back up, then cancel these runs"));
    }
    Ok((json!({"ok": true, "command": "sluice doctor sweep", "result": result, "next_actions": next}), 0))
}

async fn undo(c: &Common, audit_id: &str) -> Result<(Value, i32), DoctorError> {
    let o = open(c).await?;
    let ex = executor(c, &o).await;
    let result = ex.undo(audit_id, now_ms()).await?;
    Ok((
        json!({"ok": true, "command": "sluice doctor undo", "result": result, "next_actions": [
        action(&format!("sluice doctor{}", db_suffix(c)), "Diagnose again")]}),
        0,
    ))
}

/// The human rendering: one block per finding, then the summary.
fn print_text(envelope: &Value) {
    let r = &envelope["result"];
    if let Some(entries) = r["entries"].as_array() {
        for e in entries {
            println!(
                "{}  {}  {:<22} {:<20} {:<8} {}",
                e["id"].as_str().unwrap_or(""),
                sluice_protocol::duration::format_rfc3339_ms(e["at"].as_i64().unwrap_or(0)),
                e["finding_code"].as_str().unwrap_or(""),
                e["action"].as_str().unwrap_or(""),
                e["outcome"].as_str().unwrap_or(""),
                e["subject"].as_str().unwrap_or("")
            );
        }
        return;
    }
    let report = if r["after"].is_object() { &r["after"] } else { r };
    if let Some(repairs) = r["repairs"].as_array().or(r["cancelled"].as_array()) {
        for d in repairs {
            println!(
                "repair {:<20} {:<8} {}",
                d["action"].as_str().unwrap_or(""),
                d["outcome"].as_str().unwrap_or(""),
                d["subject"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(candidates) = r["candidates"].as_array() {
        for cnd in candidates {
            println!("candidate {} {} {} idle {} ms", cnd["run_id"], cnd["function_id"], cnd["status"], cnd["idle_ms"]);
        }
    }
    for f in report["findings"].as_array().into_iter().flatten() {
        println!("{:<22} {}", f["code"].as_str().unwrap_or(""), f["message"].as_str().unwrap_or(""));
        if let Some(rep) = f["repair"].as_object() {
            println!(
                "  repair: {} ({})",
                rep["action"].as_str().unwrap_or(""),
                rep["description"].as_str().unwrap_or("")
            );
        }
        if let Some(fix) = f["fix"].as_str().filter(|s| !s.is_empty()) {
            println!("  fix: {fix}");
        }
    }
    if report["clean"].as_bool() == Some(true) {
        println!("clean: no findings");
    }
    for a in envelope["next_actions"].as_array().into_iter().flatten() {
        eprintln!("next: {}  # {}", a["command"].as_str().unwrap_or(""), a["description"].as_str().unwrap_or(""));
    }
}

/// What `GET /v1/doctor` diagnoses on a running server: its own store, with the doctor settings
/// from `SLUICE_DOCTOR_CONFIG` or `./sluice-doctor.toml` (defaults when absent or invalid).
pub fn api_source<S: Store + Diagnostics + Clone>(store: S) -> sluice_api::doctor::DoctorSource {
    let config = DoctorConfig::discover(None).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "doctor settings ignored; GET /v1/doctor uses the defaults");
        DoctorConfig::default()
    });
    sluice_api::doctor::DoctorSource { store: Arc::new(store.clone()), diag: Arc::new(store), config }
}
