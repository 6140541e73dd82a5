//! `FlowStore` on PostgreSQL: each operation locks the rows it reads (or the key's advisory lock),
//! so nodes racing on one key serialise.

use async_trait::async_trait;

// Keys hold NUL separators, which PostgreSQL text cannot: written through `pg_text`, read back
// through `from_pg_text`.
use super::{enqueue_item, execute, from_pg_text, insert_pause, insert_run, pg_text, query, query_opt, PostgresStore};
use crate::error::Result;
use crate::flow::{FlowStore, PendingBatch, PendingDebounce, SlotLimit};
use crate::records::NewRun;

/// A run created by a flow-control decision (debounce, batch), with everything it starts with.
async fn insert_new_run(tx: &deadpool_postgres::Transaction<'_>, run: &NewRun) -> Result<()> {
    insert_run(tx, &run.run).await?;
    enqueue_item(tx, &run.first_item).await?;
    for extra in &run.extra_items {
        enqueue_item(tx, extra).await?;
    }
    for pause in &run.pauses {
        insert_pause(tx, pause).await?;
    }
    Ok(())
}

fn batch_from_row(r: &tokio_postgres::Row) -> Result<PendingBatch> {
    let ids: String = r.try_get(3)?;
    Ok(PendingBatch {
        key: from_pg_text(r.try_get(0)?),
        id: from_pg_text(r.try_get(1)?),
        function_id: r.try_get(2)?,
        event_ids: serde_json::from_str(&ids)?,
        max_size: r.try_get::<_, i32>(4)? as u32,
        fire_at: r.try_get(5)?,
    })
}

