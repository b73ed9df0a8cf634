-- Usage is kept per batch: each batch's row holds its records (their `UsageBatch` encoding),
-- so a commit writes one row, the roll-up and the budgets instead of a row and four index
-- entries per record. The records kept one row each move into their batches in a step the
-- control plane runs at start (it decodes and encodes; SQL cannot), which then drops the old
-- table.
ALTER TABLE usage_batches ADD COLUMN records BYTEA;
-- The UTC hours each batch holds records of: a spend query reads the batches of the partial
-- hours at its range's ends (the roll-up answers for the whole hours), and a batch that may
-- repeat records is checked against the same proxy's batches of its hours.
CREATE TABLE usage_batch_hours (
    hour_us BIGINT NOT NULL,
    batch_id TEXT NOT NULL,
    PRIMARY KEY (hour_us, batch_id)
);
