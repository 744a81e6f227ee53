"""How long reading and checking a mapping file of N lines takes (``adopt --from``), before any
VM is adopted: parsing, field checks, and the VMID/service id named-twice rule (linear).

    python bench/adopt_mapping.py [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from workers.adopt import read_mapping


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "map.csv"
        lines = ["vmid,service_id,client_id,product,node,email"]
        lines += [f"{1000 + i},{50000 + i},{i % 900 + 1},vps-small,pve{i % 3 + 1},c{i}@example.com"
                  for i in range(n - 2)]
        lines += ["1000,99999998,1,vps-small,,", "xyz,1,1,vps-small,,"]  # a VMID twice, junk
        path.write_text("\n".join(lines) + "\n")
        start = time.perf_counter()
        good, bad = read_mapping(path)
        took = time.perf_counter() - start
    print(f"{n} lines: {len(good)} mappings, {len(bad)} refused, read in {took * 1000:.0f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
