"""The client's firewall rules on the wire (pvekvm/clientfw.py through parse_event): what a
rule may say, each bad rule refused with a reason naming the rule and the field, in linear time;
what the engine sends, pvesim (pve-firewall's verify_rule) accepts. The package details'
catalog ranges (pvekvm/package_details.py) as PVE's schema says."""

from __future__ import annotations

import json
import time

import pytest

from pvekvm import clientfw
from pvekvm.package_details import CPU_MODELS, details_problem
from pvekvm.wire.orders import FirewallRulesSetEvent, InvalidEvent, parse_event
from pvesim import fwrules
from pvesim.schema import CPU_MODELS as SIM_CPU_MODELS

ENVELOPE = {"version": 1, "type": "firewall_rules_set", "idempotency_key": "k1",
            "service_id": 7}


def _body(rules: object) -> bytes:
    return json.dumps({**ENVELOPE, "rules": rules}).encode()


def _refusal(rules: object) -> str:
    with pytest.raises(InvalidEvent) as exc:
        parse_event(_body(rules))
    return exc.value.reason


def test_a_rule_set_parses_to_canonical_rules_pve_accepts() -> None:
    event = parse_event(_body([
        {"direction": "in", "action": "ACCEPT", "proto": "TCP", "dport": "22,80:90,443",
         "source": "2001:DB8::/32,2001:db8:1::5", "comment": "admin"},
        {"direction": "out", "action": "REJECT", "proto": "udp", "sport": "53"},
        {"direction": "in", "action": "DROP", "proto": "icmp", "icmp_type": "echo-request",
         "source": "198.51.100.10-198.51.100.20", "enable": False},
        {"direction": "in", "action": "DROP"}]))
    assert isinstance(event, FirewallRulesSetEvent)
    first = event.rules[0]
    assert first == {"direction": "in", "action": "ACCEPT", "enable": True, "proto": "tcp",
                     "dport": "22,80:90,443", "source": "2001:db8::/32,2001:db8:1::5",
                     "comment": "admin"}
    for rule in event.rules:  # what the engine would POST, pve-firewall takes as it is
        pve = clientfw.pve_rule(rule)
        assert clientfw.is_client_rule(pve)
        assert fwrules.verify_rule(pve, set()) == {}, pve
    assert clientfw.pve_rule(first)["comment"] == "pvekvm-client: admin"
    assert parse_event(event.to_json()) == event  # round trip: the same order, the same key
    assert hash(parse_event(event.to_json())) == hash(event)  # hashable like every event


