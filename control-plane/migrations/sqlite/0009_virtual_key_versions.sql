-- The config version that last changed each virtual key, so the control plane reads only the
-- keys changed since the version it last published instead of every key of the fleet.
ALTER TABLE virtual_keys ADD COLUMN config_version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX virtual_keys_by_config_version ON virtual_keys (config_version);
-- Keys deleted outright leave their id and version here for the same reading; rows older than
-- a day are pruned (a publisher reads changes every second, or reloads everything).
CREATE TABLE virtual_key_deletions (
    id TEXT PRIMARY KEY,
    config_version BIGINT NOT NULL,
    deleted_at_us BIGINT NOT NULL
);
CREATE INDEX virtual_key_deletions_by_config_version ON virtual_key_deletions (config_version);
