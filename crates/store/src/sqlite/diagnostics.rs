//! `Diagnostics` on SQLite: the snapshot is one read transaction (WAL gives it a stable view while
//! sluice keeps writing), backups are `VACUUM INTO` a new file, checked before anything changes.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::rows::*;
use super::SqliteStore;
use crate::diagnostics::*;
use crate::error::{Result, StoreError};
use crate::records::*;

const AUDIT_COLUMNS: &str =
    "id, at, actor, command, finding_code, subject, action, outcome, idempotency_key, detail, undo";

/// Non-terminal statuses, for `status IN (…)`.
const ACTIVE: &str = "('Queued', 'Running', 'PausedUnreachable')";

fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<Result<AuditEntry>> {
    let detail: String = r.get(9)?;
    let undo: Option<String> = r.get(10)?;
    let build = || -> Result<AuditEntry> {
        Ok(AuditEntry {
            id: r.get(0)?,
            at: r.get(1)?,
            actor: r.get(2)?,
            command: r.get(3)?,
            finding_code: r.get(4)?,
            subject: r.get(5)?,
            action: r.get(6)?,
            outcome: r.get(7)?,
            idempotency_key: r.get(8)?,
            detail: serde_json::from_str(&detail)?,
            undo: undo.as_deref().map(serde_json::from_str).transpose()?,
        })
    };
    Ok(build())
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<Result<T>>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(p, map)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r??);
    }
    Ok(out)
}

fn step_from_row(r: &Row<'_>) -> rusqlite::Result<Result<StepRecord>> {
    let value: String = r.get(4)?;
    let build = || -> Result<StepRecord> {
        Ok(StepRecord {
            run_id: r.get(0)?,
            step_id: r.get(1)?,
            seq: r.get(2)?,
            name: r.get(3)?,
            value: serde_json::from_str(&value)?,
            created_at: r.get(5)?,
        })
    };
    Ok(build())
}

