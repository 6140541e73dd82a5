-- The integrity doctor (`sluice doctor`): its audit log, and the index it needs to find the
-- events a run emitted (finish events, re-emitted chain events) without scanning every event.
CREATE TABLE doctor_audit (
    id               TEXT PRIMARY KEY,
    at               BIGINT NOT NULL,
    actor            TEXT NOT NULL,
    command          TEXT NOT NULL,
    finding_code     TEXT NOT NULL,
    subject          TEXT NOT NULL,
    action           TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    detail           TEXT NOT NULL,
    undo             TEXT
);
CREATE INDEX doctor_audit_key_idx ON doctor_audit (idempotency_key);
CREATE INDEX doctor_audit_at_idx ON doctor_audit (at);
CREATE INDEX events_source_run_idx ON events (source_run_id);
