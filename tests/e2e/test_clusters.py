"""Two Proxmox clusters served by one engine (issue 24 item 1), through the real path: RabbitMQ,
MariaDB, workers and two pvesims (each its own state, CA and port). A product offered in both
locations deploys where the order says, from that cluster's template and pool; a location
that does not offer a product is refused with the reason; the catalog refuses a product whose
template lives in another cluster; ``resume --cluster`` and the per-cluster auto-resume probe
touch only that cluster's paused work; the metrics carry the cluster."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from producers.api import OrderClient
from pvekvm import catalog, messaging, metrics, preflight, proxmox
from pvekvm.apps.cli.main import main
from pvekvm.catalog_check import validate
from pvekvm.config import ROOT, ClusterSettings, ProxmoxSettings, Settings
from pvekvm.models import DeadLetter, IpAddress, IpPool, Operation, Service
from pvesim.testing import RunningSimulator, running_clusters
from tests.e2e.test_observability import scrape
from workers import autoresume, drain, traffic
from workers.operations import OpStatus
from workers.testing.harness import (
    InProcessWorkers,
    all_ready,
    describe_ops,
    wait_until,
    write_config,
)

AMS_POOL = {"name": "ams-v4", "version": 4, "network": "198.51.100.0/24",
            "gateway": "198.51.100.1", "first": "198.51.100.10", "last": "198.51.100.60",
            "cluster": "ams"}


@pytest.fixture()
def fleet_sims(tmp_path) -> Iterator[dict[str, RunningSimulator]]:
    with running_clusters(tmp_path, ("default", "ams"), task_time_scale=0) as sims:
        yield sims


@pytest.fixture()
def sim(fleet_sims) -> RunningSimulator:
    """The e2e settings fixture's pvesim: the first cluster's."""
    return fleet_sims["default"]


def two_cluster_catalog() -> dict:
    """The shipped catalog, its public IPv6 pool shared by both clusters, plus Amsterdam's
    template (the same VMID in its own cluster) and IPv4 pool, and vps-small offered there."""
    data = tomllib.loads((ROOT / "config" / "catalog.toml").read_text())
    data["templates"].append({"name": "debian-12-ams", "vmid": 9000, "node": "pve1",
                              "os_user": "debian", "cluster": "ams"})
    for pool in data["ip_pools"]:
        if pool["name"] == "public-v6":
            pool["shared"] = True
    data["ip_pools"].append(dict(AMS_POOL))
    small = next(p for p in data["products"] if p["name"] == "vps-small")
    small["locations"] = {"ams": {"template": "debian-12-ams", "ip_pool": "ams-v4"}}
    return data


@pytest.fixture()
def fleet(settings, fleet_sims) -> Settings:
    """The test's settings with a second cluster, ``ams`` (VMIDs from 5000: its own range),
    and the two-cluster catalog."""
    ams = ProxmoxSettings.from_connection(fleet_sims["ams"].connection)
    both = replace(settings, clusters=(ClusterSettings("default", settings.proxmox),
                                       ClusterSettings("ams", ams, vmid_min=5000,
                                                       vmid_max=5999)))
    assert validate(two_cluster_catalog(), "catalog") == []
    catalog.load(two_cluster_catalog(), settings.secret_key_file, both.cluster_names)
    from pvekvm.catalog_cache import _catalog

    _catalog.clear()
    return both


def _ours(sim: RunningSimulator) -> set[int]:
    with sim.sim.cluster.lock:
        return {v for v, vm in sim.sim.cluster.vms.items()
                if str(vm["config"].get("template", "0")) != "1"}


def _refused(text: str):
    return lambda: DeadLetter.select().where(DeadLetter.reason.contains(text)).first()


def test_orders_deploy_in_the_location_they_name_and_others_are_refused(fleet, fleet_sims):
    # a catalog loaded by a host whose settings name a third cluster this engine lacks
    data = two_cluster_catalog()
    small = next(p for p in data["products"] if p["name"] == "vps-small")
    par = {k: v for k, v in small.items()  # the OS offer is of the home cluster's templates
           if k not in ("ip_pool", "ip6_pool", "locations", "templates")}
    catalog.load({"templates": [{"name": "debian-12-par", "vmid": 9000, "node": "pve1",
                                 "cluster": "par"}],
                  "products": [{**par, "name": "vps-par", "template": "debian-12-par",
                                "cluster": "par"}]},
                 fleet.secret_key_file, ("default", "ams", "par"))
    # node names repeat across clusters: Amsterdam's pve2 in maintenance, the default one's not
    drain.set_maintenance("pve2", True, "ams")
    with InProcessWorkers(fleet, concurrency=4), \
            OrderClient(fleet.amqp_url, fleet.namespace) as billing:
        billing.create(service_id=9601, client_id=1, product="vps-small",
                       email="a@example.com", location="default")
        billing.create(service_id=9602, client_id=2, product="vps-small",
                       email="b@example.com", location="ams")
        billing.create(service_id=9603, client_id=3, product="vps-small",
                       email="c@example.com")  # offered in two locations: which?
        billing.create(service_id=9604, client_id=4, product="vps-large",
                       email="d@example.com", location="ams")  # not offered there
        billing.create(service_id=9605, client_id=5, product="vps-par",
                       email="e@example.com")  # its only location: not one of ours
        try:
            wait_until(all_ready([9601, 9602]), 60, "a deploy in each cluster")
        except AssertionError:
            pytest.fail(describe_ops([9601, 9602]))
        wait_until(_refused("is offered in several locations (ams, default): the order must "
                            "say which (location)"), 20, "the order without a location refused")
        wait_until(_refused("location 'ams' does not offer product 'vps-large' (offered in: "
                            "default)"), 20, "the order for a location without it refused")
        wait_until(_refused("location 'par' is not a cluster of this engine's settings "
                            "(default, ams): add it to [[clusters]]"), 20,
                   "the order for a cluster the engine does not serve refused")
    fra, ams = Service.get_by_id(9601), Service.get_by_id(9602)
    assert (fra.cluster, ams.cluster) == ("default", "ams")
    assert fra.vmid is not None and ams.vmid is not None
    # each VM in its own cluster only; one VMID is given once in the whole fleet
    assert _ours(fleet_sims["default"]) == {fra.vmid}
    assert _ours(fleet_sims["ams"]) == {ams.vmid}
    assert fra.vmid != ams.vmid and fra.vmid < 5000 <= ams.vmid  # each its cluster's range
    assert fra.node == "pve2" and ams.node not in (None, "pve2")  # the product's node: pve2
    assert fleet_sims["ams"].vm(ams.vmid) is not None
    vm = fleet_sims["ams"].vm(ams.vmid)
    assert vm is not None and vm["config"]["name"] == ams.hostname
    # the Amsterdam VM's IPv4 from Amsterdam's pool, configured in its cloud-init
    held = IpAddress.get((IpAddress.service_id == 9602) & (IpAddress.version == 4))
    assert IpPool.get_by_id(held.pool_id).name == "ams-v4"
    assert f"ip={held.address}/24" in vm["config"]["ipconfig0"]
    assert Service.get_or_none(Service.id.in_([9603, 9604, 9605])) is None

    # the scheduler's traffic accounting, once per cluster with its own client and lock: the
    # second cluster's run is not skipped because the first one just ran
    for name in ("default", "ams"):
        run = traffic.run_once(proxmox.client(fleet.proxmox_of(name)), None, min_gap_s=3600,
                               cluster=name)
        assert (run.skipped, run.services, run.errors) == ("", 1, []), name

    metrics.register_database_gauges()
    server = metrics.MetricsServer(0, "127.0.0.1").start()
    try:
        assert server.port is not None
        seen = scrape(server.port)
    finally:
        server.stop()
    for cluster in ("default", "ams"):
        assert seen[("pvekvm_services", frozenset({("cluster", cluster),
                                                   ("status", "ready")}))] == 1

    # the operator's views, per cluster: check, status, pools
    from pvekvm.apps.cli.main import engine_status, pool_usage

    verdicts = {v.name: v for v in preflight.check_proxmox(fleet, privileges=False)}
    assert not verdicts["Proxmox default"].failed and not verdicts["Proxmox ams"].failed
    assert "Proxmox ams node pve1" in verdicts
    status = engine_status(fleet)
    assert "  ams ready" in status and "  default ready" in status
    pools = {line.split()[0]: line.split() for line in pool_usage().splitlines()[1:]}
    assert pools["ams-v4"][3:] == ["ams", "50", "1"]
    assert pools["public-v6"][3] == "(shared)"


def test_the_catalog_refuses_a_cross_cluster_product_with_the_reason(fleet):
    data = two_cluster_catalog()
    data["products"] = [{**next(p for p in data["products"] if p["name"] == "vps-small"),
                         "name": "vps-ams", "cluster": "ams", "locations": {}}]
    data["products"][0].pop("ip_pool")
    data["products"][0].pop("ip6_pool", None)
    data["products"][0].pop("templates", None)  # the OS offer: templates of its own cluster
    problems = validate(data, "cat.toml")  # config-check: the file alone shows it
    assert any("(vps-ams) template: debian-12 is in cluster (the default), the product in "
               "ams" in p for p in problems), problems
    with pytest.raises(catalog.CatalogError, match="product vps-ams in cluster ams: template "
                       "debian-12 lives in cluster default"):
        catalog.load(data, fleet.secret_key_file, fleet.cluster_names)
    data["products"][0].update(template="debian-12-ams", ip_pool="public-v4")
    with pytest.raises(catalog.CatalogError, match="ip_pool public-v4 is a pool of cluster "
                       "default"):
        catalog.load(data, fleet.secret_key_file, fleet.cluster_names)
    data["products"][0].update(cluster="par")
    with pytest.raises(catalog.CatalogError, match="cluster 'par' is not in the settings"):
        catalog.load(data, fleet.secret_key_file, fleet.cluster_names)


def test_resume_cluster_and_the_cluster_probe_resume_only_that_clusters_work(fleet, fleet_sims,
                                                                              tmp_path, capsys):
    """Both clusters' clone calls fail until the attempts run out: one deploy paused in each
    (a Proxmox fault). ``resume --cluster ams`` resumes Amsterdam's alone. Then the scheduler's
    probe: with only Amsterdam's API answering again, only Amsterdam's paused work resumes."""
    quick = replace(fleet, engine=replace(fleet.engine, max_attempts=2, retry_first_s=0.05,
                                          retry_max_s=0.1))
    for s in fleet_sims.values():
        s.set_faults(error_rate=1.0, error_status=500, error_path=r"^POST .*/clone$",
                     error_message="pvesim: injected clone fault")

    def paused() -> dict[int, Operation]:
        return {o.service_id: o for o in Operation.select().where(
            Operation.service_id.in_([9611, 9612, 9613])
            & (Operation.status == OpStatus.PAUSED))}

    with InProcessWorkers(quick, concurrency=4), \
            OrderClient(fleet.amqp_url, fleet.namespace) as billing:
        billing.create(service_id=9611, client_id=1, product="vps-small",
                       email="a@example.com", location="default")
        billing.create(service_id=9612, client_id=2, product="vps-small",
                       email="b@example.com", location="ams")
        wait_until(lambda: set(paused()) == {9611, 9612}, 60, "a paused deploy in each cluster")
        assert {o.pause_dependency for o in paused().values()} == {"proxmox"}
        fleet_sims["ams"].set_faults()  # Amsterdam's API is well again
        config = write_config(fleet, tmp_path / "cli.toml")  # [[clusters]] default, ams
        with pytest.raises(SystemExit) as exited:  # a cluster the settings lack: exit 2
            main(["--config", str(config), "resume", "--cluster", "par"])
        assert exited.value.code == 2
        assert "--cluster par: not a cluster of the settings (known: default, ams)" in \
            capsys.readouterr().err
        assert main(["--config", str(config), "resume", "--cluster", "ams"]) == 0
        assert capsys.readouterr().out.strip().endswith("resumed 1 paused operation(s)")
        wait_until(all_ready([9612]), 60, "Amsterdam's deploy after resume --cluster ams")
        assert set(paused()) == {9611}, "the other cluster's paused work stays paused"

        fleet_sims["ams"].set_faults(error_rate=1.0, error_status=500,
                                     error_path=r"^POST .*/clone$")
        billing.create(service_id=9613, client_id=3, product="vps-small",
                       email="c@example.com", location="ams")
        wait_until(lambda: set(paused()) == {9611, 9613}, 60, "a second Amsterdam pause")
        fleet_sims["ams"].set_faults()
        # paused long enough for a probe's resume (auto_resume_check_s), backoff not yet due
        Operation.update(paused_at=datetime.now() - timedelta(hours=1)).where(
            Operation.status == OpStatus.PAUSED).execute()
        asked: list[str] = []

        def probe(_settings, dependency: str) -> bool:
            asked.append(dependency)
            return dependency == "proxmox:ams"  # the default cluster's API: still failing

        pub = messaging.Publisher(fleet.amqp_url, messaging.Topology(fleet.namespace))
        try:
            assert autoresume.resume_due(fleet, pub, probe=probe) == 1
        finally:
            pub.close()
        assert sorted(asked) == ["proxmox", "proxmox:ams"], "each cluster's API probed"
        wait_until(all_ready([9613]), 60, "Amsterdam's deploy resumed by the probe")
        assert set(paused()) == {9611}