/// The `nodes` table of a multi-node store, read by column name so its exact shape does not matter:
/// an id column (`id` / `node_id`) and a heartbeat column in unix milliseconds.
fn read_nodes(conn: &Connection) -> Result<Option<Vec<NodeHeartbeat>>> {
    let columns: Vec<String> = {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('nodes')")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    let Some((id, heartbeat)) = node_columns(&columns) else { return Ok(None) };
    let mut stmt = conn.prepare(&format!("SELECT {id}, {heartbeat} FROM nodes"))?;
    let rows = stmt.query_map([], |r| Ok(NodeHeartbeat { id: r.get(0)?, heartbeat_at: r.get(1)? }))?;
    Ok(Some(rows.collect::<std::result::Result<_, _>>()?))
}

fn snapshot_in(conn: &Connection, since: i64, limit: usize) -> Result<DiagSnapshot> {
    let limit = limit.min(i64::MAX as usize) as i64;
    let apps = {
        let mut stmt = conn.prepare(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY id"))?;
        let rows = stmt.query_map([], app_from_row)?;
        rows.collect::<std::result::Result<Vec<_>, _>>()?
    };
    let mut functions = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT id, app_id, name, config, updated_at FROM functions ORDER BY id")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let config: String = r.get(3)?;
            functions.push(FunctionRecord {
                id: r.get(0)?,
                app_id: r.get(1)?,
                name: r.get(2)?,
                config: serde_json::from_str(&config)?,
                updated_at: r.get(4)?,
            });
        }
    }
    let active_runs = collect(
        conn,
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE status IN {ACTIVE} ORDER BY id"),
        [],
        run_from_row,
    )?;
    let items = collect(conn, &format!("SELECT {ITEM_COLUMNS} FROM queue ORDER BY available_at"), [], item_from_row)?;
    let pauses = collect(conn, &format!("SELECT {PAUSE_COLUMNS} FROM pauses ORDER BY created_at"), [], pause_from_row)?;
    let progress = {
        let mut stmt = conn.prepare(&format!(
            "SELECT r.id, COUNT(s.step_id), MAX(s.created_at) FROM runs r LEFT JOIN steps s ON s.run_id = r.id
             WHERE r.status IN {ACTIVE} GROUP BY r.id ORDER BY r.id"
        ))?;
        let rows =
            stmt.query_map([], |r| Ok(RunProgress { run_id: r.get(0)?, steps: r.get(1)?, last_step_at: r.get(2)? }))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()?
    };
    let unfinalized = {
        let has =
            |name: &str| format!("EXISTS (SELECT 1 FROM events e WHERE e.source_run_id = r.id AND e.name = '{name}')");
        let sql = format!(
            "SELECT * FROM (SELECT {cols}, {fin} AS has_finished, {failed} AS has_failed, {cancelled} AS has_cancelled
               FROM runs r WHERE r.status IN ('Completed', 'Failed', 'Cancelled')) t
             WHERE has_finished = 0 OR (status = 'Failed' AND has_failed = 0) OR (status = 'Cancelled' AND has_cancelled = 0)
             ORDER BY id LIMIT ?1",
            cols = RUN_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect::<Vec<_>>().join(", "),
            fin = has(FUNCTION_FINISHED),
            failed = has(FUNCTION_FAILED),
            cancelled = has(FUNCTION_CANCELLED),
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![limit], |r| {
            let run = run_from_row(r)?;
            let flags: (bool, bool, bool) = (r.get(15)?, r.get(16)?, r.get(17)?);
            Ok(run.map(|run| (run, flags)))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (run, (finished, failed, cancelled)) = row??;
            out.push(UnfinalizedRun { missing: missing_events(run.status, finished, failed, cancelled), run });
        }
        out
    };
    let duplicates = {
        let mut stmt = conn.prepare(
            "SELECT d.run_id, d.step_id, s.value, d.value, d.received_at FROM step_duplicates d
             LEFT JOIN steps s ON s.run_id = d.run_id AND s.step_id = d.step_id
             ORDER BY d.received_at LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (run_id, step_id, stored, value, received_at) = row?;
            out.push(StepDuplicate {
                run_id,
                step_id,
                stored_value: stored.as_deref().map(serde_json::from_str).transpose()?,
                value: serde_json::from_str(&value)?,
                received_at,
            });
        }
        out
    };
    let sent = collect(
        conn,
        "SELECT run_id, step_id, seq, name, value, created_at FROM steps
         WHERE created_at >= ?1 AND (name IN ('sendEvent', 'send_event') OR value LIKE '{\"data\":{\"ids\":[%')
         ORDER BY created_at LIMIT ?2",
        params![since, limit],
        step_from_row,
    )?;
    let emitted = {
        let mut stmt = conn.prepare(&format!(
            "SELECT {cols}, (SELECT COUNT(*) FROM runs r WHERE r.event_id = e.id) FROM events e
             WHERE e.source_run_id IS NOT NULL AND e.name NOT LIKE 'inngest/%' AND e.received_at >= ?1
             ORDER BY e.id LIMIT ?2",
            cols = EVENT_COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ")
        ))?;
        let rows = stmt.query_map(params![since, limit], |r| {
            let event = event_from_row(r)?;
            let count: i64 = r.get(4)?;
            Ok(event.map(|event| EmittedEvent { event, run_count: count }))
        })?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        out
    };
    let guards = {
        let mut stmt = conn.prepare("SELECT key, run_id, expires_at, release_on_end FROM run_guards ORDER BY key")?;
        let rows = stmt.query_map([], |r| {
            Ok(GuardRecord {
                key: r.get(0)?,
                run_id: r.get(1)?,
                expires_at: r.get(2)?,
                release_on_end: r.get::<_, i64>(3)? != 0,
            })
        })?;
        rows.collect::<std::result::Result<Vec<_>, _>>()?
    };
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
        nodes: read_nodes(conn)?,
    })
}

#[async_trait]
impl Diagnostics for SqliteStore {
    async fn diagnostic_snapshot(&self, since: i64, limit: usize) -> Result<DiagSnapshot> {
        self.with_conn(move |conn| {
            // A deferred transaction that only reads: one snapshot of the WAL for every query.
            let tx = conn.transaction()?;
            let snapshot = snapshot_in(&tx, since, limit)?;
            tx.commit()?;
            Ok(snapshot)
        })
        .await
    }

