-- Tokens limited to one organisation (ORG_ADMIN, ORG_READ_ONLY) beside the global scopes.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt with the new ones.
CREATE TABLE admin_tokens_new (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL CHECK (scope IN ('ADMIN', 'READ_ONLY', 'DATA_PLANE', 'ORG_ADMIN', 'ORG_READ_ONLY')),
    -- Set exactly for the organisation scopes. No foreign key: a token whose organisation is
    -- deleted stops authenticating (the organisation no longer resolves).
    organization_id TEXT,
    prefix TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT NOT NULL,
    CHECK ((scope IN ('ORG_ADMIN', 'ORG_READ_ONLY')) = (organization_id IS NOT NULL))
);
INSERT INTO admin_tokens_new
    (id, name, scope, organization_id, prefix, token_hash, created_at_us, revoked_at_us)
    SELECT id, name, scope, NULL, prefix, token_hash, created_at_us, revoked_at_us
    FROM admin_tokens;
DROP TABLE admin_tokens;
ALTER TABLE admin_tokens_new RENAME TO admin_tokens;
