-- Usage summed per UTC hour and per everything a spend query filters or groups by, kept in the
-- transaction that stores the records. Spend queries read this roll-up for the whole hours of
-- their range and the raw records only for the partial hours at its ends, so they stay fast
-- however many records a range holds.
CREATE TABLE usage_hourly (
    project_id TEXT NOT NULL,
    hour_us BIGINT NOT NULL,
    virtual_key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    source TEXT NOT NULL,
    run_id TEXT NOT NULL,
    requests BIGINT NOT NULL,
    failed_requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (project_id, hour_us, virtual_key_id, model, provider_id, source, run_id)
);
INSERT INTO usage_hourly
SELECT project_id, (started_at_us / 3600000000) * 3600000000, virtual_key_id, model,
       provider_id, source, run_id, COUNT(*),
       SUM(CASE WHEN http_status >= 400 THEN 1 ELSE 0 END),
       SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens), SUM(cost_micros)
FROM usage_records
GROUP BY 1, 2, 3, 4, 5, 6, 7;
