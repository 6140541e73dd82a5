-- The SQLite schema (../0001_init.sql), table for table and column for column: BIGINT millisecond
-- timestamps, TEXT JSON, INTEGER counters and 0/1 flags. Ids that lists are ordered by are
-- COLLATE "C" so `ORDER BY id` is byte order, as in SQLite, whatever the database's locale.
CREATE TABLE apps (
    id              TEXT COLLATE "C" PRIMARY KEY,
    url             TEXT NOT NULL,
    normalized_url  TEXT NOT NULL,
    framework       TEXT,
    sdk             TEXT,
    deploy_id       TEXT,
    app_version     TEXT,
    config_hash     TEXT NOT NULL,
    status          TEXT NOT NULL,
    last_error      TEXT,
    synced_at       BIGINT,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE functions (
    id           TEXT COLLATE "C" PRIMARY KEY,
    app_id       TEXT NOT NULL,
    name         TEXT NOT NULL,
    config       TEXT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX functions_app_idx ON functions (app_id);

CREATE TABLE events (
    id             TEXT COLLATE "C" PRIMARY KEY,
    name           TEXT NOT NULL,
    body           TEXT NOT NULL,
    ts             BIGINT NOT NULL,
    received_at    BIGINT NOT NULL,
    client_id      TEXT,
    source_run_id  TEXT
);
CREATE INDEX events_name_idx ON events (name, received_at);

-- Client event ids deduplicate for 24 h.
CREATE TABLE event_dedup (
    key         TEXT PRIMARY KEY,
    event_id    TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE runs (
    id             TEXT COLLATE "C" PRIMARY KEY,
    function_id    TEXT NOT NULL,
    app_id         TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    event_ids      TEXT NOT NULL,
    status         TEXT NOT NULL,
    state          TEXT NOT NULL,
    output         TEXT,
    error          TEXT,
    parked_reason  TEXT,
    created_at     BIGINT NOT NULL,
    started_at     BIGINT,
    ended_at       BIGINT,
    updated_at     BIGINT NOT NULL,
    rev            BIGINT NOT NULL
);
CREATE INDEX runs_event_idx ON runs (event_id);
CREATE INDEX runs_status_idx ON runs (status, updated_at);
CREATE INDEX runs_function_idx ON runs (function_id, created_at);
-- park_app / unpark_app select a whole app's runs.
CREATE INDEX runs_app_idx ON runs (app_id, status);

-- Memoized step results; `seq` is completion order (the SDK's ctx.stack).
CREATE TABLE steps (
    run_id      TEXT NOT NULL,
    step_id     TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    name        TEXT,
    value       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (run_id, step_id)
);

-- Step results that arrived for a step already stored (discarded; kept as evidence).
CREATE TABLE step_duplicates (
    run_id       TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    value        TEXT NOT NULL,
    received_at  BIGINT NOT NULL
);

-- The durable queue: calls to make and timers to fire, each leased while being worked on.
CREATE TABLE queue (
    id                 TEXT PRIMARY KEY,
    run_id             TEXT NOT NULL,
    kind               TEXT NOT NULL,
    step_id            TEXT NOT NULL,
    attempt            INTEGER NOT NULL,
    available_at       BIGINT NOT NULL,
    lease_owner        TEXT,
    lease_expires_at   BIGINT,
    unreachable_count  INTEGER NOT NULL,
    unreachable_since  BIGINT,
    parked             INTEGER NOT NULL,
    created_at         BIGINT NOT NULL
);
CREATE INDEX queue_due_idx ON queue (parked, available_at);
CREATE INDEX queue_run_idx ON queue (run_id);
