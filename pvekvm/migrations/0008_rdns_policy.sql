-- Client reverse DNS policy per product (issue 23): which PTR names a client may set, see
-- pvekvm/rdns_policy.py. Existing products get the default, owned-or-fcrdns.
ALTER TABLE products ADD COLUMN IF NOT EXISTS rdns_policy VARCHAR(16) NOT NULL
  DEFAULT 'owned-or-fcrdns' CHECK (rdns_policy IN ('owned', 'fcrdns', 'owned-or-fcrdns', 'off'))
  AFTER overage_rate_mbps;
