//! Every statement the PostgreSQL store runs, grouped by concern. Parameters are cast where
//! PostgreSQL could not infer their type (`INSERT … SELECT`, `$n IS NULL`).

macro_rules! app_columns {
    () => {
        "id, url, normalized_url, framework, sdk, deploy_id, app_version, config_hash, status, last_error, synced_at, updated_at"
    };
}
macro_rules! event_columns {
    () => {
        "id, body, received_at, source_run_id"
    };
}
macro_rules! run_columns {
    () => {
        "id, function_id, app_id, event_id, event_ids, status, state, output, error, parked_reason, created_at, started_at, ended_at, updated_at, rev"
    };
}
macro_rules! item_columns {
    () => {
        "id, run_id, kind, step_id, attempt, available_at, lease_owner, lease_expires_at, unreachable_count, unreachable_since, parked, created_at"
    };
}
macro_rules! pause_columns {
    () => {
        "id, run_id, kind, step_id, event_name, expression, match_key, trigger_event, expires_at, created_at"
    };
}

/// Schema set-up, run once per `connect` in one transaction.
pub mod migrate {
    /// Serializes migrations per target schema across every node starting at once. The lock is
    /// transaction-level, so it is released by the commit (or by the rollback of a failed run).
    /// `hashtext` collisions only make two unrelated schemas migrate one after the other.
    pub const LOCK: &str =
        "SELECT pg_advisory_xact_lock(1936487779, hashtext(COALESCE($1::text, current_schema(), '')))";
    pub const SCHEMA_EXISTS: &str = "SELECT 1 FROM pg_namespace WHERE nspname = $1";
    pub const CREATE_TABLE: &str =
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";
    pub const APPLIED: &str = "SELECT version FROM schema_migrations";
    pub const RECORD: &str = "INSERT INTO schema_migrations (version, applied_at)
         VALUES ($1, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT)";
}

pub mod apps {
    pub const CONFIG_HASH: &str = "SELECT config_hash FROM apps WHERE id = $1";
    pub const UPSERT: &str = concat!(
        "INSERT INTO apps (",
        app_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO UPDATE SET url = excluded.url, normalized_url = excluded.normalized_url,
           framework = excluded.framework, sdk = excluded.sdk, deploy_id = excluded.deploy_id,
           app_version = excluded.app_version, config_hash = excluded.config_hash, status = excluded.status,
           last_error = excluded.last_error, synced_at = excluded.synced_at, updated_at = excluded.updated_at"
    );
    pub const SET_STATUS: &str = "UPDATE apps SET status = $2, last_error = $3, updated_at = $4 WHERE id = $1";
    pub const LIST: &str = concat!("SELECT ", app_columns!(), " FROM apps ORDER BY id");

    pub const DELETE_FUNCTIONS: &str = "DELETE FROM functions WHERE app_id = $1";
    pub const UPSERT_FUNCTION: &str = "INSERT INTO functions (id, app_id, name, config, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET app_id = excluded.app_id, name = excluded.name,
           config = excluded.config, updated_at = excluded.updated_at";
    pub const LIST_FUNCTIONS: &str = "SELECT id, app_id, name, config, updated_at FROM functions ORDER BY id";
}

pub mod events {
    /// A client id seen within its window.
    pub const DEDUP_LIVE: &str = "SELECT event_id FROM event_dedup WHERE key = $1 AND expires_at > $2";
    /// Take a client id for this event unless a live one holds it. No row back means another
    /// transaction took it between `DEDUP_LIVE` and here (SQLite's single writer cannot race).
    pub const DEDUP_CLAIM: &str = "INSERT INTO event_dedup (key, event_id, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at
           WHERE event_dedup.expires_at <= $4
         RETURNING event_id";
    pub const DEDUP_HOLDER: &str = "SELECT event_id FROM event_dedup WHERE key = $1";
    /// No row inserted means the id was stored before: a seeded id sent again.
    pub const INSERT: &str = "INSERT INTO events (id, name, body, ts, received_at, client_id, source_run_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO NOTHING";
    pub const DELETE: &str = "DELETE FROM events WHERE id = $1";
    pub const GET: &str = concat!("SELECT ", event_columns!(), " FROM events WHERE id = $1");
    pub const GET_MANY: &str = concat!("SELECT ", event_columns!(), " FROM events WHERE id = ANY($1)");
    pub const LIST: &str = concat!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE ($1::text IS NULL OR name = $1) ORDER BY id DESC LIMIT $2"
    );
}

pub mod runs {
    pub const INSERT: &str = concat!(
        "INSERT INTO runs (",
        run_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    );
    pub const GET: &str = concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1");
    pub const FOR_EVENT: &str = concat!("SELECT ", run_columns!(), " FROM runs WHERE event_id = $1 ORDER BY id");
    pub const LIST: &str = concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR function_id = $2)
           AND ($3::text IS NULL OR app_id = $3)
         ORDER BY id DESC LIMIT $4"
    );
    /// The compare-and-set of `commit`: no row means the run moved on.
    pub const UPDATE_IF_REV: &str =
        "UPDATE runs SET status = $3, state = $4, output = $5, error = $6, parked_reason = $7,
           started_at = $8, ended_at = $9, updated_at = $10, rev = rev + 1
         WHERE id = $1 AND rev = $2";
    /// Serializes step writes of a commit that does not replace the run row, so `seq` stays a
    /// strict completion order (what SQLite's single writer gives for free).
    pub const LOCK: &str = "SELECT 1 FROM runs WHERE id = $1 FOR UPDATE";
    pub const PARK: &str = "UPDATE runs SET status = $2, parked_reason = $3, updated_at = $4, rev = rev + 1
         WHERE app_id = $1 AND status IN ($5, $6)";
    pub const UNPARK: &str = "UPDATE runs SET status = $2, parked_reason = NULL, updated_at = $3, rev = rev + 1
         WHERE app_id = $1 AND status = $4";
}

