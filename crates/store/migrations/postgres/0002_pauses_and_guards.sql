-- The SQLite migration ../0002_pauses_and_guards.sql, column for column.

-- Pauses: a run waiting for an event (waitForEvent, invoke's completion, cancelOn).
CREATE TABLE pauses (
    id             TEXT PRIMARY KEY,
    run_id         TEXT NOT NULL,
    kind           TEXT NOT NULL,
    step_id        TEXT,
    event_name     TEXT NOT NULL,
    expression     TEXT,
    match_key      TEXT,
    trigger_event  TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX pauses_event_idx ON pauses (event_name);
CREATE INDEX pauses_run_idx ON pauses (run_id);

-- Admission guards: a key held by a run until it expires (idempotency) or the run ends (singleton).
CREATE TABLE run_guards (
    key             TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL,
    expires_at      BIGINT NOT NULL,
    release_on_end  INTEGER NOT NULL
);
CREATE INDEX run_guards_run_idx ON run_guards (run_id);
