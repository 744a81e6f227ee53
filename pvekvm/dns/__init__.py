"""DNS records for provisioned VMs: forward A/AAAA and reverse PTR, through PowerDNS, Cloudflare
or HestiaCP.

    records = plan_records(hostname, ipv4, ipv6, zones)   # pure; ValueError for bad input
    apply_records(records, zones)                         # idempotent upsert; DnsError on failure
    remove_records(hostname, ipv4, ipv6, zones)           # absent records are fine

DnsError.transient tells a retrying caller whether trying again later can help. When a host's
addresses change, call remove_records(hostname, old_ipv4, old_ipv6, zones) before applying the
new plan: apply_records replaces the A/AAAA rrsets but cannot know the old addresses' PTRs.

ZoneConfig.settings per provider (all take ttl, default 3600, and timeout, default 5 s):
  powerdns:   api_url (default http://127.0.0.1:8081), api_key, server_id (default localhost)
  cloudflare: token, api_url (default https://api.cloudflare.com/client/v4), zone_id (optional)
  hestiacp:   api_url (https://panel:8083), hash ("ACCESS:SECRET") or user + password,
              hestia_user (owner of the DNS domain; defaults to user), verify_tls (default true)
"""

from .core import apply_records, build_provider, remove_records, remove_rrsets
from .model import DnsError, DnsProvider, DnsRecord, ZoneConfig
from .plan import plan_records

__all__ = [
    "DnsError",
    "DnsProvider",
    "DnsRecord",
    "ZoneConfig",
    "apply_records",
    "build_provider",
    "plan_records",
    "remove_records",
    "remove_rrsets",
]