    async fn events_from_runs(&self, run_ids: &[String]) -> Result<Vec<EventRecord>> {
        let run_ids = run_ids.to_vec();
        self.with_conn(move |conn| {
            let mut out = Vec::new();
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE source_run_id = ?1 ORDER BY id");
            for run_id in run_ids {
                out.extend(collect(conn, &sql, params![run_id], event_from_row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn events_named_since(&self, name: &str, since: i64, limit: usize) -> Result<Vec<EventRecord>> {
        let name = name.to_string();
        let limit = limit.min(i64::MAX as usize) as i64;
        self.with_conn(move |conn| {
            collect(
                conn,
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE name = ?1 AND received_at >= ?2 ORDER BY id LIMIT ?3"
                ),
                params![name, since, limit],
                event_from_row,
            )
        })
        .await
    }

    async fn event_consumed_by_step(&self, event_id: &str) -> Result<bool> {
        let pattern = format!("%\"id\":\"{event_id}\"%");
        self.with_conn(move |conn| {
            let found: Option<i64> = conn
                .query_row("SELECT 1 FROM steps WHERE value LIKE ?1 LIMIT 1", params![pattern], |r| r.get(0))
                .optional()?;
            Ok(found.is_some())
        })
        .await
    }

    async fn release_lease(&self, item_id: &str, owner: &str, expires_at: Option<i64>) -> Result<bool> {
        let (item_id, owner) = (item_id.to_string(), owner.to_string());
        self.with_conn(move |conn| {
            let n = conn.execute(
                "UPDATE queue SET lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = ?1 AND lease_owner = ?2 AND lease_expires_at IS ?3",
                params![item_id, owner, expires_at],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_guard(&self, key: &str, run_id: &str) -> Result<bool> {
        let (key, run_id) = (key.to_string(), run_id.to_string());
        self.with_conn(move |conn| {
            Ok(conn.execute("DELETE FROM run_guards WHERE key = ?1 AND run_id = ?2", params![key, run_id])? == 1)
        })
        .await
    }

    async fn record_audit(&self, e: AuditEntry) -> Result<()> {
        self.with_conn(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO doctor_audit ({AUDIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    e.id,
                    e.at,
                    e.actor,
                    e.command,
                    e.finding_code,
                    e.subject,
                    e.action,
                    e.outcome,
                    e.idempotency_key,
                    e.detail.to_string(),
                    e.undo.as_ref().map(|v| v.to_string())
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.with_conn(move |conn| {
            collect(
                conn,
                &format!("SELECT {AUDIT_COLUMNS} FROM doctor_audit ORDER BY at DESC, id DESC LIMIT ?1"),
                params![limit],
                audit_from_row,
            )
        })
        .await
    }

    async fn audit_for_key(&self, key: &str) -> Result<Vec<AuditEntry>> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            collect(
                conn,
                &format!("SELECT {AUDIT_COLUMNS} FROM doctor_audit WHERE idempotency_key = ?1 ORDER BY at, id"),
                params![key],
                audit_from_row,
            )
        })
        .await
    }

    async fn backup(&self, dir: &Path, run_ids: &[String], now: i64) -> Result<BackupInfo> {
        let dir = dir.to_path_buf();
        let runs = run_ids.len();
        self.with_conn(move |conn| {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::Database(format!("{}: {e}", dir.display())))?;
            let path = dir.join(backup_file_name("sluice.db", now, "sqlite"));
            if path.exists() {
                return Err(StoreError::Database(format!("backup {} already exists", path.display())));
            }
            conn.execute("VACUUM INTO ?1", params![path.to_string_lossy()])?;
            // The copy must open and pass an integrity check before anything is changed.
            let copy = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            if check != "ok" {
                return Err(StoreError::Corrupt(format!(
                    "backup {} failed its integrity check: {check}",
                    path.display()
                )));
            }
            let mut counts: HashMap<&str, i64> = HashMap::new();
            for table in ["runs", "queue"] {
                counts.insert(table, copy.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?);
            }
            let original: i64 = conn.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))?;
            if counts["runs"] != original {
                return Err(StoreError::Corrupt(format!(
                    "backup {} holds {} runs, the database {original}",
                    path.display(),
                    counts["runs"]
                )));
            }
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            Ok(BackupInfo { path, kind: "sqlite-vacuum-into".into(), bytes, runs })
        })
        .await
    }
}
