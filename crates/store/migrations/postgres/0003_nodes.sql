-- The SQLite migration ../0003_nodes.sql, column for column. Node ids are ordered by in
-- listings, hence COLLATE "C" (byte order, as in SQLite).
CREATE TABLE nodes (
    id            TEXT COLLATE "C" PRIMARY KEY,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);

-- The sweep and the orphan release find a node's leases by owner.
CREATE INDEX queue_lease_owner_idx ON queue (lease_owner);
