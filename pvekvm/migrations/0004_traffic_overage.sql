-- Traffic quota and overage: a product's monthly quota and the net0 rate over it; the month a
-- service is throttled for (NULL = at its package rate).
ALTER TABLE products ADD COLUMN IF NOT EXISTS traffic_quota_gb INT UNSIGNED NULL AFTER linked_clone;
ALTER TABLE products ADD COLUMN IF NOT EXISTS overage_rate_mbps DECIMAL(8,2) NULL AFTER traffic_quota_gb;
ALTER TABLE services ADD COLUMN IF NOT EXISTS throttled_period DATE NULL AFTER language;
