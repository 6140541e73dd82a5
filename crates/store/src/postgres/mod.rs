//! PostgreSQL implementation, for several sluice nodes sharing one database.
//!
//! ```text
//!   Store method ──▶ deadpool pool (pool_size connections, wait timeout)
//!                      └─▶ tokio-postgres connection, NoTls
//!                            session: statement_timeout, idle_in_transaction_session_timeout,
//!                                     search_path = PgOptions::schema (when set)
//! ```
//! The semantics are SqliteStore's, method for method (the conformance suite runs against both).
//! Where SQLite relies on being the only writer, this store relies on row locks instead:
//! `claim_due` leases with `FOR UPDATE SKIP LOCKED`, `commit` compare-and-sets on `runs.rev`
//! (a concurrent commit waits for the row, then sees the bumped `rev` and reports a conflict),
//! and ingest claims seeded ids and client ids with `ON CONFLICT`, so two nodes ingesting the
//! same event store it once. Every change is one transaction at READ COMMITTED with
//! `synchronous_commit` left at the server's default, so a commit that returned is durable.

mod cluster;
mod deployments;
mod diagnostics;
mod flow;
mod queries;
mod rows;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use sluice_protocol::run::RunStatus;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use crate::error::{Result, StoreError};
use crate::records::*;
use crate::sqlite::match_pauses_item;
use crate::Store;
use rows::*;

/// Versioned migrations, applied in order once each.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_pauses_and_guards.sql")),
    (3, include_str!("../../migrations/postgres/0003_nodes.sql")),
    (4, include_str!("../../migrations/postgres/0004_doctor.sql")),
    (5, include_str!("../../migrations/postgres/0005_deployments.sql")),
    (6, include_str!("../../migrations/postgres/0006_flow_control.sql")),
    (7, include_str!("../../migrations/postgres/0007_batches.sql")),
    (8, include_str!("../../migrations/postgres/0008_app_routing.sql")),
];

/// A transaction left open this long (a stuck node) is ended by the server, releasing its locks.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a call waits for a free pooled connection.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections kept open at most.
    pub pool_size: usize,
    /// Limit for opening one connection (TCP connect and start-up).
    pub connect_timeout: Duration,
    /// Longest any single statement may run before the server cancels it.
    pub statement_timeout: Duration,
    /// Keep sluice's tables in this schema (created when missing) instead of the connection's
    /// default `search_path`. Lower-case letters, digits and `_`, starting with a letter or `_`.
    pub schema: Option<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            schema: None,
        }
    }
}

#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// What every pooled connection is opened with; the wake-up listener opens its own with it.
    config: std::sync::Arc<tokio_postgres::Config>,
}

impl PostgresStore {
    /// Open a pool on `url` (`postgres://user:pass@host:port/db` or `host=… dbname=…`), check the
    /// database answers and bring its schema up to date.
    pub async fn connect(url: &str, options: PgOptions) -> Result<PostgresStore> {
        let open_error = |reason: String| StoreError::Open { path: redact_url(url), reason };
        if let Some(schema) = &options.schema {
            check_schema_name(schema).map_err(open_error)?;
        }
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| open_error(describe(&e)))?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        // Start-up options apply to every connection the pool opens, before its first statement.
        let mut session = format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            options.statement_timeout.as_millis().max(1),
            IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
        );
        if let Some(schema) = &options.schema {
            session.push_str(&format!(" -c search_path={schema}"));
        }
        let session = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {session}"),
            _ => session,
        };
        config.options(session);

        let listen_config = std::sync::Arc::new(config.clone());
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| open_error(e.to_string()))?;
        let mut client = pool.get().await.map_err(|e| open_error(describe_pool(&e)))?;
        migrate(&mut client, options.schema.as_deref()).await.map_err(|e| open_error(e.to_string()))?;
        drop(client);
        Ok(PostgresStore { pool, config: listen_config })
    }

    async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|e| StoreError::Database(describe_pool(&e)))
    }
}

