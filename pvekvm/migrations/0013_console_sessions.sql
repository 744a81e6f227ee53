-- Console sessions (issue 27): the console tokens the API mints and the one proxy session
-- each may open; schema.sql holds the same table.
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
