-- Rate limits: requests and tokens (0: not limited) per fixed window of window_seconds,
-- aligned to the UTC epoch. One limit per target; the target is an organisation, a project,
-- a virtual key or a model (scope_id holds its id).
CREATE TABLE rate_limits (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    scope TEXT NOT NULL CHECK (scope IN ('ORGANIZATION', 'PROJECT', 'VIRTUAL_KEY', 'MODEL')),
    scope_id TEXT NOT NULL UNIQUE,
    requests_per_window BIGINT NOT NULL CHECK (requests_per_window >= 0),
    tokens_per_window BIGINT NOT NULL CHECK (tokens_per_window >= 0),
    window_seconds BIGINT NOT NULL CHECK (window_seconds BETWEEN 1 AND 86400),
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);
CREATE INDEX rate_limits_by_org ON rate_limits (org_id);

-- A proxy process's allowance of one dimension of a limit in one window, and what it last
-- reported using.
CREATE TABLE rate_leases (
    rate_limit_id TEXT NOT NULL REFERENCES rate_limits (id) ON DELETE CASCADE,
    dimension TEXT NOT NULL CHECK (dimension IN ('REQUESTS', 'TOKENS')),
    window_start_us BIGINT NOT NULL,
    proxy_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    allowance BIGINT NOT NULL,
    used BIGINT NOT NULL,
    expires_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (rate_limit_id, dimension, window_start_us, proxy_id, epoch)
);
