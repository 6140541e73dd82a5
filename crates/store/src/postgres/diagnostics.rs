//! `Diagnostics` on PostgreSQL: the snapshot is one read-only REPEATABLE READ transaction (one
//! view of the database while every node keeps writing); the backup before a bulk repair is a JSON
//! dump of the affected runs' rows, read back and checked before anything changes.

use std::path::Path;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use serde_json::{json, Value};
use tokio_postgres::IsolationLevel;

use super::rows::*;
use super::{execute, query, query_opt, sql_limit, PostgresStore};
use crate::diagnostics::*;
use crate::error::{Result, StoreError};
use crate::records::*;

const RUN_COLUMNS: &str = "id, function_id, app_id, event_id, event_ids, status, state, output, error, parked_reason, created_at, started_at, ended_at, updated_at, rev";
const EVENT_COLUMNS: &str = "id, body, received_at, source_run_id";
const ITEM_COLUMNS: &str = "id, run_id, kind, step_id, attempt, available_at, lease_owner, lease_expires_at, unreachable_count, unreachable_since, parked, created_at";
const PAUSE_COLUMNS: &str =
    "id, run_id, kind, step_id, event_name, expression, match_key, trigger_event, expires_at, created_at";
const AUDIT_COLUMNS: &str =
    "id, at, actor, command, finding_code, subject, action, outcome, idempotency_key, detail, undo";
const ACTIVE: &str = "('Queued', 'Running', 'PausedUnreachable')";

fn prefixed(columns: &str, prefix: &str) -> String {
    columns.split(", ").map(|c| format!("{prefix}.{c}")).collect::<Vec<_>>().join(", ")
}

fn audit_from_row(r: &tokio_postgres::Row) -> Result<AuditEntry> {
    let undo: Option<&str> = r.try_get(10)?;
    Ok(AuditEntry {
        id: r.try_get(0)?,
        at: r.try_get(1)?,
        actor: r.try_get(2)?,
        command: r.try_get(3)?,
        finding_code: r.try_get(4)?,
        subject: r.try_get(5)?,
        action: r.try_get(6)?,
        outcome: r.try_get(7)?,
        idempotency_key: r.try_get(8)?,
        detail: serde_json::from_str(r.try_get(9)?)?,
        undo: undo.map(serde_json::from_str).transpose()?,
    })
}

async fn read_nodes<C: GenericClient>(c: &C) -> Result<Option<Vec<NodeHeartbeat>>> {
    let cols = query(
        c,
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_name = 'nodes' AND table_schema = current_schema()",
        &[],
    )
    .await?;
    let names: Vec<String> = cols.iter().map(|r| r.try_get(0)).collect::<std::result::Result<_, _>>()?;
    let Some((id, heartbeat)) = node_columns(&names) else { return Ok(None) };
    let heartbeat_type: String = cols
        .iter()
        .find(|r| r.try_get::<_, String>(0).is_ok_and(|n| n == heartbeat))
        .map(|r| r.try_get(1))
        .transpose()?
        .unwrap_or_default();
    let heartbeat_ms = if heartbeat_type.starts_with("timestamp") {
        format!("(EXTRACT(EPOCH FROM {heartbeat}) * 1000)::BIGINT")
    } else {
        format!("{heartbeat}::BIGINT")
    };
    let rows = query(c, &format!("SELECT {id}::text, {heartbeat_ms} FROM nodes"), &[]).await?;
    let nodes = rows
        .iter()
        .map(|r| Ok(NodeHeartbeat { id: r.try_get(0)?, heartbeat_at: r.try_get::<_, Option<i64>>(1)?.unwrap_or(0) }))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(nodes))
}

