//! SQLite implementation: one connection (SQLite has one writer anyway) in WAL mode with
//! `synchronous=FULL`, so a commit that returned is on disk. Calls run on the blocking pool.

mod cluster;
mod deployments;
mod diagnostics;
mod flow;
mod rows;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::error::{Result, StoreError};
use crate::records::*;
use crate::Store;
use rows::*;
use sluice_protocol::run::RunStatus;

/// Versioned migrations, applied in order once each.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_pauses_and_guards.sql")),
    (3, include_str!("../../migrations/0003_nodes.sql")),
    (4, include_str!("../../migrations/0004_doctor.sql")),
    (5, include_str!("../../migrations/0005_deployments.sql")),
    (6, include_str!("../../migrations/0006_flow_control.sql")),
    (7, include_str!("../../migrations/0007_batches.sql")),
    (8, include_str!("../../migrations/0008_app_routing.sql")),
];

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Open { path: path.display().to_string(), reason: e.to_string() })?;
            }
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Open { path: path.display().to_string(), reason: e.to_string() })?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=OFF;",
        )?;
        let store = SqliteStore { conn: Arc::new(Mutex::new(conn)) };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn.lock().unwrap();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )?;
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> = conn
                .query_row("SELECT version FROM schema_migrations WHERE version = ?1", params![version], |r| r.get(0))
                .optional()?;
            if done.is_none() {
                let tx = conn.transaction()?;
                tx.execute_batch(sql)?;
                tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)", params![version])?;
                tx.commit()?;
            }
        }
        Ok(())
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Database(format!("store task failed: {e}")))?
    }
}

/// The queue item that matches a stored event against waiting pauses.
pub fn match_pauses_item(event_id: &str, now: i64) -> QueueItem {
    QueueItem::new(format!("{event_id}:m"), event_id, ItemKind::MatchPauses, "", now, now)
}

/// Take one free key of every guard for a new run, or none at all.
fn acquire_guards(tx: &Transaction<'_>, run_id: &str, guards: &[RunGuard], now: i64) -> Result<bool> {
    let mut chosen = Vec::with_capacity(guards.len());
    for g in guards {
        let mut free = None;
        for key in &g.keys {
            let held: Option<i64> = tx
                .query_row("SELECT expires_at FROM run_guards WHERE key = ?1", params![key], |r| r.get(0))
                .optional()?;
            if held.is_none_or(|until| until <= now) {
                free = Some(key);
                break;
            }
        }
        match free {
            Some(key) => chosen.push((key, g)),
            None => return Ok(false),
        }
    }
    for (key, g) in chosen {
        tx.execute(
            "INSERT INTO run_guards (key, run_id, expires_at, release_on_end) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id, expires_at = excluded.expires_at,
               release_on_end = excluded.release_on_end",
            params![key, run_id, g.expires_at, g.release_on_end as i64],
        )?;
    }
    Ok(true)
}

fn ingest_in(tx: &Transaction<'_>, items: &[IngestItem]) -> Result<Vec<IngestOutcome>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let now = item.record.received_at;
        if let Some(key) = &item.dedup_key {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT event_id FROM event_dedup WHERE key = ?1 AND expires_at > ?2",
                    params![key, now],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(event_id) = existing {
                out.push(IngestOutcome { event_id, duplicate: true, run_ids: vec![], skipped_runs: vec![] });
                continue;
            }
        }
        // A seeded id seen before is an SDK retrying the same send.
        let seen: Option<String> =
            tx.query_row("SELECT id FROM events WHERE id = ?1", params![item.record.id], |r| r.get(0)).optional()?;
        if seen.is_some() {
            out.push(IngestOutcome {
                event_id: item.record.id.clone(),
                duplicate: true,
                run_ids: vec![],
                skipped_runs: vec![],
            });
            continue;
        }
        insert_event(tx, &item.record)?;
        if let Some(key) = &item.dedup_key {
            tx.execute(
                "INSERT INTO event_dedup (key, event_id, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at",
                params![key, item.record.id, item.dedup_until],
            )?;
        }
        let waiting: Option<i64> = tx
            .query_row("SELECT 1 FROM pauses WHERE event_name = ?1 LIMIT 1", params![item.record.event.name], |r| {
                r.get(0)
            })
            .optional()?;
        if waiting.is_some() {
            enqueue_item(tx, &match_pauses_item(&item.record.id, now))?;
        }
        let mut run_ids = Vec::new();
        let mut skipped_runs = Vec::new();
        for new_run in &item.runs {
            if !acquire_guards(tx, &new_run.run.id, &new_run.guards, now)? {
                skipped_runs.push(new_run.run.id.clone());
                continue;
            }
            insert_run(tx, &new_run.run)?;
            enqueue_item(tx, &new_run.first_item)?;
            for extra in &new_run.extra_items {
                enqueue_item(tx, extra)?;
            }
            for pause in &new_run.pauses {
                insert_pause(tx, pause)?;
            }
            run_ids.push(new_run.run.id.clone());
        }
        out.push(IngestOutcome { event_id: item.record.id.clone(), duplicate: false, run_ids, skipped_runs });
    }
    Ok(out)
}

