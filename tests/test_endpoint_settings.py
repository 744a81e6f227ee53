"""``[proxmox] endpoints``: every node's API of the cluster; the old ``base_url`` is a list of
one; a wrong list is one line naming the key."""

from __future__ import annotations

import pytest

from pvekvm.config import ConfigError, load_settings

HEAD = ('[database]\nurl = "mysql://root@127.0.0.1/x"\n[amqp]\nurl = "amqp://g:g@127.0.0.1/"\n'
        '[proxmox]\ntoken_id = "pvekvm@pve!engine"\ntoken_secret = "s"\n')


def _load(tmp_path, monkeypatch, body: str):
    for var in ("DATABASE_URL", "AMQP_URL", "PVE_CONNECTION_FILE"):
        monkeypatch.delenv(var, raising=False)
    f = tmp_path / "pvekvm.toml"
    f.write_text(HEAD + body)
    return load_settings(f).proxmox


def test_endpoints_list_every_node_and_base_url_is_a_list_of_one(tmp_path, monkeypatch):
    pve = _load(tmp_path, monkeypatch, 'endpoints = ["https://pve1:8006/api2/json", '
                '"https://pve2:8006/api2/json"]\nmax_calls_per_node = 4\nendpoint_retry_s = 5\n')
    assert pve.urls == ("https://pve1:8006/api2/json", "https://pve2:8006/api2/json")
    assert (pve.host, pve.port) == ("pve1", 8006)  # the first is the preferred one
    assert pve.max_calls_per_node == 4 and pve.endpoint_retry_s == 5.0
    old = _load(tmp_path, monkeypatch, 'base_url = "https://pve9:8006/api2/json"\n')
    assert old.urls == ("https://pve9:8006/api2/json",) and old.max_calls_per_node == 6


@pytest.mark.parametrize(("body", "says"), [
    ('endpoints = ["https://a:8006/api2/json"]\nbase_url = "https://a:8006/api2/json"\n',
     "set endpoints or base_url, not both"),
    ('endpoints = []\n', "endpoints: expected a non-empty list"),
    ('endpoints = ["https://a:8006", "http://b:8006"]\n', "endpoints: expected https://"),
    ('endpoints = ["https://a:8006", "https://a:8006"]\n', "listed twice"),
    ('base_url = "https://a:8006"\nmax_calls_per_node = -1\n', "max_calls_per_node"),
    ('base_url = "https://a:8006"\nendpoint_retry_s = 0\n', "endpoint_retry_s"),
])
def test_a_wrong_endpoint_setting_names_the_key(tmp_path, monkeypatch, body, says):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, monkeypatch, body)
    assert says in str(exc.value) and "[proxmox]" in str(exc.value)
