"""The package details of the manual's products: CPU type, ``cpulimit``, ``cpuunits``, the
balloon minimum and the disks' burst pools (``*_max``), checked as PVE's schema and QEMU take
them, so a catalog that loads is a catalog PVE accepts."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pvekvm.clientfw import MAX_RULES

# qemu-server's built-in CPU models (PVE/QemuServer/CPUConfig.pm); custom models ("custom-…")
# live in the cluster's cpu-models.conf, which the engine cannot see, and are not offered.
CPU_MODELS = frozenset({
    "486", "athlon", "phenom", "core2duo", "coreduo", "kvm32", "kvm64", "qemu32", "qemu64",
    "pentium", "pentium2", "pentium3", "Conroe", "Penryn", "Nehalem", "Nehalem-IBRS",
    "Westmere", "Westmere-IBRS", "SandyBridge", "SandyBridge-IBRS", "IvyBridge",
    "IvyBridge-IBRS", "Haswell", "Haswell-IBRS", "Haswell-noTSX", "Haswell-noTSX-IBRS",
    "Broadwell", "Broadwell-IBRS", "Broadwell-noTSX", "Broadwell-noTSX-IBRS", "Skylake-Client",
    "Skylake-Client-IBRS", "Skylake-Client-noTSX-IBRS", "Skylake-Server", "Skylake-Server-IBRS",
    "Skylake-Server-noTSX-IBRS", "Cascadelake-Server", "Cascadelake-Server-noTSX",
    "Cooperlake", "Icelake-Server", "Icelake-Server-noTSX", "SapphireRapids", "GraniteRapids",
    "KnightsMill", "Opteron_G1", "Opteron_G2", "Opteron_G3", "Opteron_G4", "Opteron_G5",
    "EPYC", "EPYC-IBPB", "EPYC-Rome", "EPYC-Milan", "EPYC-Genoa", "max", "host",
    "x86-64-v2", "x86-64-v2-AES", "x86-64-v3", "x86-64-v4"})
CPULIMIT_MAX = 128          # PVE's schema: cpulimit 0..128
CPUUNITS_RANGE = (1, 262144)  # PVE 8's schema (cgroup v2 clamps to 1..10000)
DISKS = ("disk", "add_disk")
BURSTS = (("mbps_rd_max", "mbps_rd"), ("mbps_wr_max", "mbps_wr"),
          ("iops_rd_max", "iops_rd"), ("iops_wr_max", "iops_wr"))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def details_problem(p: dict[str, Any]) -> str | None:
    """Why a catalog product's details are wrong (None: fine)."""
    cpu = p.get("cpu_type")
    if cpu is not None and cpu not in CPU_MODELS:
        return (f"cpu_type {cpu!r} is not one of PVE's built-in CPU models (e.g. host, "
                "x86-64-v2-AES, kvm64)")
    limit = p.get("cpulimit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(
            limit, int | float | Decimal) or not 0 <= limit <= CPULIMIT_MAX):
        return f"cpulimit must be a number 0..{CPULIMIT_MAX} (CPUs of time), got {limit!r}"
    units = p.get("cpuunits")
    low, high = CPUUNITS_RANGE
    if units is not None and (not _whole(units) or not low <= units <= high):
        return f"cpuunits must be a whole number {low}..{high}, got {units!r}"
    balloon, memory = p.get("balloon_mb"), p.get("memory_mb")
    if balloon is not None:
        if not _whole(balloon) or balloon < 0:
            return f"balloon_mb must be a whole number of MiB >= 0, got {balloon!r}"
        if _whole(memory) and balloon > memory:
            return (f"balloon_mb ({balloon}) must not exceed memory_mb ({memory}): PVE refuses "
                    "a balloon target above the VM's memory")
    for disk in DISKS:
        for burst, base in BURSTS:
            top, rate = p.get(f"{disk}_{burst}", 0), p.get(f"{disk}_{base}", 0)
            if not _whole(top) or top < 0:
                return f"{disk}_{burst} must be a whole number >= 0, got {top!r}"
            if top and not rate:
                return (f"{disk}_{burst} needs {disk}_{base}: QEMU allows a burst pool only "
                        "over a limit")
            if top and _whole(rate) and top < rate:
                return f"{disk}_{burst} ({top}) must not be below {disk}_{base} ({rate})"
    rules = p.get("client_fw_rules", 20)
    if not _whole(rules) or not 0 <= rules <= MAX_RULES:
        return f"client_fw_rules must be 0..{MAX_RULES} (0: none allowed), got {rules!r}"
    return None
