-- Nodes in maintenance or being drained (pvekvm/nodes.py), and the node each operation places
-- its VM on once chosen (pvekvm/placement.py). Same definitions as schema.sql.
CREATE TABLE IF NOT EXISTS nodes (
  name          VARCHAR(64)  NOT NULL PRIMARY KEY,
  maintenance   TINYINT(1)   NOT NULL DEFAULT 0,
  draining      TINYINT(1)   NOT NULL DEFAULT 0,
  drain_round   INT UNSIGNED NOT NULL DEFAULT 0,
  updated_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS placements (
  operation_id  BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  service_id    INT UNSIGNED NOT NULL,
  source        VARCHAR(64)  NULL,
  node          VARCHAR(64)  NOT NULL,
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  KEY ix_placements_node (node, operation_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
