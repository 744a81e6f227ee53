-- Issue 28 items 5-6: the package details of the manual's products (CPU type, cpulimit,
-- cpuunits, ballooning, disk burst limits) and the client's own firewall rules (how many a
-- package allows; the set each service asked for). Same definitions as schema.sql.
ALTER TABLE products ADD COLUMN IF NOT EXISTS cpu_type VARCHAR(64) NULL AFTER memory_mb;
ALTER TABLE products ADD COLUMN IF NOT EXISTS cpulimit DECIMAL(5,2) NULL AFTER cpu_type;
ALTER TABLE products ADD COLUMN IF NOT EXISTS cpuunits INT UNSIGNED NULL AFTER cpulimit;
ALTER TABLE products ADD COLUMN IF NOT EXISTS balloon_mb INT UNSIGNED NULL AFTER cpuunits;
ALTER TABLE products ADD COLUMN IF NOT EXISTS disk_mbps_rd_max INT UNSIGNED NOT NULL DEFAULT 0 AFTER disk_iops_wr;
ALTER TABLE products ADD COLUMN IF NOT EXISTS disk_mbps_wr_max INT UNSIGNED NOT NULL DEFAULT 0 AFTER disk_mbps_rd_max;
ALTER TABLE products ADD COLUMN IF NOT EXISTS disk_iops_rd_max INT UNSIGNED NOT NULL DEFAULT 0 AFTER disk_mbps_wr_max;
ALTER TABLE products ADD COLUMN IF NOT EXISTS disk_iops_wr_max INT UNSIGNED NOT NULL DEFAULT 0 AFTER disk_iops_rd_max;
ALTER TABLE products ADD COLUMN IF NOT EXISTS add_disk_mbps_rd_max INT UNSIGNED NOT NULL DEFAULT 0 AFTER add_disk_iops_wr;
ALTER TABLE products ADD COLUMN IF NOT EXISTS add_disk_mbps_wr_max INT UNSIGNED NOT NULL DEFAULT 0 AFTER add_disk_mbps_rd_max;
ALTER TABLE products ADD COLUMN IF NOT EXISTS add_disk_iops_rd_max INT UNSIGNED NOT NULL DEFAULT 0 AFTER add_disk_mbps_wr_max;
ALTER TABLE products ADD COLUMN IF NOT EXISTS add_disk_iops_wr_max INT UNSIGNED NOT NULL DEFAULT 0 AFTER add_disk_iops_rd_max;
ALTER TABLE products ADD COLUMN IF NOT EXISTS client_fw_rules SMALLINT UNSIGNED NOT NULL DEFAULT 20 AFTER firewall_policy_out;

CREATE TABLE IF NOT EXISTS client_firewall_rules (
  service_id    INT UNSIGNED NOT NULL PRIMARY KEY,
  rules         MEDIUMTEXT   NOT NULL,                -- JSON: the parsed rules, in PVE order
  operation_id  BIGINT UNSIGNED NULL,                 -- the firewall_rules_set that saved them
  updated_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
