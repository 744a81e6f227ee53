-- Client tokens bound to one life of one service, stored hashed (they were derived from
-- [api] client_token_key and lived forever; tokens of that form are no longer accepted).
CREATE TABLE IF NOT EXISTS client_tokens (
  id            CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
  service_id    INT UNSIGNED NOT NULL,
  client_id     INT UNSIGNED NOT NULL,
  service_created_at DATETIME(3) NOT NULL,
  secret_sha256 VARBINARY(32) NOT NULL,
  created_by    VARCHAR(64)  NOT NULL,
  created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  expires_at    DATETIME(3)  NOT NULL,
  revoked_at    DATETIME(3)  NULL,
  revoked_why   VARCHAR(64)  NULL,
  KEY ix_client_tokens_service (service_id, revoked_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