#[async_trait]
impl Store for SqliteStore {
    async fn upsert_app(&self, app: AppRecord, functions: Vec<FunctionRecord>) -> Result<bool> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let previous: Option<String> = tx
                .query_row(
                    "SELECT config_hash FROM apps WHERE id = ?1",
                    params![app.id],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute(
                "INSERT INTO apps (id, url, normalized_url, framework, sdk, deploy_id, app_version, config_hash, status, last_error, synced_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (id) DO UPDATE SET url = excluded.url, normalized_url = excluded.normalized_url,
                   framework = excluded.framework, sdk = excluded.sdk, deploy_id = excluded.deploy_id,
                   app_version = excluded.app_version, config_hash = excluded.config_hash, status = excluded.status,
                   last_error = excluded.last_error, synced_at = excluded.synced_at, updated_at = excluded.updated_at",
                params![
                    app.id, app.url, app.normalized_url, app.framework, app.sdk, app.deploy_id, app.app_version,
                    app.config_hash, app.status.as_str(), app.last_error, app.synced_at, app.updated_at
                ],
            )?;
            tx.execute("DELETE FROM functions WHERE app_id = ?1", params![app.id])?;
            for f in &functions {
                tx.execute(
                    "INSERT INTO functions (id, app_id, name, config, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET app_id = excluded.app_id, name = excluded.name,
                       config = excluded.config, updated_at = excluded.updated_at",
                    params![f.id, f.app_id, f.name, serde_json::to_string(&f.config)?, f.updated_at],
                )?;
            }
            tx.commit()?;
            Ok(previous.as_deref() != Some(app.config_hash.as_str()))
        })
        .await
    }

    async fn set_app_status(&self, app_id: &str, status: AppStatus, error: Option<String>, now: i64) -> Result<()> {
        let app_id = app_id.to_string();
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE apps SET status = ?2, last_error = ?3, updated_at = ?4 WHERE id = ?1",
                params![app_id, status.as_str(), error, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY id"))?;
            let rows = stmt.query_map([], app_from_row)?;
            rows.collect::<std::result::Result<Vec<_>, _>>().map_err(Into::into)
        })
        .await
    }

    async fn list_functions(&self) -> Result<Vec<FunctionRecord>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT id, app_id, name, config, updated_at FROM functions ORDER BY id")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, app_id, name, config, updated_at) = row?;
                out.push(FunctionRecord { id, app_id, name, config: serde_json::from_str(&config)?, updated_at });
            }
            Ok(out)
        })
        .await
    }

    async fn ingest(&self, items: Vec<IngestItem>) -> Result<Vec<IngestOutcome>> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let out = ingest_in(&tx, &items)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn get_event(&self, id: &str) -> Result<Option<EventRecord>> {
        let id = id.to_string();
        self.with_conn(move |conn| {
            conn.query_row(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"), params![id], event_from_row)
                .optional()?
                .transpose()
        })
        .await
    }

    async fn get_events(&self, ids: &[String]) -> Result<Vec<EventRecord>> {
        let ids = ids.to_vec();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"))?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(e) = stmt.query_row(params![id], event_from_row).optional()? {
                    out.push(e?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn list_events(&self, name: Option<&str>, limit: usize) -> Result<Vec<EventRecord>> {
        let name = name.map(str::to_string);
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE (?1 IS NULL OR name = ?1) ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![name, limit as i64], event_from_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
        .await
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let id = id.to_string();
        self.with_conn(move |conn| get_run_in(conn, &id)).await
    }

    async fn runs_for_event(&self, event_id: &str) -> Result<Vec<RunRecord>> {
        let event_id = event_id.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE event_id = ?1 ORDER BY id"))?;
            let rows = stmt.query_map(params![event_id], run_from_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
        .await
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR function_id = ?2) AND (?3 IS NULL OR app_id = ?3)
                 ORDER BY id DESC LIMIT ?4"
            ))?;
            let limit = if filter.limit == 0 { 100 } else { filter.limit } as i64;
            let rows = stmt.query_map(
                params![filter.status.map(|s| s.as_str()), filter.function_id, filter.app_id, limit],
                run_from_row,
            )?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
        .await
    }

    async fn get_steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        let run_id = run_id.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT run_id, step_id, seq, name, value, created_at FROM steps WHERE run_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![run_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (run_id, step_id, seq, name, value, created_at) = row?;
                out.push(StepRecord { run_id, step_id, seq, name, value: serde_json::from_str(&value)?, created_at });
            }
            Ok(out)
        })
        .await
    }

    async fn items_for_run(&self, run_id: &str) -> Result<Vec<QueueItem>> {
        let run_id = run_id.to_string();
        self.with_conn(move |conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {ITEM_COLUMNS} FROM queue WHERE run_id = ?1 ORDER BY available_at"))?;
            let rows = stmt.query_map(params![run_id], item_from_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
        .await
    }

    async fn claim_due(&self, now: i64, owner: &str, lease_until: i64, limit: usize) -> Result<Vec<QueueItem>> {
        let owner = owner.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let mut items = Vec::new();
            {
                let mut stmt = tx.prepare(&format!(
                    "UPDATE queue SET lease_owner = ?1, lease_expires_at = ?2
                     WHERE id IN (SELECT id FROM queue WHERE parked = 0 AND available_at <= ?3
                                  AND (lease_expires_at IS NULL OR lease_expires_at < ?3)
                                  ORDER BY available_at LIMIT ?4)
                     RETURNING {ITEM_COLUMNS}"
                ))?;
                let rows = stmt.query_map(params![owner, lease_until, now, limit as i64], item_from_row)?;
                for r in rows {
                    items.push(r??);
                }
            }
            tx.commit()?;
            items.sort_by_key(|i| i.available_at);
            Ok(items)
        })
        .await
    }

    async fn next_due_at(&self) -> Result<Option<i64>> {
        self.with_conn(|conn| {
            let v: Option<i64> = conn.query_row(
                "SELECT MIN(CASE WHEN lease_expires_at IS NOT NULL AND lease_expires_at > available_at
                                 THEN lease_expires_at ELSE available_at END)
                 FROM queue WHERE parked = 0",
                [],
                |r| r.get(0),
            )?;
            Ok(v)
        })
        .await
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            if let Some(pause) = &commit.consume_pause {
                if tx.execute("DELETE FROM pauses WHERE id = ?1", params![pause])? == 0 {
                    return Ok(CommitOutcome::Conflict);
                }
            }
            if let Some(run) = &commit.run {
                let changed = tx.execute(
                    "UPDATE runs SET status = ?3, state = ?4, output = ?5, error = ?6, parked_reason = ?7,
                       started_at = ?8, ended_at = ?9, updated_at = ?10, rev = rev + 1
                     WHERE id = ?1 AND rev = ?2",
                    params![
                        run.id,
                        commit.expected_rev,
                        run.status.as_str(),
                        serde_json::to_string(&run.state)?,
                        run.output.as_ref().map(|v| v.to_string()),
                        run.error.as_ref().map(|v| v.to_string()),
                        run.parked_reason,
                        run.started_at,
                        run.ended_at,
                        run.updated_at
                    ],
                )?;
                if changed == 0 {
                    return Ok(CommitOutcome::Conflict);
                }
            }
            let mut duplicate_steps = Vec::new();
            for step in &commit.steps {
                let value = step.value.to_string();
                let inserted = tx.execute(
                    "INSERT INTO steps (run_id, step_id, seq, name, value, created_at)
                     SELECT ?1, ?2, COALESCE(MAX(seq), 0) + 1, ?3, ?4, ?5 FROM steps WHERE run_id = ?1
                     ON CONFLICT (run_id, step_id) DO NOTHING",
                    params![step.run_id, step.step_id, step.name, value, step.created_at],
                )?;
                if inserted == 0 {
                    tx.execute(
                        "INSERT INTO step_duplicates (run_id, step_id, value, received_at) VALUES (?1, ?2, ?3, ?4)",
                        params![step.run_id, step.step_id, value, step.created_at],
                    )?;
                    duplicate_steps.push(step.step_id.clone());
                }
            }
            if commit.clear_items {
                tx.execute("DELETE FROM queue WHERE run_id = ?1", params![commit.run_id])?;
                tx.execute("DELETE FROM pauses WHERE run_id = ?1", params![commit.run_id])?;
                tx.execute("DELETE FROM run_guards WHERE run_id = ?1 AND release_on_end = 1", params![commit.run_id])?;
            }
            for pause in &commit.new_pauses {
                insert_pause(&tx, pause)?;
            }
            if let Some(item) = &commit.done_item {
                tx.execute("DELETE FROM queue WHERE id = ?1", params![item])?;
            }
            for item in &commit.enqueue {
                enqueue_item(&tx, item)?;
            }
            ingest_in(&tx, &commit.emit)?;
            tx.commit()?;
            Ok(CommitOutcome::Applied { duplicate_steps })
        })
        .await
    }

    async fn get_pause(&self, id: &str) -> Result<Option<PauseRecord>> {
        let id = id.to_string();
        self.with_conn(move |conn| {
            conn.query_row(&format!("SELECT {PAUSE_COLUMNS} FROM pauses WHERE id = ?1"), params![id], pause_from_row)
                .optional()?
                .transpose()
        })
        .await
    }

    async fn pauses_for_event(&self, event_name: &str) -> Result<Vec<PauseRecord>> {
        let name = event_name.to_string();
        self.with_conn(move |conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {PAUSE_COLUMNS} FROM pauses WHERE event_name = ?1 ORDER BY created_at"))?;
            let rows = stmt.query_map(params![name], pause_from_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
        .await
    }

    async fn pauses_for_run(&self, run_id: &str) -> Result<Vec<PauseRecord>> {
        let run_id = run_id.to_string();
        self.with_conn(move |conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {PAUSE_COLUMNS} FROM pauses WHERE run_id = ?1 ORDER BY created_at"))?;
            let rows = stmt.query_map(params![run_id], pause_from_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
        .await
    }

    async fn guard_holder(&self, key: &str, now: i64) -> Result<Option<String>> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            let v = conn
                .query_row("SELECT run_id FROM run_guards WHERE key = ?1 AND expires_at > ?2", params![key, now], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(v)
        })
        .await
    }

    async fn release_all_leases(&self) -> Result<u64> {
        self.with_conn(|conn| {
            let n = conn.execute(
                "UPDATE queue SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL",
                [],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn park_app(&self, app_id: &str, reason: &str, now: i64) -> Result<u64> {
        let (app_id, reason) = (app_id.to_string(), reason.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE runs SET status = ?2, parked_reason = ?3, updated_at = ?4, rev = rev + 1
                 WHERE app_id = ?1 AND status IN (?5, ?6)",
                params![
                    app_id,
                    RunStatus::PausedUnreachable.as_str(),
                    reason,
                    now,
                    RunStatus::Queued.as_str(),
                    RunStatus::Running.as_str()
                ],
            )?;
            tx.execute(
                "UPDATE queue SET parked = 1, lease_owner = NULL, lease_expires_at = NULL
                 WHERE kind = 'call' AND run_id IN (SELECT id FROM runs WHERE app_id = ?1 AND status = ?2)",
                params![app_id, RunStatus::PausedUnreachable.as_str()],
            )?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn unpark_app(&self, app_id: &str, now: i64) -> Result<u64> {
        let app_id = app_id.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "UPDATE queue SET parked = 0, available_at = ?2, unreachable_count = 0, unreachable_since = NULL
                 WHERE parked = 1 AND run_id IN (SELECT id FROM runs WHERE app_id = ?1)",
                params![app_id, now],
            )?;
            let n = tx.execute(
                "UPDATE runs SET status = ?2, parked_reason = NULL, updated_at = ?3, rev = rev + 1
                 WHERE app_id = ?1 AND status = ?4",
                params![app_id, RunStatus::Running.as_str(), now, RunStatus::PausedUnreachable.as_str()],
            )?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }
}

fn get_run_in(conn: &Connection, id: &str) -> Result<Option<RunRecord>> {
    conn.query_row(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"), params![id], run_from_row)
        .optional()?
        .transpose()
}

#[cfg(test)]
mod tests;
