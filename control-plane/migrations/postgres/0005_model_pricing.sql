-- Cached-input prices, and where a model's prices come from: the pricing catalog (kept current
-- by `sluicectl model sync-pricing`) or an operator (kept unless forced).
ALTER TABLE models ADD COLUMN cached_input_price_micros_per_mtok BIGINT;
ALTER TABLE models ADD COLUMN price_source TEXT NOT NULL DEFAULT 'OPERATOR'
    CHECK (price_source IN ('CATALOG', 'OPERATOR'));
ALTER TABLE models ADD COLUMN catalog_id TEXT NOT NULL DEFAULT '';
