-- Additional IPv4 addresses and routed IPv6 prefixes: a service holds one address per
-- (version, slot), slot 0 being the primary; prefix pools hand out one /assign each.
ALTER TABLE ip_pools ADD COLUMN IF NOT EXISTS assign TINYINT UNSIGNED NULL AFTER nameservers;
ALTER TABLE products ADD COLUMN IF NOT EXISTS extra_ipv4 TINYINT UNSIGNED NOT NULL DEFAULT 0 AFTER ip6_pool_id;
ALTER TABLE ip_addresses ADD COLUMN IF NOT EXISTS slot TINYINT UNSIGNED NOT NULL DEFAULT 0 AFTER ptr;
ALTER TABLE ip_addresses ADD COLUMN IF NOT EXISTS prefixlen TINYINT UNSIGNED NULL AFTER slot;
ALTER TABLE ip_addresses ADD UNIQUE KEY IF NOT EXISTS uq_ip_addresses_slot (service_id, version, slot);
ALTER TABLE ip_addresses DROP INDEX IF EXISTS uq_ip_addresses_holder;