async fn migrate(client: &mut deadpool_postgres::Client, schema: Option<&str>) -> Result<()> {
    let tx = client.transaction().await?;
    tx.execute(queries::migrate::LOCK, &[&schema]).await?;
    if let Some(schema) = schema {
        // Created only when missing: CREATE SCHEMA IF NOT EXISTS still needs CREATE on the database.
        if tx.query_opt(queries::migrate::SCHEMA_EXISTS, &[&schema]).await?.is_none() {
            // The name was checked to be a plain lower-case identifier.
            tx.batch_execute(&format!("CREATE SCHEMA \"{schema}\"")).await?;
        }
    }
    tx.batch_execute(queries::migrate::CREATE_TABLE).await?;
    let applied: Vec<i64> = tx
        .query(queries::migrate::APPLIED, &[])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    for (version, sql) in MIGRATIONS {
        if !applied.contains(version) {
            tx.batch_execute(sql).await?;
            tx.execute(queries::migrate::RECORD, &[version]).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Prepared once per connection and kept in its statement cache.
async fn execute<C: GenericClient>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

async fn query<C: GenericClient>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<tokio_postgres::Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

async fn ingest_in<C: GenericClient>(tx: &C, items: &[IngestItem]) -> Result<Vec<IngestOutcome>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let now = item.record.received_at;
        let dedup_key = item.dedup_key.as_deref().map(pg_text);
        if let Some(key) = &dedup_key {
            if let Some(row) = query_opt(tx, queries::events::DEDUP_LIVE, &[&key.as_ref(), &now]).await? {
                out.push(duplicate(row.try_get(0)?));
                continue;
            }
        }
        // A seeded id seen before is an SDK retrying the same send.
        if !insert_event(tx, &item.record).await? {
            out.push(duplicate(item.record.id.clone()));
            continue;
        }
        if let Some(key) = &dedup_key {
            let key = key.as_ref();
            let claimed =
                query_opt(tx, queries::events::DEDUP_CLAIM, &[&key, &item.record.id, &item.dedup_until, &now]).await?;
            if claimed.is_none() {
                // Another node stored an event with this client id since DEDUP_LIVE: the earlier
                // one wins, exactly as if it had been seen above.
                execute(tx, queries::events::DELETE, &[&item.record.id]).await?;
                let holder = query_opt(tx, queries::events::DEDUP_HOLDER, &[&key]).await?;
                let event_id = match holder {
                    Some(row) => row.try_get(0)?,
                    None => return Err(StoreError::Database(format!("client id {key:?} vanished while claimed"))),
                };
                out.push(duplicate(event_id));
                continue;
            }
        }
        if query_opt(tx, queries::pauses::ANY_FOR_EVENT, &[&pg_text(&item.record.event.name).as_ref()]).await?.is_some()
        {
            enqueue_item(tx, &match_pauses_item(&item.record.id, now)).await?;
        }
        let mut run_ids = Vec::new();
        let mut skipped_runs = Vec::new();
        for new_run in &item.runs {
            if !acquire_guards(tx, &new_run.run.id, &new_run.guards, now).await? {
                skipped_runs.push(new_run.run.id.clone());
                continue;
            }
            insert_run(tx, &new_run.run).await?;
            enqueue_item(tx, &new_run.first_item).await?;
            for extra in &new_run.extra_items {
                enqueue_item(tx, extra).await?;
            }
            for pause in &new_run.pauses {
                insert_pause(tx, pause).await?;
            }
            run_ids.push(new_run.run.id.clone());
        }
        out.push(IngestOutcome { event_id: item.record.id.clone(), duplicate: false, run_ids, skipped_runs });
    }
    Ok(out)
}

/// PostgreSQL text cannot hold NUL ("invalid byte sequence for encoding UTF8: 0x00"), which
/// sluice's keys use as a separator (`name\0id`, `idem\0fn\0key`, …) and event names or ids may
/// contain. Such text is stored with U+0001 as an escape character: NUL as U+0001 '0' and U+0001
/// as U+0001 '1'. Text with neither is stored as it is. Write keys through this and read them back
/// through [`from_pg_text`]; a key read from the table may be passed back unchanged.
pub(crate) fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\0', '\u{1}']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '\0' => out.push_str("\u{1}0"),
            '\u{1}' => out.push_str("\u{1}1"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The inverse of [`pg_text`].
pub(crate) fn from_pg_text(s: String) -> String {
    if !s.contains('\u{1}') {
        return s;
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\u{1}') {
            (_, true) => match chars.next() {
                Some('0') => out.push('\0'),
                Some('1') => out.push('\u{1}'),
                Some(other) => {
                    out.push('\u{1}');
                    out.push(other);
                }
                None => out.push('\u{1}'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// A `LIMIT` parameter: PostgreSQL refuses a negative one, which `usize::MAX as i64` would be.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn duplicate(event_id: String) -> IngestOutcome {
    IngestOutcome { event_id, duplicate: true, run_ids: vec![], skipped_runs: vec![] }
}

/// Take one free key of every guard for a new run, or none at all. SQLite reads then writes;
/// here each key is taken with a conditional upsert, so two nodes admitting runs at once cannot
/// both take it, and a savepoint undoes the keys taken when a later guard has none free.
async fn acquire_guards<C: GenericClient>(tx: &C, run_id: &str, guards: &[RunGuard], now: i64) -> Result<bool> {
    let undoable = guards.len() > 1;
    if undoable {
        tx.batch_execute(queries::guards::SAVEPOINT).await?;
    }
    for g in guards {
        let mut taken = false;
        for key in &g.keys {
            let release_on_end = i32::from(g.release_on_end);
            let key = pg_text(key);
            let key = key.as_ref();
            let params: [&(dyn ToSql + Sync); 5] = [&key, &run_id, &g.expires_at, &release_on_end, &now];
            if query_opt(tx, queries::guards::CLAIM, &params).await?.is_some() {
                taken = true;
                break;
            }
        }
        if !taken {
            if undoable {
                tx.batch_execute(queries::guards::ROLLBACK_TO_SAVEPOINT).await?;
                tx.batch_execute(queries::guards::RELEASE_SAVEPOINT).await?;
            }
            return Ok(false);
        }
    }
    if undoable {
        tx.batch_execute(queries::guards::RELEASE_SAVEPOINT).await?;
    }
    Ok(true)
}

async fn insert_pause<C: GenericClient>(tx: &C, p: &PauseRecord) -> Result<()> {
    execute(
        tx,
        queries::pauses::INSERT,
        &[
            &p.id,
            &p.run_id,
            &p.kind.as_str(),
            &p.step_id,
            &pg_text(&p.event_name).as_ref(),
            &p.expression,
            &p.match_key,
            &p.trigger_event.to_string(),
            &p.expires_at,
            &p.created_at,
        ],
    )
    .await?;
    Ok(())
}

/// Returns false when an event with this id is already stored.
async fn insert_event<C: GenericClient>(tx: &C, e: &EventRecord) -> Result<bool> {
    let client_id = if e.event.id.is_empty() { None } else { Some(pg_text(&e.event.id)) };
    let client_id = client_id.as_deref();
    let inserted = execute(
        tx,
        queries::events::INSERT,
        &[
            &e.id,
            &pg_text(&e.event.name).as_ref(),
            &serde_json::to_string(&e.event)?,
            &e.event.ts,
            &e.received_at,
            &client_id,
            &e.source_run_id,
        ],
    )
    .await?;
    Ok(inserted == 1)
}

async fn insert_run<C: GenericClient>(tx: &C, run: &RunRecord) -> Result<()> {
    execute(
        tx,
        queries::runs::INSERT,
        &[
            &run.id,
            &run.function_id,
            &run.app_id,
            &run.event_id,
            &serde_json::to_string(&run.event_ids)?,
            &run.status.as_str(),
            &serde_json::to_string(&run.state)?,
            &json_text(&run.output),
            &json_text(&run.error),
            &run.parked_reason,
            &run.created_at,
            &run.started_at,
            &run.ended_at,
            &run.updated_at,
            &run.rev,
        ],
    )
    .await?;
    Ok(())
}

async fn enqueue_item<C: GenericClient>(tx: &C, item: &QueueItem) -> Result<()> {
    execute(
        tx,
        queries::queue::ENQUEUE,
        &[
            &item.id,
            &item.run_id,
            &item.kind.as_str(),
            &item.step_id,
            &to_integer(item.attempt, "attempt")?,
            &item.available_at,
            &item.lease_owner,
            &item.lease_expires_at,
            &to_integer(item.unreachable_count, "unreachable_count")?,
            &item.unreachable_since,
            &i32::from(item.parked),
            &item.created_at,
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn upsert_app(&self, app: AppRecord, functions: Vec<FunctionRecord>) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let previous: Option<String> =
            query_opt(&tx, queries::apps::CONFIG_HASH, &[&app.id]).await?.map(|r| r.try_get(0)).transpose()?;
        execute(
            &tx,
            queries::apps::UPSERT,
            &[
                &app.id,
                &app.url,
                &app.normalized_url,
                &app.framework,
                &app.sdk,
                &app.deploy_id,
                &app.app_version,
                &app.config_hash,
                &app.status.as_str(),
                &app.last_error,
                &app.synced_at,
                &app.updated_at,
            ],
        )
        .await?;
        execute(&tx, queries::apps::DELETE_FUNCTIONS, &[&app.id]).await?;
        for f in &functions {
            execute(
                &tx,
                queries::apps::UPSERT_FUNCTION,
                &[&f.id, &f.app_id, &f.name, &serde_json::to_string(&f.config)?, &f.updated_at],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(previous.as_deref() != Some(app.config_hash.as_str()))
    }

    async fn set_app_status(&self, app_id: &str, status: AppStatus, error: Option<String>, now: i64) -> Result<()> {
        let client = self.client().await?;
        execute(&client, queries::apps::SET_STATUS, &[&app_id, &status.as_str(), &error, &now]).await?;
        Ok(())
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>> {
        let client = self.client().await?;
        rows(&query(&client, queries::apps::LIST, &[]).await?, app_from_row)
    }

    async fn list_functions(&self) -> Result<Vec<FunctionRecord>> {
        let client = self.client().await?;
        rows(&query(&client, queries::apps::LIST_FUNCTIONS, &[]).await?, function_from_row)
    }

    async fn ingest(&self, items: Vec<IngestItem>) -> Result<Vec<IngestOutcome>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let out = ingest_in(&tx, &items).await?;
        if out.iter().any(|o| !o.duplicate) {
            cluster::notify_work(&tx).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn get_event(&self, id: &str) -> Result<Option<EventRecord>> {
        let client = self.client().await?;
        query_opt(&client, queries::events::GET, &[&id]).await?.as_ref().map(event_from_row).transpose()
    }

    async fn get_events(&self, ids: &[String]) -> Result<Vec<EventRecord>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let client = self.client().await?;
        let found: HashMap<String, EventRecord> = query(&client, queries::events::GET_MANY, &[&ids])
            .await?
            .iter()
            .map(|r| event_from_row(r).map(|e| (e.id.clone(), e)))
            .collect::<Result<_>>()?;
        // In the order asked for, unknown ids left out, as SQLite answers.
        Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    async fn list_events(&self, name: Option<&str>, limit: usize) -> Result<Vec<EventRecord>> {
        let client = self.client().await?;
        let name = name.map(pg_text);
        let name = name.as_deref();
        rows(&query(&client, queries::events::LIST, &[&name, &sql_limit(limit)]).await?, event_from_row)
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let client = self.client().await?;
        query_opt(&client, queries::runs::GET, &[&id]).await?.as_ref().map(run_from_row).transpose()
    }

    async fn runs_for_event(&self, event_id: &str) -> Result<Vec<RunRecord>> {
        let client = self.client().await?;
        rows(&query(&client, queries::runs::FOR_EVENT, &[&event_id]).await?, run_from_row)
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>> {
        let client = self.client().await?;
        let limit = sql_limit(if filter.limit == 0 { 100 } else { filter.limit });
        let status = filter.status.map(|s| s.as_str());
        rows(
            &query(&client, queries::runs::LIST, &[&status, &filter.function_id, &filter.app_id, &limit]).await?,
            run_from_row,
        )
    }

    async fn get_steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        let client = self.client().await?;
        rows(&query(&client, queries::steps::FOR_RUN, &[&run_id]).await?, step_from_row)
    }

    async fn items_for_run(&self, run_id: &str) -> Result<Vec<QueueItem>> {
        let client = self.client().await?;
        rows(&query(&client, queries::queue::FOR_RUN, &[&run_id]).await?, item_from_row)
    }

    async fn claim_due(&self, now: i64, owner: &str, lease_until: i64, limit: usize) -> Result<Vec<QueueItem>> {
        let client = self.client().await?;
        let mut items = rows(
            &query(&client, queries::queue::CLAIM_DUE, &[&owner, &lease_until, &now, &sql_limit(limit)]).await?,
            item_from_row,
        )?;
        // UPDATE … RETURNING gives rows in no particular order.
        items.sort_by_key(|i| i.available_at);
        Ok(items)
    }

    async fn next_due_at(&self) -> Result<Option<i64>> {
        let client = self.client().await?;
        let rows = query(&client, queries::queue::NEXT_DUE_AT, &[]).await?;
        Ok(rows.first().map(|r| r.try_get(0)).transpose()?.flatten())
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(pause) = &commit.consume_pause {
            if execute(&tx, queries::pauses::CONSUME, &[pause]).await? == 0 {
                tx.rollback().await?;
                return Ok(CommitOutcome::Conflict);
            }
        }
        if let Some(run) = &commit.run {
            let changed = execute(
                &tx,
                queries::runs::UPDATE_IF_REV,
                &[
                    &run.id,
                    &commit.expected_rev,
                    &run.status.as_str(),
                    &serde_json::to_string(&run.state)?,
                    &json_text(&run.output),
                    &json_text(&run.error),
                    &run.parked_reason,
                    &run.started_at,
                    &run.ended_at,
                    &run.updated_at,
                ],
            )
            .await?;
            if changed == 0 {
                tx.rollback().await?;
                return Ok(CommitOutcome::Conflict);
            }
        } else if !commit.steps.is_empty() {
            execute(&tx, queries::runs::LOCK, &[&commit.run_id]).await?;
        }
        let mut duplicate_steps = Vec::new();
        for step in &commit.steps {
            let value = step.value.to_string();
            let inserted = execute(
                &tx,
                queries::steps::INSERT,
                &[&step.run_id, &step.step_id, &step.name, &value, &step.created_at],
            )
            .await?;
            if inserted == 0 {
                execute(
                    &tx,
                    queries::steps::INSERT_DUPLICATE,
                    &[&step.run_id, &step.step_id, &value, &step.created_at],
                )
                .await?;
                duplicate_steps.push(step.step_id.clone());
            }
        }
        if commit.clear_items {
            execute(&tx, queries::queue::DELETE_FOR_RUN, &[&commit.run_id]).await?;
            execute(&tx, queries::pauses::DELETE_FOR_RUN, &[&commit.run_id]).await?;
            execute(&tx, queries::guards::RELEASE_ON_END, &[&commit.run_id]).await?;
        }
        for pause in &commit.new_pauses {
            insert_pause(&tx, pause).await?;
        }
        if let Some(item) = &commit.done_item {
            execute(&tx, queries::queue::DELETE, &[item]).await?;
        }
        for item in &commit.enqueue {
            enqueue_item(&tx, item).await?;
        }
        ingest_in(&tx, &commit.emit).await?;
        if !commit.enqueue.is_empty() || !commit.emit.is_empty() {
            cluster::notify_work(&tx).await?;
        }
        tx.commit().await?;
        Ok(CommitOutcome::Applied { duplicate_steps })
    }

    async fn get_pause(&self, id: &str) -> Result<Option<PauseRecord>> {
        let client = self.client().await?;
        query_opt(&client, queries::pauses::GET, &[&id]).await?.as_ref().map(pause_from_row).transpose()
    }

    async fn pauses_for_event(&self, event_name: &str) -> Result<Vec<PauseRecord>> {
        let client = self.client().await?;
        rows(&query(&client, queries::pauses::FOR_EVENT, &[&pg_text(event_name).as_ref()]).await?, pause_from_row)
    }

    async fn pauses_for_run(&self, run_id: &str) -> Result<Vec<PauseRecord>> {
        let client = self.client().await?;
        rows(&query(&client, queries::pauses::FOR_RUN, &[&run_id]).await?, pause_from_row)
    }

    async fn guard_holder(&self, key: &str, now: i64) -> Result<Option<String>> {
        let client = self.client().await?;
        query_opt(&client, queries::guards::HOLDER, &[&pg_text(key).as_ref(), &now])
            .await?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(Into::into)
    }

    async fn release_all_leases(&self) -> Result<u64> {
        let client = self.client().await?;
        execute(&client, queries::queue::RELEASE_ALL_LEASES, &[]).await
    }

    async fn park_app(&self, app_id: &str, reason: &str, now: i64) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let paused = RunStatus::PausedUnreachable.as_str();
        let n = execute(
            &tx,
            queries::runs::PARK,
            &[&app_id, &paused, &reason, &now, &RunStatus::Queued.as_str(), &RunStatus::Running.as_str()],
        )
        .await?;
        execute(&tx, queries::queue::PARK_CALLS, &[&app_id, &paused]).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn unpark_app(&self, app_id: &str, now: i64) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let unparked = execute(&tx, queries::queue::UNPARK, &[&app_id, &now]).await?;
        let n = execute(
            &tx,
            queries::runs::UNPARK,
            &[&app_id, &RunStatus::Running.as_str(), &now, &RunStatus::PausedUnreachable.as_str()],
        )
        .await?;
        if unparked > 0 {
            cluster::notify_work(&tx).await?;
        }
        tx.commit().await?;
        Ok(n)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Database(describe(&e))
    }
}

/// tokio-postgres' `Display` says only "db error"; the server's message is in the source chain.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({}): {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) => describe(e),
        PoolError::Timeout(_) => format!("{e} (pool of connections exhausted or database not answering)"),
        other => other.to_string(),
    }
}

/// The schema name goes into a start-up option and a `CREATE SCHEMA`, so it is kept to the
/// identifiers that need no quoting or escaping in either.
fn check_schema_name(schema: &str) -> std::result::Result<(), String> {
    let mut chars = schema.chars();
    let plain = matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && schema.len() <= 63;
    if plain {
        Ok(())
    } else {
        Err(format!(
            "schema name {schema:?} must be 1 to 63 lower-case letters, digits or '_', not starting with a digit"
        ))
    }
}

/// The connection string with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let url = match url.split_once("://") {
        Some((scheme, rest)) => {
            // The user info ends at the last '@' before the query string; a password may itself
            // hold '@', '/' or ':' when not percent-encoded.
            let query_at = rest.find('?').unwrap_or(rest.len());
            match rest[..query_at].rfind('@') {
                Some(at) => {
                    let user = rest[..at].split_once(':').map_or(&rest[..at], |(user, _)| user);
                    let password = if rest[..at].contains(':') { ":***" } else { "" };
                    format!("{scheme}://{user}{password}{}", &rest[at..])
                }
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    redact_password_parameter(&url)
}

/// `password=…` in a query string (`?password=x&…`) or a key/value string (`password='x y' …`).
fn redact_password_parameter(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.to_ascii_lowercase().find("password") {
        let after_key = &rest[pos + "password".len()..];
        let trimmed = after_key.trim_start();
        let at_key_start = pos == 0 || matches!(rest.as_bytes()[pos - 1], b'?' | b'&' | b' ' | b'\t' | b'\n');
        let Some(value) = trimmed.strip_prefix('=').filter(|_| at_key_start) else {
            out.push_str(&rest[..pos + "password".len()]);
            rest = after_key;
            continue;
        };
        let value = value.trim_start();
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            // Key/value strings quote with '…' and escape with backslash.
            let mut escaped = false;
            let end = quoted.char_indices().find_map(|(i, c)| match c {
                _ if escaped => {
                    escaped = false;
                    None
                }
                '\\' => {
                    escaped = true;
                    None
                }
                '\'' => Some(i + 1),
                _ => None,
            });
            1 + end.unwrap_or(quoted.len())
        } else {
            value.find(|c: char| c == '&' || c.is_whitespace()).unwrap_or(value.len())
        };
        out.push_str(&rest[..pos]);
        out.push_str("password=***");
        let consumed = rest.len() - value.len() + value_len;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
