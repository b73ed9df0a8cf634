-- What each proxy process may spend of a HARD budget in a window (cumulative allowance), and
-- how much of that has already arrived as committed usage. allowance - committed of the live
-- leases is what the control plane must hold back when it grants more.
CREATE TABLE budget_leases (
    budget_id TEXT NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    window_start_us BIGINT NOT NULL,
    proxy_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    allowance_micros BIGINT NOT NULL,
    committed_micros BIGINT NOT NULL,
    used_micros BIGINT NOT NULL,
    expires_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (budget_id, window_start_us, proxy_id, epoch)
);
-- The proxy process that admitted each request, so its cost is credited to that lease.
ALTER TABLE usage_records ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
