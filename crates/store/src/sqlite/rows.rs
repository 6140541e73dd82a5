//! Column lists, row mappers and the inserts shared by several queries.

use rusqlite::{params, Row, Transaction};
use sluice_protocol::run::RunStatus;

use crate::error::{Result, StoreError};
use crate::records::*;

pub const APP_COLUMNS: &str = "id, url, normalized_url, framework, sdk, deploy_id, app_version, config_hash, status, last_error, synced_at, updated_at";
pub const EVENT_COLUMNS: &str = "id, body, received_at, source_run_id";
pub const RUN_COLUMNS: &str = "id, function_id, app_id, event_id, event_ids, status, state, output, error, parked_reason, created_at, started_at, ended_at, updated_at, rev";
pub const ITEM_COLUMNS: &str = "id, run_id, kind, step_id, attempt, available_at, lease_owner, lease_expires_at, unreachable_count, unreachable_since, parked, created_at";

pub const PAUSE_COLUMNS: &str =
    "id, run_id, kind, step_id, event_name, expression, match_key, trigger_event, expires_at, created_at";

pub fn pause_from_row(r: &Row<'_>) -> rusqlite::Result<Result<PauseRecord>> {
    let kind: String = r.get(2)?;
    let trigger: String = r.get(7)?;
    let Some(kind) = PauseKind::parse(&kind) else {
        return Ok(Err(StoreError::Corrupt(format!("unknown pause kind {kind:?}"))));
    };
    let trigger_event = match serde_json::from_str(&trigger) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e.into())),
    };
    Ok(Ok(PauseRecord {
        id: r.get(0)?,
        run_id: r.get(1)?,
        kind,
        step_id: r.get(3)?,
        event_name: r.get(4)?,
        expression: r.get(5)?,
        match_key: r.get(6)?,
        trigger_event,
        expires_at: r.get(8)?,
        created_at: r.get(9)?,
    }))
}

pub fn insert_pause(tx: &Transaction<'_>, p: &PauseRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO pauses (id, run_id, kind, step_id, event_name, expression, match_key, trigger_event, expires_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING",
        params![
            p.id,
            p.run_id,
            p.kind.as_str(),
            p.step_id,
            p.event_name,
            p.expression,
            p.match_key,
            p.trigger_event.to_string(),
            p.expires_at,
            p.created_at
        ],
    )?;
    Ok(())
}

pub fn app_from_row(r: &Row<'_>) -> rusqlite::Result<AppRecord> {
    Ok(AppRecord {
        id: r.get(0)?,
        url: r.get(1)?,
        normalized_url: r.get(2)?,
        framework: r.get(3)?,
        sdk: r.get(4)?,
        deploy_id: r.get(5)?,
        app_version: r.get(6)?,
        config_hash: r.get(7)?,
        status: AppStatus::parse(&r.get::<_, String>(8)?),
        last_error: r.get(9)?,
        synced_at: r.get(10)?,
        updated_at: r.get(11)?,
    })
}

pub fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Result<EventRecord>> {
    let id: String = r.get(0)?;
    let body: String = r.get(1)?;
    let received_at: i64 = r.get(2)?;
    let source_run_id: Option<String> = r.get(3)?;
    Ok(serde_json::from_str(&body).map_err(StoreError::from).map(|event| EventRecord {
        id,
        event,
        received_at,
        source_run_id,
    }))
}

fn parse_json_opt(s: Option<String>) -> Result<Option<serde_json::Value>> {
    s.map(|s| serde_json::from_str(&s).map_err(StoreError::from)).transpose()
}

pub fn run_from_row(r: &Row<'_>) -> rusqlite::Result<Result<RunRecord>> {
    let status: String = r.get(5)?;
    let event_ids: String = r.get(4)?;
    let state: String = r.get(6)?;
    let output: Option<String> = r.get(7)?;
    let error: Option<String> = r.get(8)?;
    let build = || -> Result<RunRecord> {
        Ok(RunRecord {
            id: r.get(0)?,
            function_id: r.get(1)?,
            app_id: r.get(2)?,
            event_id: r.get(3)?,
            event_ids: serde_json::from_str(&event_ids)?,
            status: RunStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown run status {status:?}")))?,
            state: serde_json::from_str(&state)?,
            output: parse_json_opt(output.clone())?,
            error: parse_json_opt(error.clone())?,
            parked_reason: r.get(9)?,
            created_at: r.get(10)?,
            started_at: r.get(11)?,
            ended_at: r.get(12)?,
            updated_at: r.get(13)?,
            rev: r.get(14)?,
        })
    };
    Ok(build())
}

pub fn item_from_row(r: &Row<'_>) -> rusqlite::Result<Result<QueueItem>> {
    let kind: String = r.get(2)?;
    let Some(kind) = ItemKind::parse(&kind) else {
        return Ok(Err(StoreError::Corrupt(format!("unknown queue item kind {kind:?}"))));
    };
    Ok(Ok(QueueItem {
        id: r.get(0)?,
        run_id: r.get(1)?,
        kind,
        step_id: r.get(3)?,
        attempt: r.get::<_, i64>(4)? as u32,
        available_at: r.get(5)?,
        lease_owner: r.get(6)?,
        lease_expires_at: r.get(7)?,
        unreachable_count: r.get::<_, i64>(8)? as u32,
        unreachable_since: r.get(9)?,
        parked: r.get::<_, i64>(10)? != 0,
        created_at: r.get(11)?,
    }))
}

pub fn insert_event(tx: &Transaction<'_>, e: &EventRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO events (id, name, body, ts, received_at, client_id, source_run_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            e.id,
            e.event.name,
            serde_json::to_string(&e.event)?,
            e.event.ts,
            e.received_at,
            if e.event.id.is_empty() { None } else { Some(&e.event.id) },
            e.source_run_id
        ],
    )?;
    Ok(())
}

pub fn insert_run(tx: &Transaction<'_>, run: &RunRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO runs (id, function_id, app_id, event_id, event_ids, status, state, output, error, parked_reason,
                           created_at, started_at, ended_at, updated_at, rev)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            run.id,
            run.function_id,
            run.app_id,
            run.event_id,
            serde_json::to_string(&run.event_ids)?,
            run.status.as_str(),
            serde_json::to_string(&run.state)?,
            run.output.as_ref().map(|v| v.to_string()),
            run.error.as_ref().map(|v| v.to_string()),
            run.parked_reason,
            run.created_at,
            run.started_at,
            run.ended_at,
            run.updated_at,
            run.rev
        ],
    )?;
    Ok(())
}

/// Insert a queue item; an item with the same id already queued (a step planned twice) wins.
pub fn enqueue_item(tx: &Transaction<'_>, item: &QueueItem) -> Result<()> {
    tx.execute(
        "INSERT INTO queue (id, run_id, kind, step_id, attempt, available_at, lease_owner, lease_expires_at,
                            unreachable_count, unreachable_since, parked, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (id) DO NOTHING",
        params![
            item.id,
            item.run_id,
            item.kind.as_str(),
            item.step_id,
            item.attempt as i64,
            item.available_at,
            item.lease_owner,
            item.lease_expires_at,
            item.unreachable_count as i64,
            item.unreachable_since,
            item.parked as i64,
            item.created_at
        ],
    )?;
    Ok(())
}
