-- What each proxy runs, as its config stream reports it.
CREATE TABLE proxies (
    proxy_id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    connected BOOLEAN NOT NULL,
    acked_version BIGINT NOT NULL,
    nacked_version BIGINT NOT NULL,
    nack_reason TEXT NOT NULL,
    first_seen_us BIGINT NOT NULL,
    last_seen_us BIGINT NOT NULL
);

-- One row per usage batch a proxy sent; a repeated batch id is a no-op, a different payload
-- under the same id is refused.
CREATE TABLE usage_batches (
    batch_id TEXT PRIMARY KEY,
    proxy_id TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    record_count BIGINT NOT NULL,
    received_at_us BIGINT NOT NULL
);

CREATE TABLE usage_records (
    request_id TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL REFERENCES usage_batches (batch_id),
    started_at_us BIGINT NOT NULL,
    project_id TEXT NOT NULL,
    virtual_key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    http_status BIGINT NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX usage_records_by_project_time ON usage_records (project_id, started_at_us);
CREATE INDEX usage_records_by_batch ON usage_records (batch_id);
