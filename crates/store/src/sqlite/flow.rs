//! `FlowStore` on SQLite.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::rows::{enqueue_item, insert_pause, insert_run};
use super::SqliteStore;
use crate::error::Result;
use crate::flow::{FlowStore, PendingBatch, PendingDebounce, SlotLimit};
use crate::records::NewRun;

/// A run created by a flow-control decision (debounce, batch), with everything it starts with.
fn insert_new_run(tx: &rusqlite::Transaction<'_>, run: &NewRun) -> Result<()> {
    insert_run(tx, &run.run)?;
    enqueue_item(tx, &run.first_item)?;
    for extra in &run.extra_items {
        enqueue_item(tx, extra)?;
    }
    for pause in &run.pauses {
        insert_pause(tx, pause)?;
    }
    Ok(())
}

fn batch_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PendingBatch> {
    let ids: String = r.get(3)?;
    Ok(PendingBatch {
        key: r.get(0)?,
        id: r.get(1)?,
        function_id: r.get(2)?,
        event_ids: serde_json::from_str(&ids).unwrap_or_default(),
        max_size: r.get::<_, i64>(4)? as u32,
        fire_at: r.get(5)?,
    })
}

#[async_trait]
impl FlowStore for SqliteStore {
    async fn batch_push(
        &self,
        key: &str,
        function_id: &str,
        event_id: &str,
        max_size: u32,
        timeout_ms: i64,
        now: i64,
    ) -> Result<PendingBatch> {
        let (key, function_id, event_id) = (key.to_string(), function_id.to_string(), event_id.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let existing = tx
                .query_row(
                    "SELECT key, id, function_id, event_ids, max_size, fire_at FROM batches WHERE key = ?1",
                    params![key],
                    batch_from_row,
                )
                .optional()?;
            let mut batch = existing.unwrap_or(PendingBatch {
                key: key.clone(),
                id: format!("{key}\0{now}"),
                function_id: function_id.clone(),
                event_ids: vec![],
                max_size,
                fire_at: now + timeout_ms,
            });
            if !batch.event_ids.contains(&event_id) {
                batch.event_ids.push(event_id);
            }
            tx.execute(
                "INSERT INTO batches (key, id, function_id, event_ids, size, max_size, fire_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (key) DO UPDATE SET event_ids = excluded.event_ids, size = excluded.size",
                params![
                    batch.key,
                    batch.id,
                    batch.function_id,
                    serde_json::to_string(&batch.event_ids)?,
                    batch.event_ids.len() as i64,
                    batch.max_size as i64,
                    batch.fire_at
                ],
            )?;
            tx.commit()?;
            Ok(batch)
        })
        .await
    }

    async fn batch_due(&self, now: i64, limit: usize) -> Result<Vec<PendingBatch>> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT key, id, function_id, event_ids, max_size, fire_at FROM batches
                 WHERE fire_at <= ?1 OR size >= max_size ORDER BY fire_at LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, limit as i64], batch_from_row)?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn batch_fire(&self, key: &str, batch_id: &str, mut run: NewRun) -> Result<bool> {
        let (key, batch_id) = (key.to_string(), batch_id.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let row: Option<(String, i64, String, i64)> = tx
                .query_row(
                    "DELETE FROM batches WHERE key = ?1 AND id = ?2 RETURNING event_ids, max_size, function_id, fire_at",
                    params![key, batch_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((ids, max_size, function_id, fire_at)) = row else { return Ok(false) };
            let mut ids: Vec<String> = serde_json::from_str(&ids)?;
            // Events pushed after the batch filled up start the next batch.
            let rest = ids.split_off(ids.len().min(max_size.max(1) as usize));
            if !rest.is_empty() {
                tx.execute(
                    "INSERT INTO batches (key, id, function_id, event_ids, size, max_size, fire_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![key, format!("{batch_id}+"), function_id, serde_json::to_string(&rest)?, rest.len() as i64, max_size, fire_at],
                )?;
            }
            if let Some(first) = ids.first() {
                run.run.event_id = first.clone();
            }
            run.run.event_ids = ids;
            insert_new_run(&tx, &run)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn try_acquire_slots(&self, limits: &[SlotLimit], holder: &str, until: i64, now: i64) -> Result<bool> {
        let (limits, holder) = (limits.to_vec(), holder.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            // A slot outlives neither its lease nor its holder's lease.
            tx.execute(
                "DELETE FROM concurrency_slots WHERE expires_at <= ?1
                   OR holder NOT IN (SELECT id FROM queue WHERE lease_expires_at > ?1)",
                params![now],
            )?;
            for l in &limits {
                let held: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM concurrency_slots WHERE key = ?1 AND holder <> ?2",
                    params![l.key, holder],
                    |r| r.get(0),
                )?;
                if held >= l.limit as i64 {
                    return Ok(false);
                }
            }
            for l in &limits {
                tx.execute(
                    "INSERT INTO concurrency_slots (key, holder, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key, holder) DO UPDATE SET expires_at = excluded.expires_at",
                    params![l.key, holder, until],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn release_slots(&self, holder: &str) -> Result<()> {
        let holder = holder.to_string();
        self.with_conn(move |conn| {
            conn.execute("DELETE FROM concurrency_slots WHERE holder = ?1", params![holder])?;
            Ok(())
        })
        .await
    }

    async fn throttle_reserve(&self, key: &str, interval_ms: i64, tolerance_ms: i64, now: i64) -> Result<i64> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let tat: Option<i64> =
                tx.query_row("SELECT tat FROM throttle_state WHERE key = ?1", params![key], |r| r.get(0)).optional()?;
            let tat = tat.unwrap_or(now).max(now);
            let start = (tat - tolerance_ms).max(now);
            tx.execute(
                "INSERT INTO throttle_state (key, tat) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
                params![key, tat + interval_ms],
            )?;
            tx.commit()?;
            Ok(start)
        })
        .await
    }

    async fn debounce_push(
        &self,
        key: &str,
        function_id: &str,
        event_id: &str,
        period_ms: i64,
        timeout_ms: Option<i64>,
        now: i64,
    ) -> Result<i64> {
        let (key, function_id, event_id) = (key.to_string(), function_id.to_string(), event_id.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let first_at: i64 = tx
                .query_row("SELECT first_at FROM debounces WHERE key = ?1", params![key], |r| r.get(0))
                .optional()?
                .unwrap_or(now);
            let mut fire_at = now + period_ms;
            if let Some(t) = timeout_ms {
                fire_at = fire_at.min(first_at + t);
            }
            tx.execute(
                "INSERT INTO debounces (key, function_id, event_id, first_at, fire_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, fire_at = excluded.fire_at",
                params![key, function_id, event_id, first_at, fire_at],
            )?;
            tx.commit()?;
            Ok(fire_at)
        })
        .await
    }

    async fn debounce_due(&self, now: i64, limit: usize) -> Result<Vec<PendingDebounce>> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT key, function_id, event_id, first_at, fire_at FROM debounces WHERE fire_at <= ?1
                 ORDER BY fire_at LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, limit as i64], |r| {
                Ok(PendingDebounce {
                    key: r.get(0)?,
                    function_id: r.get(1)?,
                    event_id: r.get(2)?,
                    first_at: r.get(3)?,
                    fire_at: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn debounce_fire(&self, pending: &PendingDebounce, run: NewRun) -> Result<bool> {
        let p = pending.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let removed = tx.execute(
                "DELETE FROM debounces WHERE key = ?1 AND event_id = ?2 AND fire_at = ?3",
                params![p.key, p.event_id, p.fire_at],
            )?;
            if removed == 0 {
                return Ok(false);
            }
            insert_new_run(&tx, &run)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn debounce_next_due(&self) -> Result<Option<i64>> {
        self.with_conn(|conn| Ok(conn.query_row("SELECT MIN(fire_at) FROM debounces", [], |r| r.get(0))?)).await
    }
}
