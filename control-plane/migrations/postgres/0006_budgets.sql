-- Spend limits. One budget per target and period; the target is an organisation, a project or
-- a virtual key (scope_id holds its id).
CREATE TABLE budgets (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    scope TEXT NOT NULL CHECK (scope IN ('ORGANIZATION', 'PROJECT', 'VIRTUAL_KEY')),
    scope_id TEXT NOT NULL,
    period TEXT NOT NULL CHECK (period IN ('DAY', 'MONTH', 'TOTAL')),
    limit_micros BIGINT NOT NULL CHECK (limit_micros >= 0),
    posture TEXT NOT NULL CHECK (posture IN ('HARD', 'SOFT')),
    -- Comma-separated percentages, ascending.
    alert_percents TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    UNIQUE (scope_id, period)
);
CREATE INDEX budgets_by_org ON budgets (org_id);

-- Committed spend per budget and window (window_start_us: the UTC day or month start; 0 for
-- TOTAL), kept in the transaction that commits the usage.
CREATE TABLE budget_spend (
    budget_id TEXT NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    window_start_us BIGINT NOT NULL,
    spent_micros BIGINT NOT NULL,
    estimated_micros BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    -- The highest alert threshold already raised in this window.
    alerted_percent BIGINT NOT NULL,
    PRIMARY KEY (budget_id, window_start_us)
);
