-- The nodes sharing this database (one on SQLite): each heartbeats its row; a node whose
-- heartbeat is too old is deleted by another node's sweep, which releases the leases it held.
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);

-- The sweep and the orphan release find a node's leases by owner.
CREATE INDEX queue_lease_owner_idx ON queue (lease_owner);
