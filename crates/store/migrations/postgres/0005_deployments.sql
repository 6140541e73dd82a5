-- Deployments: every synced version of an app (URL, deploy id, app version) with its function set.
CREATE TABLE deployments (
    id            TEXT COLLATE "C" PRIMARY KEY,
    app_id        TEXT NOT NULL,
    url           TEXT NOT NULL,
    identity      TEXT NOT NULL,
    deploy_id     TEXT,
    app_version   TEXT,
    config_hash   TEXT NOT NULL,
    functions     TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    activated_at  BIGINT
);
CREATE INDEX deployments_app_idx ON deployments (app_id, created_at);
CREATE INDEX deployments_identity_idx ON deployments (app_id, identity);
