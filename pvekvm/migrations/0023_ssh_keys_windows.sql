-- Issue 28 items 1-2: the client's SSH public keys per service, password login per product
-- (ssh_pwauth, the operator's cicustom snippet), Windows templates (cloudbase-init).
-- Same definitions as schema.sql.
ALTER TABLE templates
  ADD COLUMN IF NOT EXISTS os_type VARCHAR(8) NOT NULL DEFAULT 'linux'
    CHECK (os_type IN ('linux', 'windows')) AFTER os_user,
  ADD COLUMN IF NOT EXISTS ostype VARCHAR(8) NULL AFTER os_type;

ALTER TABLE products
  ADD COLUMN IF NOT EXISTS ssh_pwauth TINYINT(1) NOT NULL DEFAULT 1 AFTER rdns_policy,
  ADD COLUMN IF NOT EXISTS cicustom VARCHAR(255) NULL AFTER ssh_pwauth;

ALTER TABLE services
  ADD COLUMN IF NOT EXISTS ssh_keys TEXT NULL AFTER throttled_period;
