-- Retry settings of providers and models (JSON; an absent field inherits).
ALTER TABLE providers ADD COLUMN retry_policy TEXT NOT NULL DEFAULT '{}';
ALTER TABLE models ADD COLUMN retry_policy TEXT NOT NULL DEFAULT '{}';
