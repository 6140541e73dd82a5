-- Event batches being filled (batchEvents): the events so far, and when the batch must run anyway.
CREATE TABLE batches (
    key          TEXT PRIMARY KEY,
    id           TEXT NOT NULL,
    function_id  TEXT NOT NULL,
    event_ids    TEXT NOT NULL,
    size         INTEGER NOT NULL,
    max_size     INTEGER NOT NULL,
    fire_at      BIGINT NOT NULL
);
