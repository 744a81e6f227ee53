-- pvekvm data model: the one source of truth for tables (MariaDB 10.6+ / MySQL 8).
-- pvekvm/models.py mirrors it; tests/test_schema.py fails when the two drift apart.
-- Idempotent: safe to apply to an existing database.

CREATE TABLE IF NOT EXISTS templates (
  id            INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name          VARCHAR(64)  NOT NULL,
  vmid          INT UNSIGNED NOT NULL,
  node          VARCHAR(64)  NOT NULL,
  os_user       VARCHAR(32)  NOT NULL DEFAULT 'root',
  os_type       VARCHAR(8)   NOT NULL DEFAULT 'linux'  -- windows: cloudbase-init (configdrive2)
                CHECK (os_type IN ('linux', 'windows')),
  ostype        VARCHAR(8)   NULL,                    -- PVE ostype set on the VM (l26, win11);
                                                      -- NULL = the template's own
  cluster       VARCHAR(64)  NOT NULL DEFAULT 'default', -- the Proxmox cluster it (and its copies) lives in
  UNIQUE KEY uq_templates_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Copies of a template on other nodes (or the original, listed to be used directly): a deploy
-- whose target node has one clones there, straight onto the product's storage, and needs no
-- migration. ``shared`` = its disks are on shared storage: it serves every node (clone with
-- ``target``). VMIDs are cluster-wide, so each copy has its own.
CREATE TABLE IF NOT EXISTS template_replicas (
  id            INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  template_id   INT UNSIGNED NOT NULL,
  node          VARCHAR(64)  NOT NULL,
  vmid          INT UNSIGNED NOT NULL,
  storage       VARCHAR(64)  NOT NULL,                -- where the copy's disks are
  shared        TINYINT(1)   NOT NULL DEFAULT 0,
  UNIQUE KEY uq_template_replicas_node (template_id, node),
  CONSTRAINT fk_template_replicas_template FOREIGN KEY (template_id) REFERENCES templates (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS ip_pools (
  id            INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name          VARCHAR(64)  NOT NULL,
  version       TINYINT UNSIGNED NOT NULL,            -- 4 or 6
  network       VARCHAR(64)  NOT NULL,                -- CIDR, e.g. 192.0.2.0/24
  gateway       VARCHAR(45)  NOT NULL,
  nameservers   VARCHAR(255) NOT NULL DEFAULT '',     -- space separated
  assign        TINYINT UNSIGNED NULL,                -- prefix pool: each service gets one /assign
                                                      -- of network (NULL = a pool of addresses)
  cluster       VARCHAR(64)  NULL DEFAULT 'default',  -- the cluster whose VMs it serves; NULL = every cluster
  UNIQUE KEY uq_ip_pools_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS products (
  id                    INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name                  VARCHAR(64)  NOT NULL,
  cores                 SMALLINT UNSIGNED NOT NULL,
  sockets               SMALLINT UNSIGNED NOT NULL DEFAULT 1,
  memory_mb             INT UNSIGNED NOT NULL,
  cpu_type              VARCHAR(64)  NULL,                    -- PVE cpu (cputype); NULL = PVE's
  cpulimit              DECIMAL(5,2) NULL,                    -- 0..128 CPUs of time; NULL = none
  cpuunits              INT UNSIGNED NULL,                    -- 1..262144 weight; NULL = PVE's
  balloon_mb            INT UNSIGNED NULL,                    -- balloon minimum memory (MiB,
                                                              -- <= memory_mb); 0 = no balloon
                                                              -- device; NULL = not set
  disk_gb               INT UNSIGNED NOT NULL,
  disk_bus              VARCHAR(8)   NOT NULL DEFAULT 'scsi',
  disk_mbps_rd          INT UNSIGNED NOT NULL DEFAULT 0,      -- 0 = unlimited
  disk_mbps_wr          INT UNSIGNED NOT NULL DEFAULT 0,
  disk_iops_rd          INT UNSIGNED NOT NULL DEFAULT 0,
  disk_iops_wr          INT UNSIGNED NOT NULL DEFAULT 0,
  disk_mbps_rd_max      INT UNSIGNED NOT NULL DEFAULT 0,      -- burst pools (PVE *_max); 0 = none
  disk_mbps_wr_max      INT UNSIGNED NOT NULL DEFAULT 0,
  disk_iops_rd_max      INT UNSIGNED NOT NULL DEFAULT 0,
  disk_iops_wr_max      INT UNSIGNED NOT NULL DEFAULT 0,
  add_disk_gb           INT UNSIGNED NOT NULL DEFAULT 0,      -- 0 = no additional disk
  add_disk_storage      VARCHAR(64)  NULL,                    -- NULL = target_storage
  add_disk_mbps_rd      INT UNSIGNED NOT NULL DEFAULT 0,
  add_disk_mbps_wr      INT UNSIGNED NOT NULL DEFAULT 0,
  add_disk_iops_rd      INT UNSIGNED NOT NULL DEFAULT 0,
  add_disk_iops_wr      INT UNSIGNED NOT NULL DEFAULT 0,
  add_disk_mbps_rd_max  INT UNSIGNED NOT NULL DEFAULT 0,
  add_disk_mbps_wr_max  INT UNSIGNED NOT NULL DEFAULT 0,
  add_disk_iops_rd_max  INT UNSIGNED NOT NULL DEFAULT 0,
  add_disk_iops_wr_max  INT UNSIGNED NOT NULL DEFAULT 0,
  net_rate_mbps         DECIMAL(8,2) NOT NULL DEFAULT 0,      -- PVE net rate, MB/s; 0 = unlimited
  bridge                VARCHAR(32)  NOT NULL DEFAULT 'vmbr0',
  vlan                  SMALLINT UNSIGNED NULL,
  template_id           INT UNSIGNED NOT NULL,
  target_node           VARCHAR(64)  NOT NULL,
  target_storage        VARCHAR(64)  NOT NULL,
  nodes                 VARCHAR(1024) NULL,                   -- the nodes it may run on, comma-
                                                              -- separated; NULL = target_node
  node_group            VARCHAR(64)  NULL,                    -- the catalog's group they came from
  dhcp                  TINYINT(1)   NOT NULL DEFAULT 0,      -- 1 = DHCP: only bandwidth, bridge
                                                              -- and VLAN (no IPs, no firewall)
  ip_pool_id            INT UNSIGNED NULL,                    -- NULL: no IPv4 managed
  ip6_pool_id           INT UNSIGNED NULL,                    -- an address pool, or a prefix pool
                                                              -- (the service gets a routed prefix)
  extra_ipv4            TINYINT UNSIGNED NOT NULL DEFAULT 0,  -- additional IPv4 from ip_pool, each
                                                              -- on its own NIC net1..netN
  snapshot_limit        SMALLINT UNSIGNED NOT NULL DEFAULT 0,
  snapshot_days         TINYINT UNSIGNED NOT NULL DEFAULT 1,  -- 1..10
  backup_limit          SMALLINT UNSIGNED NOT NULL DEFAULT 0,
  backup_storage        VARCHAR(64)  NULL,
  iso_storage           VARCHAR(64)  NULL,
  firewall_enabled      TINYINT(1)   NOT NULL DEFAULT 1,
  firewall_policy_in    VARCHAR(8)   NOT NULL DEFAULT 'ACCEPT',
  firewall_policy_out   VARCHAR(8)   NOT NULL DEFAULT 'ACCEPT',
  client_fw_rules       SMALLINT UNSIGNED NOT NULL DEFAULT 20, -- the client's own firewall
                                                              -- rules at most; 0 = none allowed
  hostname_prefix       VARCHAR(32)  NOT NULL DEFAULT 'vps',
  dns_zone              VARCHAR(253) NULL,                    -- forward zone for <host>.<zone>
  linked_clone          TINYINT(1)   NOT NULL DEFAULT 0,      -- 1 = linked clone where PVE can
                                                              -- (a template copy on the target
                                                              -- node and storage)
  traffic_quota_gb      INT UNSIGNED NULL,                    -- bytes in + out per UTC calendar
                                                              -- month, GB = 10^9; NULL = unlimited
  overage_rate_mbps     DECIMAL(8,2) NULL,                    -- net0 rate (MB/s) once over quota
  rdns_policy           VARCHAR(16)  NOT NULL DEFAULT 'owned-or-fcrdns'  -- client PTR names:
                        CHECK (rdns_policy IN ('owned', 'fcrdns', 'owned-or-fcrdns', 'off')),
                                                              -- see pvekvm/rdns_policy.py
  ssh_pwauth            TINYINT(1)   NOT NULL DEFAULT 1,      -- 0 = SSH password login off (the
                                                              -- template's cloud-init or cicustom
                                                              -- does it): keys only, no mailed password
  cicustom              VARCHAR(255) NULL,                    -- PVE cicustom set on the VM (the
                                                              -- operator's snippets, e.g. vendor=...)
  cluster               VARCHAR(64)  NOT NULL DEFAULT 'default', -- its home location (cluster);
                                                              -- others: product_locations
  UNIQUE KEY uq_products_name (name),
  CONSTRAINT fk_products_template FOREIGN KEY (template_id) REFERENCES templates (id),
  CONSTRAINT fk_products_pool4 FOREIGN KEY (ip_pool_id) REFERENCES ip_pools (id),
  CONSTRAINT fk_products_pool6 FOREIGN KEY (ip6_pool_id) REFERENCES ip_pools (id),
  CONSTRAINT ck_products_snapshot_days CHECK (snapshot_days BETWEEN 1 AND 10)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The templates a product offers (the OS picker); a product with none listed offers only its
-- own template (products.template_id).
CREATE TABLE IF NOT EXISTS product_templates (
  product_id    INT UNSIGNED NOT NULL,
  template_id   INT UNSIGNED NOT NULL,
  position      SMALLINT UNSIGNED NOT NULL DEFAULT 0,  -- the catalog's order, for the picker
  PRIMARY KEY (product_id, template_id),
  KEY ix_product_templates_template (template_id),
  CONSTRAINT fk_product_templates_product FOREIGN KEY (product_id) REFERENCES products (id),
  CONSTRAINT fk_product_templates_template FOREIGN KEY (template_id) REFERENCES templates (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS services (
  id            INT UNSIGNED NOT NULL PRIMARY KEY,    -- the billing system's service id
  client_id     INT UNSIGNED NOT NULL,
  product_id    INT UNSIGNED NOT NULL,
  template_id   INT UNSIGNED NOT NULL,
  email         VARCHAR(254) NOT NULL,
  hostname      VARCHAR(253) NOT NULL,
  status        VARCHAR(16)  NOT NULL DEFAULT 'pending', -- pending|deploying|ready|suspended|failed|terminated
  vmid          INT UNSIGNED NULL,                    -- unique: a VMID is never given twice
  node          VARCHAR(64)  NULL,
  cluster       VARCHAR(64)  NOT NULL DEFAULT 'default', -- the Proxmox cluster (location) it lives in
  macaddr       VARCHAR(17)  NULL,
  username      VARCHAR(32)  NULL,
  password_enc  VARBINARY(512) NULL,                  -- Fernet token, never plaintext
  want_ipv6     TINYINT(1)   NOT NULL DEFAULT 0,
  suspended     TINYINT(1)   NOT NULL DEFAULT 0,      -- billing suspended it: nothing may start the VM
  boot_before_iso VARCHAR(255) NULL,                  -- boot order before an ISO mount ('' = none)
  rescue_before VARCHAR(512) NULL,                    -- rescue mode: JSON of the boot order and CD
                                                      -- slot the rescue ISO replaced; NULL = not in rescue
  language      VARCHAR(35)  NULL,                    -- client's language tag (de, pt-BR); NULL = English
  throttled_period DATE      NULL,                    -- first day of the UTC month whose quota it is
                                                      -- throttled for (net0 at the overage rate); NULL = not
  ssh_keys      TEXT         NULL,                    -- the client's SSH public keys, one OpenSSH
                                                      -- line each (pvekvm/sshkeys.py); NULL = none
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  -- the host name while the service lives: unique (case-insensitive collation), so two live
  -- services never hold one name, even when two orders race. Generated: not in the models.
  live_hostname VARCHAR(253) GENERATED ALWAYS AS (IF(status = 'terminated', NULL, hostname)) STORED,
  UNIQUE KEY uq_services_vmid (vmid),
  UNIQUE KEY uq_services_live_hostname (live_hostname),
  KEY ix_services_client (client_id),
  KEY ix_services_cluster (cluster, status),
  KEY ix_services_hostname (hostname),              -- a live service's name is its own
  CONSTRAINT fk_services_product FOREIGN KEY (product_id) REFERENCES products (id),
  CONSTRAINT fk_services_template FOREIGN KEY (template_id) REFERENCES templates (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Every VMID ever given out, never deleted: a VMID is given to one service only, ever (a
-- reused VMID would mix two customers' vzdump files on shared backup storage).
CREATE TABLE IF NOT EXISTS vmid_allocations (
  vmid          INT UNSIGNED NOT NULL PRIMARY KEY,
  service_id    INT UNSIGNED NOT NULL,
  allocated_at  DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  KEY ix_vmid_allocations_service (service_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- VMIDs held before vmid_allocations existed count as given out.
INSERT IGNORE INTO vmid_allocations (vmid, service_id)
  SELECT vmid, id FROM services WHERE vmid IS NOT NULL;

CREATE TABLE IF NOT EXISTS ip_addresses (
  id            INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  pool_id       INT UNSIGNED NOT NULL,
  address       VARCHAR(45)  NOT NULL,
  version       TINYINT UNSIGNED NOT NULL,
  service_id    INT UNSIGNED NULL,                    -- NULL = free
  released_at   DATETIME(3)  NULL,                    -- set when a terminated service gives it back
  ptr           VARCHAR(253) NULL,                    -- the client's reverse DNS name (NULL = hostname)
  slot          TINYINT UNSIGNED NOT NULL DEFAULT 0,  -- 0 = the primary address; N = extra IPv4 N (netN)
  prefixlen     TINYINT UNSIGNED NULL,                -- a routed prefix address/prefixlen (NULL = one address)
  UNIQUE KEY uq_ip_addresses_address (address),
  UNIQUE KEY uq_ip_addresses_slot (service_id, version, slot), -- a service holds each slot once
  KEY ix_ip_addresses_free (pool_id, service_id, released_at),
  CONSTRAINT fk_ip_addresses_pool FOREIGN KEY (pool_id) REFERENCES ip_pools (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS operations (
  id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  service_id      INT UNSIGNED NOT NULL,
  kind            VARCHAR(32)  NOT NULL,              -- deploy|change_package|reinstall|restore|...
  idempotency_key VARCHAR(128) NOT NULL,
  request_hash    CHAR(64)     NULL,                  -- what the event asked (events.request_hash):
                                                      -- the same key for another order is refused
  params          TEXT         NOT NULL,              -- JSON: the event's arguments (no secrets)
  state           VARCHAR(48)  NOT NULL,              -- last state reached (vm_state-like)
  status          VARCHAR(16)  NOT NULL DEFAULT 'running', -- queued|running|paused|done|failed|cancelled
  prior_status    VARCHAR(16)  NULL,                  -- service status before it ran (fail/cancel restore it)
  active_service  INT UNSIGNED NULL,                  -- = service_id while not finished: one op per VM
  version         INT UNSIGNED NOT NULL DEFAULT 0,    -- bumped by every compare-and-swap
  nudge_id        CHAR(36)     NULL,                  -- the one live nudge message for this op
  prev_nudge_id   CHAR(36)     NULL,                  -- the nudge that caused the last change
  nudge_published TINYINT(1)   NOT NULL DEFAULT 0,    -- confirm received for nudge_id
  nudge_delay_s   DECIMAL(8,3) NOT NULL DEFAULT 0,
  attempt         SMALLINT UNSIGNED NOT NULL DEFAULT 0,
  error           TEXT         NULL,
  upid            VARCHAR(255) NULL,                  -- running Proxmox task, polled by nudges
  upid_node       VARCHAR(64)  NULL,
  polls           SMALLINT UNSIGNED NOT NULL DEFAULT 0,
  step_started_at DATETIME(3)  NULL,
  paused_at       DATETIME(3)  NULL,                  -- when it last paused (a fault)
  paused_since    DATETIME(3)  NULL,                  -- first pause since an operator's resume or
                                                      -- progress: auto-resume gives up
                                                      -- auto_resume_for_h after it
  auto_resumes    SMALLINT UNSIGNED NOT NULL DEFAULT 0, -- resumed by itself so far
  auto_resume_at  DATETIME(3)  NULL,                  -- next auto-resume; NULL: waits for an operator
  pause_dependency VARCHAR(16) NULL,                  -- proxmox|database|mail|dns whose fault paused it
  created_at      DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at      DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  finished_at     DATETIME(3)  NULL,
  UNIQUE KEY uq_operations_idempotency (idempotency_key),
  UNIQUE KEY uq_operations_active (active_service),
  KEY ix_operations_service_status (service_id, status, id), -- next queued: FOR UPDATE
  KEY ix_operations_progress (status, updated_at),
  KEY ix_operations_auto_resume (status, auto_resume_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS outbox (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  event_id      CHAR(36)     NOT NULL,                -- stable: billing de-duplicates by it
  type          VARCHAR(48)  NOT NULL,                -- routing key on {ns}.events
  service_id    INT UNSIGNED NULL,
  operation_id  BIGINT UNSIGNED NULL,
  body          TEXT         NOT NULL,                -- the JSON message; never a secret
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  published_at  DATETIME(3)  NULL,                    -- confirmed by the broker
  seq           BIGINT UNSIGNED NULL,                 -- feed position, in commit order (webhooks)
  UNIQUE KEY uq_outbox_event (event_id),
  UNIQUE KEY uq_outbox_seq (seq),
  KEY ix_outbox_unpublished (published_at, id),
  KEY ix_outbox_service (service_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- webhooks and the pull feed: workers/webhooks.py, pvekvm/webhooks/
CREATE TABLE IF NOT EXISTS feed_sequencer (
  id            TINYINT UNSIGNED NOT NULL PRIMARY KEY,  -- one row: the sequencer's lock
  updated_at    DATETIME(3) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS webhook_endpoints (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name          VARCHAR(64)   NOT NULL,
  origin        VARCHAR(8)    NOT NULL,                 -- settings | api
  owner         VARCHAR(64)   NULL,                     -- billing token that registered it (api)
  scope         VARCHAR(64)   NULL,                     -- token whose [api.scopes] limit it; NULL: all
  url           VARCHAR(2048) NOT NULL,
  event_types   VARCHAR(2000) NOT NULL,                 -- JSON list: "type", "prefix.*" or "*"
  secrets_enc   TEXT          NOT NULL,                 -- Fernet of the JSON list of whsec_ secrets
  fanned_seq    BIGINT UNSIGNED NOT NULL DEFAULT 0,     -- deliveries exist for every seq up to it
  live_key      VARCHAR(140)  NULL,                     -- origin:owner:name while not deleted
  created_at    DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  deleted_at    DATETIME(3)   NULL,
  UNIQUE KEY uq_webhook_endpoints_live (live_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS webhook_deliveries (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  endpoint_id   BIGINT UNSIGNED NOT NULL,
  seq           BIGINT UNSIGNED NOT NULL,
  service_id    INT UNSIGNED    NOT NULL DEFAULT 0,     -- 0: an event that names no service
  status        VARCHAR(10)     NOT NULL DEFAULT 'queued',  -- queued|delivered|parked|dropped
  attempts      SMALLINT UNSIGNED NOT NULL DEFAULT 0,
  last_status   SMALLINT        NULL,                   -- the receiver's last HTTP status
  last_error    VARCHAR(1000)   NULL,
  created_at    DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  delivered_at  DATETIME(3)     NULL,
  UNIQUE KEY uq_webhook_deliveries (endpoint_id, seq),
  KEY ix_webhook_deliveries_stream (endpoint_id, service_id, status, seq),
  KEY ix_webhook_deliveries_status (endpoint_id, status),
  KEY ix_webhook_deliveries_done (delivered_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS webhook_streams (
  endpoint_id   BIGINT UNSIGNED NOT NULL,
  service_id    INT UNSIGNED    NOT NULL,
  head_seq      BIGINT UNSIGNED NULL,                   -- the event to send now; NULL: caught up
  attempts      SMALLINT UNSIGNED NOT NULL DEFAULT 0,   -- failed attempts of the head
  next_attempt_at DATETIME(3)   NULL,                   -- NULL: nothing due (idle or parked)
  first_failed_at DATETIME(3)   NULL,
  lease_owner   VARCHAR(64)     NULL,                   -- the deliverer sending the head
  lease_until   DATETIME(3)     NULL,
  parked_reason VARCHAR(1000)   NULL,                   -- set: the stream waits for an operator
  PRIMARY KEY (endpoint_id, service_id),
  KEY ix_webhook_streams_due (next_attempt_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS traffic_usage (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  service_id    INT UNSIGNED NOT NULL,
  period_start  DATETIME     NOT NULL,                -- UTC hour the bytes were moved in
  bytes_in      DECIMAL(24,3) NOT NULL DEFAULT 0,     -- sum of rrddata netin (B/s) x step
  bytes_out     DECIMAL(24,3) NOT NULL DEFAULT 0,
  UNIQUE KEY uq_traffic_usage_period (service_id, period_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS traffic_cursors (
  service_id    INT UNSIGNED NOT NULL PRIMARY KEY,
  vmid          INT UNSIGNED NOT NULL,                -- the VM whose RRD series was read
  counted_from  BIGINT       NOT NULL,                -- unix time: first RRD row counted
  counted_to    BIGINT       NOT NULL,                -- unix time: rows before it are counted
  missed_s      BIGINT UNSIGNED NOT NULL DEFAULT 0,   -- seconds no longer in the RRD when read
  updated_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS held_events (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  service_id    INT UNSIGNED NOT NULL,                -- a service whose create has not arrived yet
  idempotency_key VARCHAR(128) NOT NULL,
  body          MEDIUMBLOB   NOT NULL,                -- the event as billing sent it
  received_at   DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  expires_at    DATETIME(3)  NOT NULL,                -- refused ('no create') after this
  UNIQUE KEY uq_held_events_key (idempotency_key),
  KEY ix_held_events_service (service_id, id),
  KEY ix_held_events_expiry (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS step_runs (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  operation_id  BIGINT UNSIGNED NOT NULL,
  service_id    INT UNSIGNED NOT NULL,
  vmid          INT UNSIGNED NULL,
  label         VARCHAR(64)  NOT NULL,
  from_state    VARCHAR(48)  NOT NULL,
  to_state      VARCHAR(48)  NOT NULL,
  result        VARCHAR(8)   NOT NULL,                -- success|skip|warn|retry|error
  duration_ms   INT UNSIGNED NOT NULL,
  message       TEXT         NULL,
  worker        VARCHAR(64)  NOT NULL DEFAULT '',
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  KEY ix_step_runs_operation (operation_id, id),
  KEY ix_step_runs_service (service_id, id),
  CONSTRAINT fk_step_runs_operation FOREIGN KEY (operation_id) REFERENCES operations (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS snapshots (
  id            INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  service_id    INT UNSIGNED NOT NULL,
  name          VARCHAR(40)  NOT NULL,
  description   VARCHAR(255) NOT NULL DEFAULT '',
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  expires_at    DATETIME(3)  NOT NULL,
  UNIQUE KEY uq_snapshots_name (service_id, name),
  KEY ix_snapshots_expiry (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS backups (
  id            INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  service_id    INT UNSIGNED NOT NULL,
  volid         VARCHAR(255) NOT NULL,
  storage       VARCHAR(64)  NOT NULL,
  node          VARCHAR(64)  NOT NULL,
  size_bytes    BIGINT UNSIGNED NOT NULL DEFAULT 0,
  scheduled     TINYINT(1)   NOT NULL DEFAULT 0,
  note          VARCHAR(255) NOT NULL DEFAULT '',
  operation_id  BIGINT UNSIGNED NULL,                 -- the backup_create that made it
  template_id   INT UNSIGNED NULL,                    -- what the VM ran when backed up: a
  username      VARCHAR(32)  NULL,                    -- restore brings these back into the
  password_enc  VARBINARY(512) NULL,                  -- service row (NULL: not recorded)
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  UNIQUE KEY uq_backups_volid (volid),
  KEY ix_backups_service (service_id, created_at),
  KEY ix_backups_operation (operation_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS backup_schedules (
  service_id    INT UNSIGNED NOT NULL PRIMARY KEY,
  days          VARCHAR(32)  NOT NULL,                -- e.g. 'mon,wed,fri'; '' = off
  minute_of_day SMALLINT UNSIGNED NOT NULL,           -- random per save, spreads storage load
  updated_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  CONSTRAINT ck_backup_schedules_minute CHECK (minute_of_day < 1440)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS dns_providers (
  id            INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name          VARCHAR(64)  NOT NULL,
  kind          VARCHAR(16)  NOT NULL,                -- powerdns|cloudflare|hestiacp
  settings_enc  VARBINARY(4096) NOT NULL,             -- Fernet-encrypted JSON (API keys)
  UNIQUE KEY uq_dns_providers_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS dns_zones (
  id            INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name          VARCHAR(253) NOT NULL,                -- forward or reverse (in-addr.arpa / ip6.arpa)
  provider_id   INT UNSIGNED NOT NULL,
  UNIQUE KEY uq_dns_zones_name (name),
  CONSTRAINT fk_dns_zones_provider FOREIGN KEY (provider_id) REFERENCES dns_providers (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS dns_records (
  id            INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  service_id    INT UNSIGNED NOT NULL,
  zone          VARCHAR(253) NOT NULL,
  name          VARCHAR(253) NOT NULL,
  type          VARCHAR(8)   NOT NULL,
  content       VARCHAR(255) NOT NULL,
  synced        TINYINT(1)   NOT NULL DEFAULT 0,      -- 0 = the retry job still owes it
  held_by       INT UNSIGNED NULL,                    -- another service owns this name: not
                                                      -- published; retried until it is free
  error         TEXT         NULL,
  updated_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  UNIQUE KEY uq_dns_records (service_id, name, type, content),
  KEY ix_dns_records_pending (synced),
  KEY ix_dns_records_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS emails (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  operation_id  BIGINT UNSIGNED NOT NULL,
  template      VARCHAR(32)  NOT NULL,
  recipient     VARCHAR(254) NOT NULL,
  sent_at       DATETIME(3)  NULL,
  UNIQUE KEY uq_emails_once (operation_id, template)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS dead_letters (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  source        VARCHAR(128) NOT NULL,                -- queue the message came from
  reason        TEXT         NOT NULL,
  body          MEDIUMBLOB   NOT NULL,
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS audit_log (
  id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  service_id    INT UNSIGNED NULL,
  operation_id  BIGINT UNSIGNED NULL,
  event         VARCHAR(64)  NOT NULL,
  detail        TEXT         NOT NULL,
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  KEY ix_audit_log_service (service_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;


-- Client tokens (pvekvm/tokens.py writes them): one service's, for one life of its id (the
-- services row's client_id and created_at when minted; a re-created id is another life). Only
-- the SHA-256 of the secret is kept; a token ends when it expires, is revoked (one by one, or
-- all of the service's at terminate) or its service is terminated or re-created.
CREATE TABLE IF NOT EXISTS client_tokens (
  id            CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, -- public
  service_id    INT UNSIGNED NOT NULL,
  client_id     INT UNSIGNED NOT NULL,
  service_created_at DATETIME(3) NOT NULL,            -- the life it was minted for
  secret_sha256 VARBINARY(32) NOT NULL,
  created_by    VARCHAR(64)  NOT NULL,                -- the billing token's name
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  expires_at    DATETIME(3)  NOT NULL,
  revoked_at    DATETIME(3)  NULL,
  revoked_why   VARCHAR(64)  NULL,                    -- 'revoked by billing:whmcs', 'terminated'
  KEY ix_client_tokens_service (service_id, revoked_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Console sessions (pvekvm/consoletokens.py writes them; issue 27): one row per console token
-- the API mints, and the one browser session it may open through the console proxy. The token
-- is single use (used_at), connectable until connect_by, bound to one life of the service
-- (client_id, service_created_at), to the client token it was minted with (the session ends
-- with it) and, when set, to the browser's address. Only the SHA-256 of the secret is kept.
CREATE TABLE IF NOT EXISTS console_sessions (
  id            CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, -- public
  service_id    INT UNSIGNED NOT NULL,
  client_id     INT UNSIGNED NOT NULL,
  service_created_at DATETIME(3) NOT NULL,            -- the life it was minted for
  secret_sha256 VARBINARY(32) NOT NULL,
  client_token_id CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NULL, -- minted with it
  bound_address VARCHAR(45)  NULL,                    -- only this browser address may connect
  created_by    VARCHAR(64)  NOT NULL,                -- 'billing:whmcs', 'client:7101/<id>'
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  connect_by    DATETIME(3)  NOT NULL,                -- the token's short life
  used_at       DATETIME(3)  NULL,                    -- the one connection (or refusal) it had
  peer          VARCHAR(45)  NULL,                    -- the browser's address
  proxy         VARCHAR(96)  NULL,                    -- host:pid of the proxy serving it
  seen_at       DATETIME(3)  NULL,                    -- the proxy's last heartbeat for it
  ended_at      DATETIME(3)  NULL,
  end_reason    VARCHAR(96)  NULL,
  bytes_up      BIGINT UNSIGNED NOT NULL DEFAULT 0,   -- browser -> VM
  bytes_down    BIGINT UNSIGNED NOT NULL DEFAULT 0,   -- VM -> browser
  KEY ix_console_sessions_open (service_id, ended_at),
  KEY ix_console_sessions_connect_by (connect_by)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Schema version. `python -m pvekvm init-db` applies this file (every statement is idempotent),
-- then the migrations in pvekvm/migrations/ (NNNN_name.sql) newer than the recorded version, in
-- order, recording each. This file always describes the latest version: a fresh database is
-- stamped with the newest migration number at once.
CREATE TABLE IF NOT EXISTS schema_version (
  version       INT UNSIGNED NOT NULL PRIMARY KEY,
  name          VARCHAR(128) NOT NULL,
  applied_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Task slots (steps/slots.py): where PVE runs a bounded number of tasks of a kind — full clones
-- per node+storage (its storage lock), backups per node (vzdump's global lock). One row per
-- place, locked FOR UPDATE while a worker decides whether its task may start there.
CREATE TABLE IF NOT EXISTS task_slots (
  slot          VARCHAR(200) NOT NULL PRIMARY KEY     -- "<node>/<storage>", "vzdump/<node>"
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Which slot an operation's next task needs: waiting (its operation at a slot state with no
-- task) or running (a task of the slot's type). The oldest waiting operation takes the next turn.
CREATE TABLE IF NOT EXISTS task_claims (
  operation_id  BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  slot          VARCHAR(200) NOT NULL,
  KEY ix_task_claims_slot (slot, operation_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Nodes in maintenance (no new placements; deploys do not target them) or being drained (every
-- VM of ours is moved off, a bounded number at a time): pvekvm/nodes.py. ``drain_round`` is
-- part of each drain move's idempotency key, so a crashed drainer never starts a move twice.
CREATE TABLE IF NOT EXISTS nodes (
  cluster       VARCHAR(64)  NOT NULL DEFAULT 'default', -- node names repeat across clusters
  name          VARCHAR(64)  NOT NULL,
  maintenance   TINYINT(1)   NOT NULL DEFAULT 0,
  draining      TINYINT(1)   NOT NULL DEFAULT 0,
  drain_round   INT UNSIGNED NOT NULL DEFAULT 0,
  updated_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (cluster, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The node an operation places its VM on, written once when first chosen (pvekvm/placement.py):
-- a migration's target (``source``: where it started), a deploy's node when the product's is in
-- maintenance. Read again by every later step, so the choice never changes mid-operation.
CREATE TABLE IF NOT EXISTS placements (
  operation_id  BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  service_id    INT UNSIGNED NOT NULL,
  source        VARCHAR(64)  NULL,
  node          VARCHAR(64)  NOT NULL,
  why           VARCHAR(500) NULL,                    -- the placement's reason (history, ready)
  cluster       VARCHAR(64)  NOT NULL DEFAULT 'default', -- the service's cluster (node names repeat)
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  KEY ix_placements_node (cluster, node, operation_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- A product offered in another location (cluster) than its home one (products.cluster): there
-- it deploys from that cluster's template, onto that cluster's node/storage and pools; every
-- other key of the package is the product's. The create event's ``location`` picks the row.
CREATE TABLE IF NOT EXISTS product_locations (
  product_id    INT UNSIGNED NOT NULL,
  cluster       VARCHAR(64)  NOT NULL,
  template_id   INT UNSIGNED NOT NULL,
  target_node   VARCHAR(64)  NOT NULL,
  target_storage VARCHAR(64) NOT NULL,
  ip_pool_id    INT UNSIGNED NULL,
  ip6_pool_id   INT UNSIGNED NULL,
  PRIMARY KEY (product_id, cluster),
  CONSTRAINT fk_product_locations_product FOREIGN KEY (product_id) REFERENCES products (id),
  CONSTRAINT fk_product_locations_template FOREIGN KEY (template_id) REFERENCES templates (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The client's own firewall rules (firewall_rules_set; pvekvm/clientfw.py), applied after the
-- engine's anti-spoofing by steps/firewall.py on every (re)configured VM.
CREATE TABLE IF NOT EXISTS client_firewall_rules (
  service_id    INT UNSIGNED NOT NULL PRIMARY KEY,
  rules         MEDIUMTEXT   NOT NULL,                -- JSON: the parsed rules, in PVE order
  operation_id  BIGINT UNSIGNED NULL,                 -- the firewall_rules_set that saved them
  updated_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- What an in-flight deploy will take on its node (pvekvm/placement.py), counted by every other
-- placement until the VM is on that node (then deleted) or the operation ends; ``node`` NULL:
-- no node fits yet, it waits since ``waiting_since`` for ``reason``.
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
