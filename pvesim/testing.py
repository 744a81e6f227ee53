"""Test helpers: run pvesim in-process on a free port.

Example::

    from pvesim.testing import running_simulator

    def test_clone(tmp_path):
        with running_simulator(tmp_path, task_time_scale=0) as sim:
            px = sim.proxmox()
            upid = px.nodes("pve1").qemu(9000).clone.post(newid=123, name="web1")
            assert sim.wait_task(upid)["exitstatus"] == "OK"
            assert sim.vm(123)["config"]["name"] == "web1"
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .faults import Faults
from .limits import Limits
from .server import Simulator


class RunningSimulator:
    """Handle yielded by :func:`running_simulator`."""

    def __init__(self, sim: Simulator):
        self.sim = sim
        self.connection: dict[str, Any] = sim.connection()

    def proxmox(self, **kw: Any) -> Any:
        """A ``proxmoxer.ProxmoxAPI`` using the API token and the simulator's CA bundle."""
        from proxmoxer import ProxmoxAPI

        c = self.connection
        return ProxmoxAPI(c["host"], port=c["port"], user=c["user"],
                          token_name=c["token_name"], token_value=c["token_secret"],
                          verify_ssl=c["ca_bundle"], timeout=kw.pop("timeout", 30), **kw)

    def proxmox_ticket(self, **kw: Any) -> Any:
        """A ``proxmoxer.ProxmoxAPI`` using password (ticket) authentication."""
        from proxmoxer import ProxmoxAPI

        c = self.connection
        return ProxmoxAPI(c["host"], port=c["port"], user=c["user"], password=c["password"],
                          verify_ssl=c["ca_bundle"], **kw)

    def set_faults(self, **kw: Any) -> None:
        """Replace the fault settings (see :class:`pvesim.faults.Faults`); no args clears."""
        self.sim.faults = Faults.from_dict(kw)

    def set_task_time_scale(self, scale: float) -> None:
        """Task durations for tasks started from now on (0 = at once, 1 = realistic)."""
        self.sim.tasks.scale = scale

    def set_api(self, node: str, up: bool) -> None:
        """Take a node's API down (listener refuses, open connections cut) or bring it back."""
        self.sim.set_api(node, up)

    def set_node(self, node: str, **hardware: int) -> dict[str, int]:
        """Change a node's ``maxmem``/``maxcpu``/``host_mem`` (bytes, threads), or add a node
        to the cluster (as ``PUT /_sim/nodes/NODE`` does)."""
        with self.sim.cluster.lock:
            return self.sim.cluster.set_node(node, **hardware)

    def set_storage(self, storage: str, total: int) -> None:
        """Change a storage's size (bytes), as ``PUT /_sim/storages/STORAGE`` does."""
        with self.sim.cluster.lock:
            self.sim.cluster.set_storage(storage, total)

    def set_limits(self, **kw: Any) -> None:
        """Replace the concurrency limits (see :class:`pvesim.limits.Limits`)."""
        self.sim.apis.limits = Limits.from_dict(kw)

    def limit_stats(self) -> dict[str, int]:
        """proxy_timeouts, lock_timeouts, late_runs, most_waiting so far."""
        return dict(self.sim.apis.stats)

    def hold_lock(self, vmid: int, seconds: float) -> None:
        """Hold a VM's config lock for ``seconds`` (as a backup or an operator would)."""
        self.sim.apis.hold_lock(vmid, seconds)

    def reset(self, state: bool = False) -> None:
        self.sim.reset(state)

    def vm(self, vmid: int) -> dict[str, Any] | None:
        """Deep copy of the raw VM state (config, pending, snapshots, status, firewall...)."""
        with self.sim.cluster.lock:
            vm = self.sim.cluster.vms.get(int(vmid))
            return copy.deepcopy(vm)

    def task(self, upid: str) -> dict[str, Any]:
        with self.sim.cluster.lock:
            return self.sim.tasks.tasks[upid].status_dict()

    def wait_task(self, upid: str, timeout: float = 10.0) -> dict[str, Any]:
        """Block until the task stopped; return its status dict (exitstatus etc.)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.task(upid)
            if st["status"] == "stopped":
                return st
            time.sleep(0.005)
        raise TimeoutError(f"task {upid} still running after {timeout}s")


@contextlib.contextmanager
def running_simulator(tmp_path: Path | str, task_time_scale: float = 0,
                      faults: dict[str, Any] | None = None, limits: dict[str, Any] | None = None,
                      state_name: str = "pvesim", **kw: Any) -> Iterator[RunningSimulator]:
    """Start pvesim on 127.0.0.1 on a free port (state/certs in ``tmp_path``/``state_name``;
    ``per_node_api=True``: a listener per node); stop on exit."""
    sim = Simulator(host="127.0.0.1", port=0, state_dir=Path(tmp_path) / state_name,
                    task_time_scale=task_time_scale, faults=Faults.from_dict(faults),
                    limits=Limits.from_dict(limits), **kw)
    sim.start()
    try:
        yield RunningSimulator(sim)
    finally:
        sim.shutdown()


@contextlib.contextmanager
def running_clusters(tmp_path: Path | str, names: tuple[str, ...] = ("default", "ams"),
                     **kw: Any) -> Iterator[dict[str, RunningSimulator]]:
    """Several Proxmox clusters at once: one pvesim per name, each with its own state dir
    (``tmp_path``/``pvesim-NAME``), CA and port; stopped on exit. ``kw`` as for
    :func:`running_simulator` (the same for each)."""
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(running_simulator(tmp_path, state_name=f"pvesim-{name}",
                                                           **kw))
               for name in names}
