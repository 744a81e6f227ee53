-- Placement by headroom (pvekvm/placement.py): the nodes a product may run on (a list, or a
-- node group of the catalog; NULL = its target_node alone), why each operation's node was
-- chosen, and what our in-flight deploys will take until their VM is on its node. Same
-- definitions as schema.sql.
ALTER TABLE products ADD COLUMN IF NOT EXISTS nodes VARCHAR(1024) NULL AFTER target_storage;
ALTER TABLE products ADD COLUMN IF NOT EXISTS node_group VARCHAR(64) NULL AFTER nodes;
ALTER TABLE placements ADD COLUMN IF NOT EXISTS why VARCHAR(500) NULL AFTER node;

CREATE TABLE IF NOT EXISTS reservations (
  operation_id  BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  service_id    INT UNSIGNED NOT NULL,
  node          VARCHAR(64)  NULL,
  storage       VARCHAR(64)  NOT NULL,
  memory_mb     INT UNSIGNED NOT NULL,
  cores         SMALLINT UNSIGNED NOT NULL,
  disk_gb       INT UNSIGNED NOT NULL,
  waiting_since DATETIME(3)  NULL,
  reason        VARCHAR(500) NULL,
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  KEY ix_reservations_node (node)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
