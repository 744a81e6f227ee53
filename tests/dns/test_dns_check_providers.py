"""`python -m pvekvm check` (pvekvm/preflight.py check_dns) probes rfc2136 and webhook zones
as loaded in the catalog: BIND for real, the webhook through a verifying receiver."""

from __future__ import annotations

from bindserver import CLASSLESS, FORWARD, LOCKED
from dnsreceiver import DnsReceiver, new_secret

from pvekvm import catalog, preflight, secrets
from pvekvm.config import Settings


def test_check_probes_each_rfc2136_and_webhook_zone(clean_db, database_url, tmp_path, bind9):
    settings = Settings(database_url=database_url, amqp_url="amqp://unused",
                        secret_key_file=str(tmp_path / "secret.key"))
    secrets.create_key(settings.secret_key_file)
    secret = new_secret()
    receiver = DnsReceiver(secret, ("hooks.example.net",))
    try:
        catalog.load({
            "dns_providers": [
                {"name": "bind", "kind": "rfc2136", "settings": bind9.settings()},
                {"name": "hook", "kind": "webhook",
                 "settings": {"url": receiver.url, "secret": secret}},
                {"name": "stranger", "kind": "webhook",
                 "settings": {"url": receiver.url, "secret": new_secret()}},
            ],
            "dns_zones": [{"name": FORWARD, "provider": "bind"},
                          {"name": CLASSLESS, "provider": "bind"},
                          {"name": LOCKED, "provider": "bind"},
                          {"name": "hooks.example.net", "provider": "hook"},
                          {"name": "other.example.net", "provider": "stranger"}],
        }, settings.secret_key_file)
        verdicts = {v.name: v for v in preflight.check_dns(settings)}
    finally:
        receiver.close()
    assert verdicts[f"DNS rfc2136 {FORWARD}"].status == "ok"
    assert verdicts[f"DNS rfc2136 {FORWARD}"].detail == f"zone found at 127.0.0.1:{bind9.port}"
    assert verdicts[f"DNS rfc2136 {CLASSLESS}"].status == "ok"
    locked = verdicts[f"DNS rfc2136 {LOCKED}"]
    assert locked.failed and "may the key write A" in locked.detail and "REFUSED" in locked.detail
    hook = verdicts["DNS webhook hooks.example.net"]
    assert hook.status == "ok" and hook.detail == f"zone found at {receiver.url[:-8]}"
    stranger = verdicts["DNS webhook other.example.net"]  # signed with a secret it does not know
    assert stranger.failed and "refused the signature (HTTP 401)" in stranger.detail
    assert [c.verdict for c in receiver.calls].count("ok") == 1  # the probes only
    assert receiver.records == {}