async fn snapshot_in<C: GenericClient>(c: &C, since: i64, limit: i64) -> Result<DiagSnapshot> {
    let apps = rows(&query(c, super::queries::apps::LIST, &[]).await?, app_from_row)?;
    let functions = rows(&query(c, super::queries::apps::LIST_FUNCTIONS, &[]).await?, function_from_row)?;
    let active_runs = rows(
        &query(c, &format!("SELECT {RUN_COLUMNS} FROM runs WHERE status IN {ACTIVE} ORDER BY id"), &[]).await?,
        run_from_row,
    )?;
    let items =
        rows(&query(c, &format!("SELECT {ITEM_COLUMNS} FROM queue ORDER BY available_at"), &[]).await?, item_from_row)?;
    let pauses = rows(
        &query(c, &format!("SELECT {PAUSE_COLUMNS} FROM pauses ORDER BY created_at"), &[]).await?,
        pause_from_row,
    )?;
    let progress = query(
        c,
        &format!(
            "SELECT r.id, COUNT(s.step_id), MAX(s.created_at) FROM runs r LEFT JOIN steps s ON s.run_id = r.id
             WHERE r.status IN {ACTIVE} GROUP BY r.id ORDER BY r.id"
        ),
        &[],
    )
    .await?
    .iter()
    .map(|r| Ok(RunProgress { run_id: r.try_get(0)?, steps: r.try_get(1)?, last_step_at: r.try_get(2)? }))
    .collect::<Result<Vec<_>>>()?;

    let has =
        |name: &str| format!("EXISTS (SELECT 1 FROM events e WHERE e.source_run_id = r.id AND e.name = '{name}')");
    let unfinalized_sql = format!(
        "SELECT * FROM (SELECT {cols}, {fin} AS has_finished, {failed} AS has_failed, {cancelled} AS has_cancelled
           FROM runs r WHERE r.status IN ('Completed', 'Failed', 'Cancelled')) t
         WHERE NOT has_finished OR (status = 'Failed' AND NOT has_failed) OR (status = 'Cancelled' AND NOT has_cancelled)
         ORDER BY id LIMIT $1",
        cols = prefixed(RUN_COLUMNS, "r"),
        fin = has(FUNCTION_FINISHED),
        failed = has(FUNCTION_FAILED),
        cancelled = has(FUNCTION_CANCELLED),
    );
    let mut unfinalized = Vec::new();
    for r in query(c, &unfinalized_sql, &[&limit]).await? {
        let run = run_from_row(&r)?;
        let (finished, failed, cancelled): (bool, bool, bool) = (r.try_get(15)?, r.try_get(16)?, r.try_get(17)?);
        unfinalized.push(UnfinalizedRun { missing: missing_events(run.status, finished, failed, cancelled), run });
    }

    let mut duplicates = Vec::new();
    for r in query(
        c,
        "SELECT d.run_id, d.step_id, s.value, d.value, d.received_at FROM step_duplicates d
         LEFT JOIN steps s ON s.run_id = d.run_id AND s.step_id = d.step_id
         ORDER BY d.received_at LIMIT $1",
        &[&limit],
    )
    .await?
    {
        let stored: Option<&str> = r.try_get(2)?;
        duplicates.push(StepDuplicate {
            run_id: r.try_get(0)?,
            step_id: r.try_get(1)?,
            stored_value: stored.map(serde_json::from_str).transpose()?,
            value: serde_json::from_str(r.try_get(3)?)?,
            received_at: r.try_get(4)?,
        });
    }
    let sent = rows(
        &query(
            c,
            "SELECT run_id, step_id, seq, name, value, created_at FROM steps
             WHERE created_at >= $1 AND (name IN ('sendEvent', 'send_event') OR value LIKE '{\"data\":{\"ids\":[%')
             ORDER BY created_at LIMIT $2",
            &[&since, &limit],
        )
        .await?,
        step_from_row,
    )?;
    let mut emitted = Vec::new();
    for r in query(
        c,
        &format!(
            "SELECT {cols}, (SELECT COUNT(*) FROM runs r WHERE r.event_id = e.id) FROM events e
             WHERE e.source_run_id IS NOT NULL AND e.name NOT LIKE 'inngest/%' AND e.received_at >= $1
             ORDER BY e.id LIMIT $2",
            cols = prefixed(EVENT_COLUMNS, "e")
        ),
        &[&since, &limit],
    )
    .await?
    {
        emitted.push(EmittedEvent { event: event_from_row(&r)?, run_count: r.try_get(4)? });
    }
    let guards = query(c, "SELECT key, run_id, expires_at, release_on_end FROM run_guards ORDER BY key", &[])
        .await?
        .iter()
        .map(|r| {
            Ok(GuardRecord {
                key: r.try_get(0)?,
                run_id: r.try_get(1)?,
                expires_at: r.try_get(2)?,
                release_on_end: r.try_get::<_, i32>(3)? != 0,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(DiagSnapshot {
        apps,
        functions,
        active_runs,
        items,
        pauses,
        progress,
        unfinalized,
        duplicates,
        sent,
        emitted,
        guards,
        nodes: read_nodes(c).await?,
    })
}

#[async_trait]
impl Diagnostics for PostgresStore {
    async fn diagnostic_snapshot(&self, since: i64, limit: usize) -> Result<DiagSnapshot> {
        let mut client = self.client().await?;
        let tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let snapshot = snapshot_in(&tx, since, sql_limit(limit)).await?;
        tx.commit().await?;
        Ok(snapshot)
    }

    async fn events_from_runs(&self, run_ids: &[String]) -> Result<Vec<EventRecord>> {
        if run_ids.is_empty() {
            return Ok(vec![]);
        }
        let client = self.client().await?;
        let ids = run_ids.to_vec();
        rows(
            &query(
                &client,
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE source_run_id = ANY($1) ORDER BY id"),
                &[&ids],
            )
            .await?,
            event_from_row,
        )
    }

    async fn events_named_since(&self, name: &str, since: i64, limit: usize) -> Result<Vec<EventRecord>> {
        let client = self.client().await?;
        rows(
            &query(
                &client,
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE name = $1 AND received_at >= $2 ORDER BY id LIMIT $3"
                ),
                &[&name, &since, &sql_limit(limit)],
            )
            .await?,
            event_from_row,
        )
    }

    async fn event_consumed_by_step(&self, event_id: &str) -> Result<bool> {
        let client = self.client().await?;
        let pattern = format!("%\"id\":\"{event_id}\"%");
        Ok(query_opt(&client, "SELECT 1 FROM steps WHERE value LIKE $1 LIMIT 1", &[&pattern]).await?.is_some())
    }

    async fn release_lease(&self, item_id: &str, owner: &str, expires_at: Option<i64>) -> Result<bool> {
        let client = self.client().await?;
        let n = execute(
            &client,
            "UPDATE queue SET lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND lease_owner = $2 AND lease_expires_at IS NOT DISTINCT FROM $3",
            &[&item_id, &owner, &expires_at],
        )
        .await?;
        Ok(n == 1)
    }

    async fn release_guard(&self, key: &str, run_id: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(execute(&client, "DELETE FROM run_guards WHERE key = $1 AND run_id = $2", &[&key, &run_id]).await? == 1)
    }

    async fn record_audit(&self, e: AuditEntry) -> Result<()> {
        let client = self.client().await?;
        let detail = e.detail.to_string();
        let undo = e.undo.as_ref().map(|v| v.to_string());
        execute(
            &client,
            &format!(
                "INSERT INTO doctor_audit ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ),
            &[
                &e.id,
                &e.at,
                &e.actor,
                &e.command,
                &e.finding_code,
                &e.subject,
                &e.action,
                &e.outcome,
                &e.idempotency_key,
                &detail,
                &undo,
            ],
        )
        .await?;
        Ok(())
    }

    async fn list_audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let client = self.client().await?;
        rows(
            &query(
                &client,
                &format!("SELECT {AUDIT_COLUMNS} FROM doctor_audit ORDER BY at DESC, id DESC LIMIT $1"),
                &[&sql_limit(limit)],
            )
            .await?,
            audit_from_row,
        )
    }

    async fn audit_for_key(&self, key: &str) -> Result<Vec<AuditEntry>> {
        let client = self.client().await?;
        rows(
            &query(
                &client,
                &format!("SELECT {AUDIT_COLUMNS} FROM doctor_audit WHERE idempotency_key = $1 ORDER BY at, id"),
                &[&key],
            )
            .await?,
            audit_from_row,
        )
    }

    async fn backup(&self, dir: &Path, run_ids: &[String], now: i64) -> Result<BackupInfo> {
        let mut client = self.client().await?;
        let tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let ids = run_ids.to_vec();
        let dump = |sql: &'static str| {
            let tx = &tx;
            let ids = &ids;
            async move {
                let rows = query(tx, sql, &[ids]).await?;
                rows.iter()
                    .map(|r| Ok(serde_json::from_str::<Value>(r.try_get::<_, &str>(0)?)?))
                    .collect::<Result<Vec<Value>>>()
            }
        };
        let runs = dump("SELECT row_to_json(t)::text FROM runs t WHERE id = ANY($1) ORDER BY id").await?;
        let tables = json!({
            "runs": runs,
            "steps": dump("SELECT row_to_json(t)::text FROM steps t WHERE run_id = ANY($1) ORDER BY run_id, seq").await?,
            "queue": dump("SELECT row_to_json(t)::text FROM queue t WHERE run_id = ANY($1) ORDER BY id").await?,
            "pauses": dump("SELECT row_to_json(t)::text FROM pauses t WHERE run_id = ANY($1) ORDER BY id").await?,
            "run_guards": dump("SELECT row_to_json(t)::text FROM run_guards t WHERE run_id = ANY($1) ORDER BY key").await?,
            "events": dump(
                "SELECT row_to_json(t)::text FROM events t
                 WHERE source_run_id = ANY($1) OR id IN (SELECT event_id FROM runs WHERE id = ANY($1)) ORDER BY id"
            )
            .await?,
        });
        tx.commit().await?;
        let body = json!({ "kind": "json-rows", "taken_at": now, "run_ids": run_ids, "tables": tables });
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(format!("{}: {e}", dir.display())))?;
        let path = dir.join(backup_file_name("sluice-postgres", now, "json"));
        if path.exists() {
            return Err(StoreError::Database(format!("backup {} already exists", path.display())));
        }
        let text = serde_json::to_string_pretty(&body)?;
        std::fs::write(&path, &text).map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
        // Read it back: the file on disk must hold every run it was asked to.
        let back: Value = serde_json::from_str(
            &std::fs::read_to_string(&path).map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?,
        )?;
        let saved = back["tables"]["runs"].as_array().map_or(0, Vec::len);
        if saved != runs.len() {
            return Err(StoreError::Corrupt(format!(
                "backup {} holds {saved} runs, expected {}",
                path.display(),
                runs.len()
            )));
        }
        Ok(BackupInfo { path, kind: "json-rows".into(), bytes: text.len() as u64, runs: saved })
    }
}
