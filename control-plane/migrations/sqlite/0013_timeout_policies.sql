-- Upstream timeouts of providers and models (JSON; an absent field inherits).
ALTER TABLE providers ADD COLUMN timeout_policy TEXT NOT NULL DEFAULT '{}';
ALTER TABLE models ADD COLUMN timeout_policy TEXT NOT NULL DEFAULT '{}';
