"""Benchmark: pvesim API calls/s through proxmoxer (keep-alive), 1 and 4 client threads.

Mix per iteration: GET config, GET status/current, POST config (async, returns a UPID).
Run: ``.venv/bin/python bench/bench_pvesim.py [--seconds 5]``
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

from pvesim.testing import running_simulator


def worker(sim, vmid: int, stop: threading.Event, counts: list[int], idx: int) -> None:
    px = sim.proxmox()  # one proxmoxer session (requests keep-alive) per thread
    vm = px.nodes("pve1").qemu(vmid)
    n = 0
    while not stop.is_set():
        vm.config.get()
        vm.status.current.get()
        vm.config.post(description=f"bench {n}")
        n += 3
    counts[idx] = n


def run(sim, threads: int, seconds: float) -> float:
    stop = threading.Event()
    counts = [0] * threads
    ts = [threading.Thread(target=worker, args=(sim, 9000 + i % 2, stop, counts, i))
          for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_simulator(tmp, task_time_scale=0) as sim:
        run(sim, 1, 0.5)  # warm-up
        for threads in (1, 4):
            rate = run(sim, threads, args.seconds)
            print(f"pvesim: {threads} client thread(s): {rate:.0f} calls/s "
                  "(GET config, GET status/current, POST config; proxmoxer keep-alive)")


if __name__ == "__main__":
    main()
