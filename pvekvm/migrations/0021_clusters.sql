-- Several Proxmox clusters (issue 24 item 1): templates, pools, products, services, nodes and
-- placements say which cluster they belong to. What an installation already has lives in the
-- one cluster of today's `[proxmox]`, named "default" (its `name` key can say otherwise only
-- for a new installation: config-check names rows of a cluster the settings do not have).
-- product_locations is made by schema.sql. Safe to run again after a partial run.
ALTER TABLE templates ADD COLUMN IF NOT EXISTS cluster VARCHAR(64) NOT NULL DEFAULT 'default'
  AFTER os_user;
ALTER TABLE ip_pools ADD COLUMN IF NOT EXISTS cluster VARCHAR(64) NULL DEFAULT 'default'
  AFTER assign;
ALTER TABLE products ADD COLUMN IF NOT EXISTS cluster VARCHAR(64) NOT NULL DEFAULT 'default'
  AFTER rdns_policy;
ALTER TABLE services ADD COLUMN IF NOT EXISTS cluster VARCHAR(64) NOT NULL DEFAULT 'default'
  AFTER node;
ALTER TABLE services ADD KEY IF NOT EXISTS ix_services_cluster (cluster, status);
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS cluster VARCHAR(64) NOT NULL DEFAULT 'default' FIRST;
ALTER TABLE nodes DROP PRIMARY KEY, ADD PRIMARY KEY (cluster, name);
ALTER TABLE placements ADD COLUMN IF NOT EXISTS cluster VARCHAR(64) NOT NULL DEFAULT 'default'
  AFTER node;
ALTER TABLE placements DROP KEY IF EXISTS ix_placements_node,
  ADD KEY ix_placements_node (cluster, node, operation_id);
-- a task slot of a cluster other than "default" is named "<cluster>:<slot>" (steps/slots.py)
ALTER TABLE task_slots MODIFY slot VARCHAR(200) NOT NULL;
ALTER TABLE task_claims MODIFY slot VARCHAR(200) NOT NULL;
