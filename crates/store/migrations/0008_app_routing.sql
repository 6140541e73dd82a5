-- Per-app routing policy for runs in flight when a new deployment becomes current.
CREATE TABLE app_routing (
    app_id      TEXT PRIMARY KEY,
    policy      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
