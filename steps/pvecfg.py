"""Reading and writing Proxmox property strings (``local-lvm:vm-100-disk-0,size=10G``)."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")
_UNIT_GB = {"": 1 / 1024**3, "K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}


def parse(value: str, default_key: str) -> dict[str, str]:
    """``'a,b=1'`` → ``{default_key: 'a', 'b': '1'}``."""
    out: dict[str, str] = {}
    for part in value.split(","):
        if not part:
            continue
        key, sep, val = part.partition("=")
        if sep:
            out[key] = val
        else:
            out[default_key] = key
    return out


def render(props: dict[str, str], default_key: str) -> str:
    """Inverse of :func:`parse`: the default key first, without ``key=``."""
    head = [props[default_key]] if default_key in props else []
    return ",".join(head + [f"{k}={v}" for k, v in props.items() if k != default_key])


def size_gb(size: str) -> float:
    m = _SIZE.match(size.strip().upper())
    if not m:
        raise ValueError(f"unreadable disk size {size!r}")
    return float(m.group(1)) * _UNIT_GB[m.group(2)]


def storage_of(volume: str) -> str:
    return volume.split(":", 1)[0]
