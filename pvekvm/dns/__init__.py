"""DNS records for provisioned VMs: forward A/AAAA and reverse PTR, through PowerDNS, Cloudflare
or HestiaCP.

    records = plan_records(hostname, ipv4, ipv6, zones)   # pure; ValueError for bad input
    apply_records(records, zones)                         # idempotent upsert; DnsError on failure
    remove_records(hostname, ipv4, ipv6, zones)           # absent records are fine

DnsError.transient tells a retrying caller whether trying again later can help.
"""

from .core import apply_records, build_provider, remove_records
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
]