#[async_trait]
impl FlowStore for PostgresStore {
    async fn batch_push(
        &self,
        key: &str,
        function_id: &str,
        event_id: &str,
        max_size: u32,
        timeout_ms: i64,
        now: i64,
    ) -> Result<PendingBatch> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stored_key = pg_text(key);
        let stored_key = stored_key.as_ref();
        execute(&tx, "SELECT pg_advisory_xact_lock(hashtext($1))", &[&stored_key]).await?;
        let existing = query_opt(
            &tx,
            "SELECT key, id, function_id, event_ids, max_size, fire_at FROM batches WHERE key = $1",
            &[&stored_key],
        )
        .await?
        .as_ref()
        .map(batch_from_row)
        .transpose()?;
        let mut batch = existing.unwrap_or(PendingBatch {
            key: key.to_string(),
            id: format!("{key}\0{now}"),
            function_id: function_id.to_string(),
            event_ids: vec![],
            max_size,
            fire_at: now + timeout_ms,
        });
        if !batch.event_ids.iter().any(|e| e == event_id) {
            batch.event_ids.push(event_id.to_string());
        }
        let ids = serde_json::to_string(&batch.event_ids)?;
        execute(
            &tx,
            "INSERT INTO batches (key, id, function_id, event_ids, size, max_size, fire_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (key) DO UPDATE SET event_ids = excluded.event_ids, size = excluded.size",
            &[&stored_key, &pg_text(&batch.id).as_ref(), &batch.function_id, &ids, &(batch.event_ids.len() as i32), &(batch.max_size as i32), &batch.fire_at],
        )
        .await?;
        tx.commit().await?;
        Ok(batch)
    }

    async fn batch_due(&self, now: i64, limit: usize) -> Result<Vec<PendingBatch>> {
        let client = self.client().await?;
        let limit = limit.min(10_000) as i64;
        query(
            &client,
            "SELECT key, id, function_id, event_ids, max_size, fire_at FROM batches
             WHERE fire_at <= $1 OR size >= max_size ORDER BY fire_at LIMIT $2",
            &[&now, &limit],
        )
        .await?
        .iter()
        .map(batch_from_row)
        .collect()
    }

    async fn batch_fire(&self, key: &str, batch_id: &str, mut run: NewRun) -> Result<bool> {
        let (key, batch_id) = (pg_text(key), pg_text(batch_id));
        let (key, batch_id) = (key.as_ref(), batch_id.as_ref());
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The key's lock, as batch_push takes it: else a push that read the batch before this
        // delete re-inserts it (with the events fired here) when it writes.
        execute(&tx, "SELECT pg_advisory_xact_lock(hashtext($1))", &[&key]).await?;
        let row = query_opt(
            &tx,
            "DELETE FROM batches WHERE key = $1 AND id = $2 RETURNING event_ids, max_size, function_id, fire_at",
            &[&key, &batch_id],
        )
        .await?;
        let Some(row) = row else { return Ok(false) };
        let (ids, max_size, function_id, fire_at): (String, i32, String, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
        let mut ids: Vec<String> = serde_json::from_str(&ids)?;
        // Events pushed after the batch filled up start the next batch.
        let rest = ids.split_off(ids.len().min(max_size.max(1) as usize));
        if !rest.is_empty() {
            let rest_json = serde_json::to_string(&rest)?;
            execute(
                &tx,
                "INSERT INTO batches (key, id, function_id, event_ids, size, max_size, fire_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&key, &format!("{batch_id}+"), &function_id, &rest_json, &(rest.len() as i32), &max_size, &fire_at],
            )
            .await?;
        }
        if let Some(first) = ids.first() {
            run.run.event_id = first.clone();
        }
        run.run.event_ids = ids;
        insert_new_run(&tx, &run).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn try_acquire_slots(&self, limits: &[SlotLimit], holder: &str, until: i64, now: i64) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for l in limits {
            // One writer per concurrency key at a time.
            execute(&tx, "SELECT pg_advisory_xact_lock(hashtext($1))", &[&pg_text(&l.key).as_ref()]).await?;
        }
        execute(
            &tx,
            "DELETE FROM concurrency_slots WHERE expires_at <= $1
               OR holder NOT IN (SELECT id FROM queue WHERE lease_expires_at > $1)",
            &[&now],
        )
        .await?;
        for l in limits {
            let held: i64 = query_opt(
                &tx,
                "SELECT COUNT(*) FROM concurrency_slots WHERE key = $1 AND holder <> $2",
                &[&pg_text(&l.key).as_ref(), &holder],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
            if held >= l.limit as i64 {
                return Ok(false);
            }
        }
        for l in limits {
            execute(
                &tx,
                "INSERT INTO concurrency_slots (key, holder, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (key, holder) DO UPDATE SET expires_at = excluded.expires_at",
                &[&pg_text(&l.key).as_ref(), &holder, &until],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn release_slots(&self, holder: &str) -> Result<()> {
        let client = self.client().await?;
        execute(&client, "DELETE FROM concurrency_slots WHERE holder = $1", &[&holder]).await?;
        Ok(())
    }

    async fn throttle_reserve(&self, key: &str, interval_ms: i64, tolerance_ms: i64, now: i64) -> Result<i64> {
        let key = pg_text(key);
        let key = key.as_ref();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        execute(&tx, "SELECT pg_advisory_xact_lock(hashtext($1))", &[&key]).await?;
        let tat: Option<i64> = query_opt(&tx, "SELECT tat FROM throttle_state WHERE key = $1", &[&key])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let tat = tat.unwrap_or(now).max(now);
        let start = (tat - tolerance_ms).max(now);
        execute(
            &tx,
            "INSERT INTO throttle_state (key, tat) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
            &[&key, &(tat + interval_ms)],
        )
        .await?;
        tx.commit().await?;
        Ok(start)
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
        let key = pg_text(key);
        let key = key.as_ref();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        execute(&tx, "SELECT pg_advisory_xact_lock(hashtext($1))", &[&key]).await?;
        let first_at: i64 = query_opt(&tx, "SELECT first_at FROM debounces WHERE key = $1", &[&key])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(now);
        let mut fire_at = now + period_ms;
        if let Some(t) = timeout_ms {
            fire_at = fire_at.min(first_at + t);
        }
        execute(
            &tx,
            "INSERT INTO debounces (key, function_id, event_id, first_at, fire_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, fire_at = excluded.fire_at",
            &[&key, &function_id, &event_id, &first_at, &fire_at],
        )
        .await?;
        tx.commit().await?;
        Ok(fire_at)
    }

    async fn debounce_due(&self, now: i64, limit: usize) -> Result<Vec<PendingDebounce>> {
        let client = self.client().await?;
        let limit = limit.min(10_000) as i64;
        let rows = query(
            &client,
            "SELECT key, function_id, event_id, first_at, fire_at FROM debounces WHERE fire_at <= $1
             ORDER BY fire_at LIMIT $2",
            &[&now, &limit],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingDebounce {
                    key: from_pg_text(r.try_get(0)?),
                    function_id: r.try_get(1)?,
                    event_id: r.try_get(2)?,
                    first_at: r.try_get(3)?,
                    fire_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn debounce_fire(&self, pending: &PendingDebounce, run: NewRun) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let removed = execute(
            &tx,
            "DELETE FROM debounces WHERE key = $1 AND event_id = $2 AND fire_at = $3",
            &[&pg_text(&pending.key).as_ref(), &pending.event_id, &pending.fire_at],
        )
        .await?;
        if removed == 0 {
            return Ok(false);
        }
        insert_new_run(&tx, &run).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn debounce_next_due(&self) -> Result<Option<i64>> {
        let client = self.client().await?;
        Ok(query_opt(&client, "SELECT MIN(fire_at) FROM debounces", &[])
            .await?
            .and_then(|r| r.try_get(0).ok())
            .flatten())
    }
}
