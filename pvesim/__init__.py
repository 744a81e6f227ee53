"""pvesim - a Proxmox VE 8.4 API simulator (HTTPS ``/api2/json``) for tests and benchmarks.

Start it
    ``python -m pvesim --port 0 --state-dir DIR --task-time-scale 0 --connection-file conn.json``
    (see ``python -m pvesim --help``). The connection file (JSON) holds ``base_url``, ``host``,
    ``port``, ``nodes``, ``user``/``password`` (ticket auth), ``token_id``/``token_name``/
    ``token_secret`` (API token ``root@pam!pvekvm``), ``ca_bundle`` (verify TLS with it),
    ``control_url``, ``templates`` ({name: {vmid, node, storage}}) and ``storages``.

In tests (stable API)::

    from pvesim.testing import running_simulator

    with running_simulator(tmp_path, task_time_scale=0, faults=None) as sim:
        px = sim.proxmox()                    # proxmoxer.ProxmoxAPI (token + CA bundle)
        upid = px.nodes("pve1").qemu(9000).clone.post(newid=200, name="vm200")
        sim.wait_task(upid)                   # -> task status dict, exitstatus "OK"
        sim.vm(200)                           # raw state copy: config, status, snapshots, ...
        sim.set_faults(error_rate=1.0)        # see pvesim.faults.Faults
        sim.connection                        # the connection dict above

Control endpoints (outside ``/api2/json``, no auth): ``GET|PUT /_sim/faults``,
``POST /_sim/reset`` (body ``{"state": true}`` also resets the cluster), ``GET /_sim/vms``,
``GET /_sim/vms/{vmid}``, ``GET /_sim/tasks``, ``GET /_sim/connection``.

Cluster: nodes pve1..pve3; storages local (dir), local-lvm (lvmthin), nfs-shared, backup, iso;
templates 9000 debian-12-cloud, 9001 ubuntu-2204-cloud (pve1 local-lvm), 9002
almalinux-9-cloud (nfs-shared). Errors follow PVE: 400 "Parameter verification failed." with
``errors``; 500 with the message as HTTP reason (e.g. ``VM is locked (clone)``); 401 "No ticket".
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
