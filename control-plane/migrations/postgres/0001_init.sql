-- Ids are UUIDv7 text; times are UTC microseconds; money is integer micro-dollars.
-- PostgreSQL: same schema as the SQLite folder, in its own types.

CREATE TABLE config_state (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO config_state (id, version) VALUES (1, 0);

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    display_name TEXT NOT NULL,
    posture TEXT NOT NULL CHECK (posture IN ('MOCK', 'LIVE')),
    default_model TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE providers (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    base_url TEXT NOT NULL,
    api_version TEXT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    extra_headers TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    allow_private_network BOOLEAN NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE provider_keys (
    id TEXT PRIMARY KEY,
    provider_id TEXT NOT NULL REFERENCES providers (id),
    name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('ACTIVE', 'RETIRING', 'REVOKED')),
    sealed_secret BYTEA NOT NULL,
    master_key_version BIGINT NOT NULL,
    last_four TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    health TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    UNIQUE (provider_id, name)
);
CREATE INDEX provider_keys_by_master_key ON provider_keys (master_key_version);

CREATE TABLE models (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    input_price_micros_per_mtok BIGINT NOT NULL,
    output_price_micros_per_mtok BIGINT NOT NULL,
    context_window BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE deployments (
    model_id TEXT NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    provider_id TEXT NOT NULL REFERENCES providers (id),
    upstream_model TEXT NOT NULL,
    weight BIGINT NOT NULL,
    priority BIGINT NOT NULL,
    PRIMARY KEY (model_id, position)
);
CREATE INDEX deployments_by_provider ON deployments (provider_id);

CREATE TABLE virtual_keys (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    allowed_models TEXT NOT NULL,
    expires_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE admin_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL CHECK (scope IN ('ADMIN', 'READ_ONLY', 'DATA_PLANE')),
    prefix TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT NOT NULL
);

-- Append-only: nothing updates or deletes rows here.
CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,
    at_us BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_events_by_time ON audit_events (at_us);

-- One known value sealed per master-key version, so a wrong master key is caught at start.
CREATE TABLE vault_checks (
    master_key_version BIGINT PRIMARY KEY,
    sealed_check BYTEA NOT NULL
);
