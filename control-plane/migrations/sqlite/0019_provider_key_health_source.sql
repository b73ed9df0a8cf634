-- When a key's health was last learned and how: an operator's key test, or an upstream's
-- answer to live traffic. The console shows both beside the health.
ALTER TABLE provider_keys ADD COLUMN health_learned_at_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE provider_keys ADD COLUMN health_source TEXT NOT NULL DEFAULT ''
    CHECK (health_source IN ('', 'KEY_TEST', 'TRAFFIC'));
