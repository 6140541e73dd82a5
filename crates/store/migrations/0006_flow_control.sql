-- Concurrency: a slot is held by the queue item executing a step, until it finishes or its lease lapses.
CREATE TABLE concurrency_slots (
    key         TEXT NOT NULL,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (key, holder)
);
CREATE INDEX concurrency_slots_holder_idx ON concurrency_slots (holder);

-- Throttle: GCRA theoretical arrival time per key.
CREATE TABLE throttle_state (
    key  TEXT PRIMARY KEY,
    tat  BIGINT NOT NULL
);

-- Debounce: the pending (last) event per function and key.
CREATE TABLE debounces (
    key          TEXT PRIMARY KEY,
    function_id  TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    first_at     BIGINT NOT NULL,
    fire_at      BIGINT NOT NULL
);
