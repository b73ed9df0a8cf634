-- Request metadata, so an operator can find every call of one run or task. The indexes are
-- partial: records without metadata (most of them) cost nothing extra to insert.
ALTER TABLE usage_records ADD COLUMN run_id TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_records ADD COLUMN task_id TEXT NOT NULL DEFAULT '';
-- The request's x-sluice-tag-* headers as a JSON object (name → value).
ALTER TABLE usage_records ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
CREATE INDEX usage_records_by_run ON usage_records (run_id) WHERE run_id <> '';
CREATE INDEX usage_records_by_task ON usage_records (task_id) WHERE task_id <> '';
