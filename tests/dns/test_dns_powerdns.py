"""PowerDNS provider against the real server started by scripts/pdns.sh; results are checked by
asking that server over DNS (dnspython), not by reading our own state."""

from __future__ import annotations

import ipaddress
import time

import dnsfakes
import pytest
from dnsfakes import HOSTILE_HOSTNAMES, PDNS_API_KEY, PDNS_API_URL

from pvekvm.dns import DnsError, ZoneConfig, apply_records, plan_records, remove_records


@pytest.fixture
def setup(pdns, unique):
    fwd = pdns.create_zone(unique["forward"])
    rev = pdns.create_zone(unique["rev24"])
    classless = pdns.create_zone("0/26." + unique["rev24"])
    rev6 = pdns.create_zone(unique["rev6"])
    settings = {"api_url": PDNS_API_URL, "api_key": PDNS_API_KEY, "ttl": 120}
    zones = [ZoneConfig(z, "powerdns", dict(settings)) for z in (fwd, rev, classless, rev6)]
    net = unique["net"]
    return {
        "zones": zones,
        "host": f"web1.{fwd}",
        "v4": [f"{net}.5", f"{net}.200"],
        "v6": [str(ipaddress.ip_address(f"{unique['v6prefix']}::1"))],
        "classless": classless,
        "rev24": rev,
        "net": net,
    }


def with_settings(zones, **changes):
    return [ZoneConfig(z.name, z.provider, dict(z.settings, **changes)) for z in zones]


def test_create_forward_and_reverse_records(pdns, setup):
    s = setup
    apply_records(plan_records(s["host"], s["v4"], s["v6"], s["zones"]), s["zones"])
    assert pdns.query(s["host"], "A") == sorted(s["v4"])
    assert pdns.query(s["host"], "AAAA") == s["v6"]
    # .5 is in the RFC 2317 child zone, .200 only in the /24
    assert pdns.query(f"5.{s['classless']}", "PTR") == [s["host"] + "."]
    assert pdns.query(f"200.{s['rev24']}", "PTR") == [s["host"] + "."]
    v6ptr = ipaddress.ip_address(s["v6"][0]).reverse_pointer
    assert pdns.query(v6ptr, "PTR") == [s["host"] + "."]


def test_same_twice_then_ip_change_replaces(pdns, setup):
    s = setup
    for _ in range(2):
        apply_records(plan_records(s["host"], s["v4"][:1], [], s["zones"]), s["zones"])
    assert pdns.query(s["host"], "A") == [s["v4"][0]]
    new_ip = f"{s['net']}.201"
    # the deploy step's IP change: drop the old PTRs, then apply the new plan
    remove_records(s["host"], s["v4"][:1], [], s["zones"])
    apply_records(plan_records(s["host"], [new_ip], [], s["zones"]), s["zones"])
    assert pdns.query(s["host"], "A") == [new_ip]
    assert pdns.query(f"201.{s['rev24']}", "PTR") == [s["host"] + "."]
    assert pdns.query(f"5.{s['classless']}", "PTR") == []
    # and a plain re-apply with a different address replaces the A rrset, never adds to it
    apply_records(plan_records(s["host"], [f"{s['net']}.202"], [], s["zones"]), s["zones"])
    assert pdns.query(s["host"], "A") == [f"{s['net']}.202"]


def test_remove_and_remove_again(pdns, setup):
    s = setup
    apply_records(plan_records(s["host"], s["v4"], s["v6"], s["zones"]), s["zones"])
    remove_records(s["host"], s["v4"], s["v6"], s["zones"])
    assert pdns.query(s["host"], "A") == []
    assert pdns.query(s["host"], "AAAA") == []
    assert pdns.query(f"5.{s['classless']}", "PTR") == []
    assert pdns.query(f"200.{s['rev24']}", "PTR") == []
    remove_records(s["host"], s["v4"], s["v6"], s["zones"])  # absent: fine


def test_wrong_api_key_is_permanent(setup):
    zones = with_settings(setup["zones"], api_key="wrong-key")
    with pytest.raises(DnsError) as err:
        apply_records(plan_records(setup["host"], setup["v4"], [], zones), zones)
    assert err.value.transient is False
    assert "powerdns" in str(err.value) and "authentication" in str(err.value)
    assert "wrong-key" not in str(err.value)


def test_zone_missing_on_server_is_permanent(setup):
    absent = ZoneConfig("absent-zone.pvekvm.test", "powerdns", dict(setup["zones"][0].settings))
    zones = [*setup["zones"], absent]
    records = plan_records("a.absent-zone.pvekvm.test", ["192.0.2.1"], [], zones)
    assert [r.zone for r in records] == ["absent-zone.pvekvm.test"]
    with pytest.raises(DnsError) as err:
        apply_records(records, zones)
    assert err.value.transient is False
    assert "absent-zone.pvekvm.test" in str(err.value) and "not found" in str(err.value)


def test_unreachable_is_transient_then_converges(pdns, setup):
    s = setup
    api_port = int(PDNS_API_URL.rsplit(":", 1)[1])
    proxy = dnsfakes.TcpProxy(api_port).start()
    zones = with_settings(s["zones"], api_url=f"http://127.0.0.1:{proxy.port}")
    records = plan_records(s["host"], s["v4"], s["v6"], zones)
    try:
        apply_records(records, zones)  # works through the proxy
        assert pdns.query(s["host"], "A") == sorted(s["v4"])
        proxy.stop()  # PowerDNS no longer reachable: connection refused
        changed = plan_records(s["host"], [f"{s['net']}.9"], s["v6"], zones)
        with pytest.raises(DnsError) as err:
            apply_records(changed, zones)
        assert err.value.transient is True
        assert "powerdns" in str(err.value) and "cannot connect" in str(err.value)
        assert pdns.query(s["host"], "A") == sorted(s["v4"])
        proxy.start()  # reachable again: the retry converges
        deadline = time.monotonic() + 5
        while True:
            try:
                apply_records(changed, zones)
                break
            except DnsError as exc:
                if not exc.transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert pdns.query(s["host"], "A") == [f"{s['net']}.9"]
    finally:
        proxy.stop()


def test_no_answer_times_out_as_transient(setup):
    silent = dnsfakes.SilentServer()
    try:
        zones = with_settings(
            setup["zones"], api_url=f"http://127.0.0.1:{silent.port}", timeout=0.3
        )
        started = time.monotonic()
        with pytest.raises(DnsError) as err:
            apply_records(plan_records(setup["host"], setup["v4"][:1], [], zones), zones)
        assert err.value.transient is True and "no answer within" in str(err.value)
        # A and PTR changes go to the same endpoint: the second is skipped, not timed out too
        assert "skipped" in str(err.value)
        assert time.monotonic() - started < 0.6 * 2
    finally:
        silent.close()


@pytest.mark.parametrize("hostname", HOSTILE_HOSTNAMES)
def test_hostile_hostname_never_reaches_the_server(setup, hostname):
    api_port = int(PDNS_API_URL.rsplit(":", 1)[1])
    proxy = dnsfakes.TcpProxy(api_port).start()
    try:
        zones = with_settings(setup["zones"], api_url=f"http://127.0.0.1:{proxy.port}")
        with pytest.raises(ValueError):
            apply_records(plan_records(hostname, setup["v4"], [], zones), zones)
        with pytest.raises(ValueError):
            remove_records(hostname, setup["v4"], [], zones)
        assert proxy.connections == 0
    finally:
        proxy.stop()
