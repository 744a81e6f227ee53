"""``[[clusters]]``: any number of Proxmox clusters, each a name, its endpoints, token, CA and
tuning; today's ``[proxmox]`` keeps working as one cluster ("default", or its ``name``)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pvekvm.config import ConfigError, Settings, load_settings

HEAD = ('[database]\nurl = "mysql://root@127.0.0.1/x"\n[amqp]\nurl = "amqp://g:g@127.0.0.1/"\n')
TOKEN = 'token_id = "pvekvm@pve!engine"\ntoken_secret = "s"\n'


def _load(tmp_path, monkeypatch, body: str) -> Settings:
    for var in ("DATABASE_URL", "AMQP_URL", "PVE_CONNECTION_FILE"):
        monkeypatch.delenv(var, raising=False)
    f = tmp_path / "pvekvm.toml"
    f.write_text(HEAD + body)
    return load_settings(f)


def test_two_clusters_each_with_its_endpoints_token_and_vmid_range(tmp_path, monkeypatch):
    conn = tmp_path / "ams.json"
    conn.write_text(json.dumps({"base_url": "https://10.2.0.1:8006/api2/json",
                                "token_id": "pvekvm@pve!ams", "token_secret": "t",
                                "ca_bundle": "/etc/ams-ca.pem"}))
    s = _load(tmp_path, monkeypatch,
              '[[clusters]]\nname = "fra"\nendpoints = ["https://10.1.0.1:8006/api2/json", '
              '"https://10.1.0.2:8006/api2/json"]\n' + TOKEN + 'max_calls_per_node = 3\n'
              'vmid_min = 1000\nvmid_max = 4999\n'
              f'[[clusters]]\nname = "ams"\nconnection_file = "{conn}"\n')
    assert s.cluster_names == ("fra", "ams") and s.default_cluster == "fra"
    fra, ams = s.cluster("fra"), s.cluster("ams")
    assert fra is not None and ams is not None
    assert fra.proxmox.urls[1] == "https://10.1.0.2:8006/api2/json"
    assert (fra.proxmox.max_calls_per_node, fra.vmid_min, fra.vmid_max) == (3, 1000, 4999)
    assert (ams.proxmox.token_id, ams.proxmox.ca_bundle) == ("pvekvm@pve!ams", "/etc/ams-ca.pem")
    assert s.proxmox == fra.proxmox and s.proxmox_of(None) == fra.proxmox
    assert s.proxmox_of("ams") == ams.proxmox and s.proxmox_of("par") is None
    tuned = replace(s, proxmox=replace(s.proxmox, max_calls_per_node=0))  # tests tune so
    tuned_fra = tuned.cluster("fra")
    assert tuned_fra is not None and tuned_fra.proxmox.max_calls_per_node == 0


def test_proxmox_alone_is_one_cluster_named_default_or_by_its_name(tmp_path, monkeypatch):
    s = _load(tmp_path, monkeypatch,
              '[proxmox]\nbase_url = "https://pve1:8006/api2/json"\n' + TOKEN)
    assert s.cluster_names == ("default",) and (default := s.cluster("default")) is not None
    assert default.proxmox == s.proxmox
    named = _load(tmp_path, monkeypatch,
                  '[proxmox]\nname = "fra"\nbase_url = "https://pve1:8006/api2/json"\n' + TOKEN)
    assert named.cluster_names == ("fra",) and named.proxmox_of("fra") == named.proxmox


@pytest.mark.parametrize(("body", "says"), [
    ('[proxmox]\nbase_url = "https://a:8006"\n' + TOKEN +
     '[[clusters]]\nname = "b"\nbase_url = "https://b:8006"\n' + TOKEN,
     "set [proxmox] (one cluster) or [[clusters]], not both"),
    ('[[clusters]]\nname = "a"\nbase_url = "https://a:8006"\n' + TOKEN +
     '[[clusters]]\nname = "a"\nbase_url = "https://b:8006"\n' + TOKEN,
     "[[clusters]] a: a second cluster of that name"),
    ('[[clusters]]\nbase_url = "https://a:8006"\n' + TOKEN, "#1 name: expected lower-case"),
    ('[[clusters]]\nname = "Fra Main"\nbase_url = "https://a:8006"\n' + TOKEN,
     "name: expected lower-case"),
    ('[[clusters]]\nname = "a"\nbase_url = "https://a:8006"\n' + TOKEN + 'colour = 1\n',
     "unknown key 'colour'"),
    ('[[clusters]]\nname = "a"\nbase_url = "http://a:8006"\n' + TOKEN,
     "[[clusters]] a base_url: expected https://"),
    ('[[clusters]]\nname = "a"\nbase_url = "https://a:8006"\n' + TOKEN + 'vmid_min = 5\n',
     "vmid_min: expected a VMID"),
    ('[[clusters]]\nname = "a"\nbase_url = "https://a:8006"\n' + TOKEN +
     'vmid_min = 5000\nvmid_max = 4000\n', "vmid_min is above vmid_max"),
    ('[[clusters]]\nname = "a"\nconnection_file = "/nonexistent.json"\n',
     "connection_file = /nonexistent.json: not a readable connection file"),
    ('[[clusters]]\nname = "a"\nconnection_file = "/x.json"\n' + TOKEN,
     "does not go with it"),
])
def test_a_wrong_cluster_is_one_line_naming_it(tmp_path, monkeypatch, body, says):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, monkeypatch, body)
    assert says in str(err.value) and "\n" not in str(err.value)
