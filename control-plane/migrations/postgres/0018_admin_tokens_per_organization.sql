-- Tokens limited to one organisation (ORG_ADMIN, ORG_READ_ONLY) beside the global scopes.
-- organization_id is set exactly for those scopes. No foreign key: a token whose organisation
-- is deleted stops authenticating (the organisation no longer resolves).
ALTER TABLE admin_tokens DROP CONSTRAINT admin_tokens_scope_check;
ALTER TABLE admin_tokens ADD COLUMN organization_id TEXT;
ALTER TABLE admin_tokens ADD CONSTRAINT admin_tokens_scope_check
    CHECK (scope IN ('ADMIN', 'READ_ONLY', 'DATA_PLANE', 'ORG_ADMIN', 'ORG_READ_ONLY'));
ALTER TABLE admin_tokens ADD CONSTRAINT admin_tokens_organization_check
    CHECK ((scope IN ('ORG_ADMIN', 'ORG_READ_ONLY')) = (organization_id IS NOT NULL));
