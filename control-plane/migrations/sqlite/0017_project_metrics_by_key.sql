-- Whether the proxies' /metrics count the project's requests, tokens and cost per virtual key
-- (series by key id: off unless an operator turns it on, so label sets stay bounded).
ALTER TABLE projects ADD COLUMN metrics_by_key BOOLEAN NOT NULL DEFAULT FALSE;