@pytest.mark.parametrize(("rules", "reason"), [
    ([{"direction": "in", "action": "ACCEPT", "source": "10.0.0.1/33"}],
     "rule 1: source: not an IP address or CIDR network"),
    ([{"direction": "in", "action": "ACCEPT", "source": "10.0.0.1/24"}],  # host bits set
     "rule 1: source: not an IP address or CIDR network (host bits must be zero"),
    ([{"direction": "in", "action": "ACCEPT", "source": "+ipfilter-net0"}],  # not theirs
     "IPSet and alias names are not accepted"),
    ([{"direction": "in", "action": "ACCEPT"},
      {"direction": "in", "action": "ACCEPT", "proto": "tcp", "dport": "70000"}],
     "rule 2: dport: invalid port '70000' (0-65535)"),
    ([{"direction": "in", "action": "ACCEPT", "proto": "tcp", "dport": "90:80"}],
     "rule 1: dport: backwards range '90:80' not allowed"),
    ([{"direction": "in", "action": "ACCEPT", "proto": "tcp",
       "dport": ",".join(str(p) for p in range(1, 17))}],
     "too many entries in port list (> 15 numbers)"),
    ([{"direction": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22,,80"}],
     "extraneous commas in list"),
    ([{"direction": "in", "action": "ACCEPT", "dport": "22"}], "rule 1: dport: needs proto"),
    ([{"direction": "in", "action": "ACCEPT", "proto": "icmp", "dport": "22"}],
     "protocol 'icmp' does not support ports"),
    ([{"direction": "in", "action": "ACCEPT", "source": "10.0.0.0/8", "dest": "2001:db8::1"}],
     "rule 1: mixed IPv4/IPv6 addresses in the rule"),
    ([{"direction": "in", "action": "ACCEPT", "source": "10.0.0.0/8,2001:db8::/32"}],
     "mixing IPv4 and IPv6 addresses is not allowed"),
    ([{"direction": "in", "action": "ACCEPT", "source": "10.0.0.1-10.0.0.9,10.1.0.0/16"}],
     "a range cannot be part of a list"),
    ([{"direction": "forward", "action": "ACCEPT"}], "rule 1: direction: must be in or out"),
    ([{"direction": "in", "action": "my-group"}], "action: must be ACCEPT, DROP or REJECT"),
    ([{"direction": "in", "action": "ACCEPT", "iface": "net0"}],
     "rule 1: unknown field 'iface'"),
    ([{"direction": "in", "action": "ACCEPT", "macro": "SSH"}], "unknown field 'macro'"),
    ([{"direction": "in", "action": "ACCEPT", "proto": "bogus"}], "unknown protocol"),
    ([{"direction": "in", "action": "ACCEPT", "comment": "a\nb"}],
     "comment: contains control characters"),
    ([{"direction": "in", "action": "ACCEPT", "proto": "tcp", "icmp_type": "echo-request"}],
     "icmp_type: needs proto icmp or icmpv6"),
    ([{"direction": "in"}], "rule 1: action: missing"),
    (["ACCEPT"], "rule 1: expected an object"),
    ({"direction": "in"}, "expected an array of rules"),
])
def test_a_bad_rule_is_refused_naming_the_rule_and_field(rules: object, reason: str) -> None:
    got = _refusal(rules)
    assert got.startswith("field 'rules': ") and reason in got, got


def test_ten_thousand_rules_are_refused_by_count_and_a_megabyte_by_size() -> None:
    started = time.monotonic()
    assert _refusal([{}] * 10_000) == "field 'rules': too many rules: 10000 (max 100)"
    big = _body([{"direction": "in", "action": "ACCEPT", "comment": "x" * 1_000_000}])
    with pytest.raises(InvalidEvent, match=r"event too large: \d+ bytes \(max 65536\)"):
        parse_event(big)
    nested = b'{"version":1,"type":"firewall_rules_set","rules":' + b"[" * 30_000 + \
        b"]" * 30_000 + b"}"
    with pytest.raises(InvalidEvent, match="not JSON"):
        parse_event(nested)
    # the largest body that fits: 100 rules of 512-character address lists, checked quickly
    wide = ",".join(f"10.{i // 256}.{i % 256}.0/24" for i in range(36))[:500].rstrip(",")
    wide = wide.rsplit(",", 1)[0]
    event = parse_event(_body([{"direction": "in", "action": "ACCEPT", "source": wide}] * 100))
    assert len(event.rules) == 100  # type: ignore[attr-defined]
    # a set that fits the wire but not the operation's params once stored (ASCII-escaped)
    wide_text = [{"direction": "in", "action": "ACCEPT", "comment": "界" * 100}] * 100
    utf8 = json.dumps({**ENVELOPE, "rules": wide_text}, ensure_ascii=False).encode()
    assert len(utf8) < 65536
    with pytest.raises(InvalidEvent, match=r"rules too large: \d+ bytes as stored"):
        parse_event(utf8)
    assert time.monotonic() - started < 2.0


def test_pvesim_refuses_what_pve_refuses() -> None:
    assert fwrules.verify_rule({"type": "in", "action": "ACCEPT", "proto": "tcp",
                                "dport": "70000"}, set()) == {"dport": "invalid port '70000'"}
    assert "source" in fwrules.verify_rule({"type": "in", "action": "ACCEPT",
                                            "source": "10.0.0.1/24"}, set())
    assert fwrules.verify_rule({"type": "in", "action": "ACCEPT", "dport": "22"}, set()) == {
        "proto": "missing property - 'dport' requires this property"}
    assert fwrules.verify_rule({"type": "out", "action": "ACCEPT", "source": "+nosuch"},
                               set()) == {"source": "no such ipset 'nosuch'"}


def test_package_details_in_the_ranges_pve_takes() -> None:
    base = {"memory_mb": 2048, "disk_mbps_rd": 100, "disk_iops_rd": 1000}
    assert details_problem({**base, "cpu_type": "x86-64-v2-AES", "cpulimit": 1.5,
                            "cpuunits": 2048, "balloon_mb": 1024, "disk_mbps_rd_max": 300,
                            "disk_iops_rd_max": 4000}) is None
    for bad, words in (({"cpu_type": "pentium9"}, "built-in CPU models"),
                       ({"cpulimit": 129}, "cpulimit must be a number 0..128"),
                       ({"cpuunits": 0}, "cpuunits must be a whole number 1..262144"),
                       ({"balloon_mb": 4096}, "must not exceed memory_mb"),
                       ({"disk_mbps_wr_max": 50}, "needs disk_mbps_wr"),
                       ({"disk_iops_rd_max": 10}, "must not be below disk_iops_rd"),
                       ({"client_fw_rules": 101}, "client_fw_rules must be 0..100")):
        problem = details_problem({**base, **bad})
        assert problem and words in problem, (bad, problem)
    assert CPU_MODELS == SIM_CPU_MODELS  # the engine offers what the simulated PVE knows


def test_a_package_may_disable_the_rules_or_cap_their_number() -> None:
    from pvekvm.models import Product
    from steps.firewall import allowed_rules, rules_problem

    rules = [{"direction": "in", "action": "DROP", "dport": str(p), "proto": "tcp"}
             for p in range(5)]
    capped = Product(client_fw_rules=3, dhcp=False, firewall_enabled=True)
    assert rules_problem(capped, 3) is None and allowed_rules(capped, rules) == rules[:3]
    assert rules_problem(capped, 4) == "too many firewall rules: 4 (the package allows 3)"
    for off, words in ((Product(client_fw_rules=0, dhcp=False, firewall_enabled=True),
                        "allows no client firewall rules"),
                       (Product(client_fw_rules=20, dhcp=True, firewall_enabled=True),
                        "DHCP or firewall off"),
                       (Product(client_fw_rules=20, dhcp=False, firewall_enabled=False),
                        "DHCP or firewall off")):
        assert words in (rules_problem(off, 1) or "") and allowed_rules(off, rules) == []
