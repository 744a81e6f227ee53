"""PVE answers are decoded by orjson (pvekvm/proxmox.py ``_FastJson``) with proxmoxer's own
contract: the ``data`` member of a JSON body; a body that is not UTF-8 JSON (a proxy's HTML
error page, a truncated answer) comes back as ``{"errors": body}``, never an exception."""

from __future__ import annotations

from pvekvm.proxmox import _FastJson
from pvekvm.pvehttp import Response


def _loads(body: bytes):
    return _FastJson().loads(Response(200, "OK", body))


def test_the_data_member_of_a_pve_answer_is_returned_with_its_types():
    body = ('{"data":[{"type":"qemu","vmid":101,"node":"pve1","maxmem":2147483648,'
            '"name":"caf\u00e9","template":0,"cpu":0.02}]}').encode()
    assert _loads(body) == [{"type": "qemu", "vmid": 101, "node": "pve1",
                             "maxmem": 2147483648, "name": "café", "template": 0,
                             "cpu": 0.02}]


def test_a_body_that_is_not_utf8_json_is_returned_as_errors():
    for body in (b"<html>502 Bad Gateway</html>", b'{"data": [1, 2', b'{"data": "\xff\xfe"}'):
        assert _loads(body) == {"errors": body}