pub mod steps {
    /// `seq` continues the run's completion order; a step already stored keeps its first result.
    pub const INSERT: &str = "INSERT INTO steps (run_id, step_id, seq, name, value, created_at)
         SELECT $1::text, $2::text, COALESCE(MAX(seq), 0) + 1, $3::text, $4::text, $5::bigint
         FROM steps WHERE run_id = $1::text
         ON CONFLICT (run_id, step_id) DO NOTHING";
    pub const INSERT_DUPLICATE: &str =
        "INSERT INTO step_duplicates (run_id, step_id, value, received_at) VALUES ($1, $2, $3, $4)";
    pub const FOR_RUN: &str =
        "SELECT run_id, step_id, seq, name, value, created_at FROM steps WHERE run_id = $1 ORDER BY seq";
}

pub mod queue {
    /// An item with the same id already queued (a step planned twice) wins.
    pub const ENQUEUE: &str = concat!(
        "INSERT INTO queue (",
        item_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO NOTHING"
    );
    pub const FOR_RUN: &str =
        concat!("SELECT ", item_columns!(), " FROM queue WHERE run_id = $1 ORDER BY available_at, id");
    /// Lease due items. `SKIP LOCKED` lets several nodes claim at once without blocking on, or
    /// handing out twice, the rows another claim is leasing; a row whose lease was taken after this
    /// statement's snapshot is re-checked against the `WHERE` once locked, and dropped.
    pub const CLAIM_DUE: &str = concat!(
        "WITH due AS (
           SELECT id AS due_id FROM queue
           WHERE parked = 0 AND available_at <= $3 AND (lease_expires_at IS NULL OR lease_expires_at < $3)
           ORDER BY available_at LIMIT $4
           FOR UPDATE SKIP LOCKED)
         UPDATE queue SET lease_owner = $1, lease_expires_at = $2
         FROM due WHERE id = due_id
         RETURNING ",
        item_columns!()
    );
    pub const NEXT_DUE_AT: &str =
        "SELECT MIN(CASE WHEN lease_expires_at IS NOT NULL AND lease_expires_at > available_at
                             THEN lease_expires_at ELSE available_at END)
         FROM queue WHERE parked = 0";
    pub const DELETE: &str = "DELETE FROM queue WHERE id = $1";
    pub const DELETE_FOR_RUN: &str = "DELETE FROM queue WHERE run_id = $1";
    pub const RELEASE_ALL_LEASES: &str =
        "UPDATE queue SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL";
    pub const PARK_CALLS: &str = "UPDATE queue SET parked = 1, lease_owner = NULL, lease_expires_at = NULL
         WHERE kind = 'call' AND run_id IN (SELECT id FROM runs WHERE app_id = $1 AND status = $2)";
    pub const UNPARK: &str =
        "UPDATE queue SET parked = 0, available_at = $2, unreachable_count = 0, unreachable_since = NULL
         WHERE parked = 1 AND run_id IN (SELECT id FROM runs WHERE app_id = $1)";
}

pub mod pauses {
    pub const INSERT: &str = concat!(
        "INSERT INTO pauses (",
        pause_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO NOTHING"
    );
    /// Resolving a pause deletes it; no row means another commit resolved it first.
    pub const CONSUME: &str = "DELETE FROM pauses WHERE id = $1";
    pub const DELETE_FOR_RUN: &str = "DELETE FROM pauses WHERE run_id = $1";
    pub const ANY_FOR_EVENT: &str = "SELECT 1 FROM pauses WHERE event_name = $1 LIMIT 1";
    pub const GET: &str = concat!("SELECT ", pause_columns!(), " FROM pauses WHERE id = $1");
    pub const FOR_EVENT: &str =
        concat!("SELECT ", pause_columns!(), " FROM pauses WHERE event_name = $1 ORDER BY created_at, id");
    pub const FOR_RUN: &str =
        concat!("SELECT ", pause_columns!(), " FROM pauses WHERE run_id = $1 ORDER BY created_at, id");
}

pub mod guards {
    /// Take a key unless a run holds it unexpired. A row back means it was taken; the conflicting
    /// row stays locked to the end of the transaction, so two nodes cannot both take it.
    pub const CLAIM: &str = "INSERT INTO run_guards (key, run_id, expires_at, release_on_end) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id, expires_at = excluded.expires_at,
           release_on_end = excluded.release_on_end
           WHERE run_guards.expires_at <= $5
         RETURNING key";
    pub const RELEASE_ON_END: &str = "DELETE FROM run_guards WHERE run_id = $1 AND release_on_end = 1";
    pub const HOLDER: &str = "SELECT run_id FROM run_guards WHERE key = $1 AND expires_at > $2";
    pub const SAVEPOINT: &str = "SAVEPOINT run_guards";
    pub const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT run_guards";
    pub const RELEASE_SAVEPOINT: &str = "RELEASE SAVEPOINT run_guards";
}
