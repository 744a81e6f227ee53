-- Client reverse DNS: the PTR name a client set for one of its addresses (NULL = hostname).
ALTER TABLE ip_addresses ADD COLUMN IF NOT EXISTS ptr VARCHAR(253) NULL AFTER released_at;
