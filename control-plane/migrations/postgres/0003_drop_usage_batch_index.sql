-- Records are never looked up by batch (the batch table answers that), and the index cost
-- every usage insert.
DROP INDEX usage_records_by_batch;
