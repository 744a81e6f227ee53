-- Webhooks and the pull feed (issue 29): every outbox row gets a feed position (seq), handed
-- out in commit order by the deliverer's sequencer (workers/webhooks.py) under the one row of
-- feed_sequencer; rows written before this release take their id. Endpoints (settings or
-- POST /v1/webhooks), one delivery row per (endpoint, event), one stream row per (endpoint,
-- service) that holds the event being sent, its retries, lease and parking.
ALTER TABLE outbox
  ADD COLUMN IF NOT EXISTS seq BIGINT UNSIGNED NULL AFTER published_at,
  ADD UNIQUE KEY IF NOT EXISTS uq_outbox_seq (seq);
UPDATE outbox SET seq = id WHERE seq IS NULL;

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
