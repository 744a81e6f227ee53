"""DNS records for provisioned VMs: forward A/AAAA and reverse PTR, through PowerDNS, Cloudflare,
HestiaCP, RFC 2136 dynamic update (BIND, Knot, ...) or a signed webhook.

    records = plan_records(hostname, ipv4, ipv6, zones)   # pure; ValueError for bad input
    apply_records(records, zones)                         # idempotent upsert; DnsError on failure
    remove_records(hostname, ipv4, ipv6, zones)           # absent records are fine

DnsError.transient tells a retrying caller whether trying again later can help. When a host's
addresses change, call remove_records(hostname, old_ipv4, old_ipv6, zones) before applying the
new plan: apply_records replaces the A/AAAA rrsets but cannot know the old addresses' PTRs.

    check_zones(zones)                                    # ValueError for what a provider
                                                          # would refuse (catalog load)

ZoneConfig.settings per provider (all take ttl, default 3600, and timeout, default 5 s):
  powerdns:   api_url (default http://127.0.0.1:8081), api_key, server_id (default localhost)
  cloudflare: token (API token) or api_key + email (Global API Key), api_url (default
              https://api.cloudflare.com/client/v4), zone_id (optional), enterprise (ttl >= 30);
              ttl 1 (automatic) or 60..86400
  hestiacp:   api_url (https://panel:8083), hash ("ACCESS:SECRET") or user + password,
              hestia_user (owner of the DNS domain; defaults to user), verify_tls (default true),
              last_a_placeholder (IPv4 a zone's last A record becomes instead of being deleted)
  rfc2136:    server (the zone's primary), port (53), key_name + key_secret (TSIG, base64) +
              key_algorithm (hmac-sha256), or unsigned = true
  webhook:    url, secret (whsec_<base64>: Standard Webhooks signature), verify_tls
Reverse zones: RFC 2317 "0/26.c.b.a.in-addr.arpa" on PowerDNS, rfc2136 and webhook; HestiaCP takes
"0-63.c.b.a.in-addr.arpa"; Cloudflare /24, /16 and ip6.arpa zones only.
"""

from .core import apply_records, build_provider, remove_records, remove_rrsets
from .model import DnsError, DnsProvider, DnsRecord, ZoneConfig
from .plan import check_zones, plan_records

__all__ = [
    "DnsError",
    "DnsProvider",
    "DnsRecord",
    "ZoneConfig",
    "apply_records",
    "build_provider",
    "check_zones",
    "plan_records",
    "remove_records",
    "remove_rrsets",
]
