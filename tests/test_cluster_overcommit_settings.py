"""A cluster's own placement settings (issue 24: "configurable overcommit ratios per cluster"):
``[clusters.placement]`` or ``placement = { ... }`` in a ``[[clusters]]`` table, each key it
does not set taken from ``[placement]``; refused with a reason naming the cluster and key;
``config-check`` says which clusters count room their own way."""

from __future__ import annotations

import pytest

from pvekvm.apps.cli.main import main
from pvekvm.config import ConfigError, PlacementSettings, Settings, load_settings
from workers.testing.harness import write_config

HEAD = ('[database]\nurl = "mysql://root@127.0.0.1/x"\n[amqp]\nurl = "amqp://g:g@127.0.0.1/"\n')
TOKEN = 'token_id = "pvekvm@pve!engine"\ntoken_secret = "s"\n'
FRA = '[[clusters]]\nname = "fra"\nbase_url = "https://10.1.0.1:8006/api2/json"\n' + TOKEN
AMS = '[[clusters]]\nname = "ams"\nbase_url = "https://10.2.0.1:8006/api2/json"\n' + TOKEN


def _load(tmp_path, monkeypatch, body: str) -> Settings:
    for var in ("DATABASE_URL", "AMQP_URL", "PVE_CONNECTION_FILE"):
        monkeypatch.delenv(var, raising=False)
    f = tmp_path / "pvekvm.toml"
    f.write_text(HEAD + body)
    return load_settings(f)


def test_a_cluster_overrides_some_keys_and_takes_the_rest_from_placement(tmp_path, monkeypatch):
    s = _load(tmp_path, monkeypatch,
              '[placement]\ncpu_overcommit = 8.0\nwait_max_s = 600\n'
              + FRA + '[clusters.placement]\nmemory_overcommit = 1.5\nclose_mb = 1024\n'
              + AMS + 'placement = { disk_overcommit = 2, wait_max_s = 60 }\n'
              + '[[clusters]]\nname = "par"\nbase_url = "https://10.3.0.1:8006/api2/json"\n'
              + TOKEN)
    assert s.placement_of("fra") == PlacementSettings(
        memory_overcommit=1.5, cpu_overcommit=8.0, disk_overcommit=1.0, close_mb=1024,
        wait_max_s=600.0)
    assert s.placement_of("ams") == PlacementSettings(
        memory_overcommit=1.0, cpu_overcommit=8.0, disk_overcommit=2.0, wait_max_s=60.0)
    # none of its own: [placement] itself; the default cluster is the first (fra)
    assert s.placement_of("par") is s.placement and s.placement.cpu_overcommit == 8.0
    assert s.placement_of(None) == s.placement_of("fra")
    assert s.placement_where("ams") == "[[clusters]] ams placement"
    assert s.placement_where("par") == "[placement]"


def test_proxmox_alone_counts_with_placement(tmp_path, monkeypatch):
    s = _load(tmp_path, monkeypatch, '[proxmox]\nbase_url = "https://pve1:8006/api2/json"\n'
              + TOKEN + '[placement]\nmemory_overcommit = 1.2\n')
    assert s.placement_of(None).memory_overcommit == 1.2
    assert s.placement_of("default") is s.placement


@pytest.mark.parametrize(("body", "says"), [
    (AMS + 'placement = { memory_overcommit = 500 }\n',
     "[[clusters]] ams placement memory_overcommit: expected 0.1..100, got 500.0"),
    (AMS + '[clusters.placement]\nmemory_overcomit = 1.5\n',
     "[[clusters]] ams placement: unknown key 'memory_overcomit' (known: close_mb, "
     "cpu_overcommit, disk_overcommit, memory_overcommit, wait_max_s)"),
    (AMS + 'placement = { cpu_overcommit = "4" }\n',
     "[[clusters]] ams placement cpu_overcommit: expected float, got '4'"),
    (AMS + 'placement = 1.5\n',
     "[[clusters]] ams placement: expected a table ([clusters.placement] or placement = "
     "{ memory_overcommit = 1.5 }), got 1.5"),
    (AMS + 'placement = { close_mb = -1 }\n',
     "[[clusters]] ams placement close_mb and wait_max_s must be >= 0"),
    ('[placement]\nmemory_overcommit = 0\n' + AMS,
     "[placement] memory_overcommit: expected 0.1..100, got 0.0"),
])
def test_a_wrong_cluster_placement_is_refused_naming_the_cluster_and_key(
        tmp_path, monkeypatch, body, says):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, monkeypatch, body)
    assert says in str(exc.value)


def test_config_check_names_the_clusters_with_their_own_ratios(tmp_path, monkeypatch, capsys):
    _load(tmp_path, monkeypatch, FRA + AMS + 'placement = { memory_overcommit = 1.5 }\n')
    assert main(["config-check", str(tmp_path / "pvekvm.toml")]) == 0
    out = capsys.readouterr().out
    assert "settings ok" in out
    assert ("placement: fra memory 1x, cpu 4x, disk 1x; ams memory 1.5x, cpu 4x, disk 1x"
            in out), out


def test_worker_config_files_carry_each_clusters_placement(tmp_path, monkeypatch):
    """The file tests and benches hand to worker processes reads back the same ratios."""
    s = _load(tmp_path, monkeypatch, '[placement]\ncpu_overcommit = 6.0\n' + FRA + AMS
              + 'placement = { memory_overcommit = 1.5 }\n')
    again = load_settings(write_config(s, tmp_path / "worker.toml"))
    assert again.placement_of("ams") == s.placement_of("ams")
    assert again.placement_of("fra") == s.placement_of("fra") == s.placement
    assert again.placement_of("ams").cpu_overcommit == 6.0
