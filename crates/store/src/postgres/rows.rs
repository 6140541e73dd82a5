//! Row mappers (column order as in `queries`) and the conversions between records and columns.

use serde_json::Value;
use sluice_protocol::run::RunStatus;
use tokio_postgres::Row;

use crate::error::{Result, StoreError};
use crate::records::*;

pub fn app_from_row(r: &Row) -> Result<AppRecord> {
    Ok(AppRecord {
        id: r.try_get(0)?,
        url: r.try_get(1)?,
        normalized_url: r.try_get(2)?,
        framework: r.try_get(3)?,
        sdk: r.try_get(4)?,
        deploy_id: r.try_get(5)?,
        app_version: r.try_get(6)?,
        config_hash: r.try_get(7)?,
        status: AppStatus::parse(r.try_get(8)?),
        last_error: r.try_get(9)?,
        synced_at: r.try_get(10)?,
        updated_at: r.try_get(11)?,
    })
}

pub fn function_from_row(r: &Row) -> Result<FunctionRecord> {
    Ok(FunctionRecord {
        id: r.try_get(0)?,
        app_id: r.try_get(1)?,
        name: r.try_get(2)?,
        config: serde_json::from_str(r.try_get(3)?)?,
        updated_at: r.try_get(4)?,
    })
}

pub fn event_from_row(r: &Row) -> Result<EventRecord> {
    Ok(EventRecord {
        id: r.try_get(0)?,
        event: serde_json::from_str(r.try_get(1)?)?,
        received_at: r.try_get(2)?,
        source_run_id: r.try_get(3)?,
    })
}

pub fn run_from_row(r: &Row) -> Result<RunRecord> {
    let status: &str = r.try_get(5)?;
    Ok(RunRecord {
        id: r.try_get(0)?,
        function_id: r.try_get(1)?,
        app_id: r.try_get(2)?,
        event_id: r.try_get(3)?,
        event_ids: serde_json::from_str(r.try_get(4)?)?,
        status: RunStatus::parse(status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown run status {status:?}")))?,
        state: serde_json::from_str(r.try_get(6)?)?,
        output: json_opt(r.try_get(7)?)?,
        error: json_opt(r.try_get(8)?)?,
        parked_reason: r.try_get(9)?,
        created_at: r.try_get(10)?,
        started_at: r.try_get(11)?,
        ended_at: r.try_get(12)?,
        updated_at: r.try_get(13)?,
        rev: r.try_get(14)?,
    })
}

pub fn step_from_row(r: &Row) -> Result<StepRecord> {
    Ok(StepRecord {
        run_id: r.try_get(0)?,
        step_id: r.try_get(1)?,
        seq: r.try_get(2)?,
        name: r.try_get(3)?,
        value: serde_json::from_str(r.try_get(4)?)?,
        created_at: r.try_get(5)?,
    })
}

pub fn item_from_row(r: &Row) -> Result<QueueItem> {
    let kind: &str = r.try_get(2)?;
    let kind = ItemKind::parse(kind).ok_or_else(|| StoreError::Corrupt(format!("unknown queue item kind {kind:?}")))?;
    Ok(QueueItem {
        id: r.try_get(0)?,
        run_id: r.try_get(1)?,
        kind,
        step_id: r.try_get(3)?,
        attempt: from_integer(r.try_get(4)?, "attempt")?,
        available_at: r.try_get(5)?,
        lease_owner: r.try_get(6)?,
        lease_expires_at: r.try_get(7)?,
        unreachable_count: from_integer(r.try_get(8)?, "unreachable_count")?,
        unreachable_since: r.try_get(9)?,
        parked: r.try_get::<_, i32>(10)? != 0,
        created_at: r.try_get(11)?,
    })
}

pub fn pause_from_row(r: &Row) -> Result<PauseRecord> {
    let kind: &str = r.try_get(2)?;
    let kind = PauseKind::parse(kind).ok_or_else(|| StoreError::Corrupt(format!("unknown pause kind {kind:?}")))?;
    Ok(PauseRecord {
        id: r.try_get(0)?,
        run_id: r.try_get(1)?,
        kind,
        step_id: r.try_get(3)?,
        event_name: super::from_pg_text(r.try_get(4)?),
        expression: r.try_get(5)?,
        match_key: r.try_get(6)?,
        trigger_event: serde_json::from_str(r.try_get(7)?)?,
        expires_at: r.try_get(8)?,
        created_at: r.try_get(9)?,
    })
}

pub fn rows<T>(rows: &[Row], map: fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(map).collect()
}

fn json_opt(s: Option<&str>) -> Result<Option<Value>> {
    s.map(|s| serde_json::from_str(s).map_err(StoreError::from)).transpose()
}

/// JSON text of an optional value, as stored in `runs.output` / `runs.error`.
pub fn json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(Value::to_string)
}

/// `INTEGER` columns are 32-bit in PostgreSQL; the counters they hold never get near the limit,
/// but a value past it is refused rather than wrapped.
pub fn to_integer(v: u32, column: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| StoreError::Database(format!("{column} {v} does not fit an INTEGER column")))
}

fn from_integer(v: i32, column: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {column} {v}")))
}
