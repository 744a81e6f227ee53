"""Fixtures for the DNS tests: fake Cloudflare/HestiaCP servers and the real PowerDNS."""

from __future__ import annotations

import os
import random
import uuid

import dnsfakes
import pytest
import requests
from dnsfakes import PDNS_API_KEY, PDNS_API_URL, PDNS_DNS_PORT


@pytest.fixture
def cloudflare():
    fake = dnsfakes.FakeCloudflare()
    yield fake
    fake.close()
    assert fake.violations == [], "the client sent requests Cloudflare would refuse"


@pytest.fixture
def hestia():
    fake = dnsfakes.FakeHestia()
    yield fake
    fake.close()
    assert fake.violations == [], "the client sent requests HestiaCP would refuse"


class Pdns:
    """Helper around the real PowerDNS: zone set-up through its API, answers over DNS."""

    def __init__(self) -> None:
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = PDNS_API_KEY
        self.created: list[str] = []

    def zones_url(self) -> str:
        return f"{PDNS_API_URL}/api/v1/servers/localhost/zones"

    def create_zone(self, name: str) -> str:
        from pvekvm.dns.powerdns import zone_id

        self.session.delete(f"{self.zones_url()}/{zone_id(name)}", timeout=5)
        resp = self.session.post(
            self.zones_url(),
            json={"name": name + ".", "kind": "Native", "nameservers": ["ns1.pvekvm.test."]},
            timeout=5,
        )
        assert resp.status_code == 201, resp.text
        self.created.append(name)
        return name

    def cleanup(self) -> None:
        from pvekvm.dns.powerdns import zone_id

        for name in self.created:
            self.session.delete(f"{self.zones_url()}/{zone_id(name)}", timeout=5)

    @staticmethod
    def query(name: str, rtype: str) -> list[str]:
        """What the real server answers over DNS (UDP to 127.0.0.1:PDNS_DNS_PORT)."""
        import dns.message
        import dns.query
        import dns.rdatatype

        msg = dns.message.make_query(name, rtype)
        answer = dns.query.udp(msg, "127.0.0.1", port=PDNS_DNS_PORT, timeout=3)
        wanted = dns.rdatatype.from_text(rtype)
        return sorted(
            rd.to_text() for rrset in answer.answer if rrset.rdtype == wanted for rd in rrset
        )


@pytest.fixture
def pdns():
    try:
        requests.get(
            f"{PDNS_API_URL}/api/v1/servers/localhost",
            headers={"X-API-Key": PDNS_API_KEY},
            timeout=2,
        ).raise_for_status()
    except requests.RequestException as exc:
        message = f"PowerDNS API not answering at {PDNS_API_URL} (run scripts/pdns.sh): {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    helper = Pdns()
    yield helper
    helper.cleanup()


@pytest.fixture
def unique():
    """Unique names per test: a forward zone, a /24 and an ip6 nibble zone under test ranges."""
    rnd = random.Random(uuid.uuid4().int)
    tag = uuid.uuid4().hex[:10]
    a, b = rnd.randrange(256), rnd.randrange(256)
    nibbles = [f"{rnd.randrange(16):x}" for _ in range(6)]
    return {
        "forward": f"t{tag}.pvekvm.test",
        "net": f"10.{a}.{b}",
        "rev24": f"{b}.{a}.10.in-addr.arpa",
        "v6prefix": "fd" + "".join(nibbles[:2]) + ":" + "".join(nibbles[2:6]),
        "rev6": ".".join(reversed(["f", "d"] + nibbles)) + ".ip6.arpa",
    }


@pytest.fixture(scope="session")
def bind9(tmp_path_factory):
    """A real BIND 9 (tests/dns/bindserver.py) for the session: its own config dir, a port of
    this checkout's range. Tests take fresh names and addresses from ``bind_names``."""
    import bindserver

    if not os.path.exists(bindserver.NAMED):
        message = "BIND 9 not installed (/usr/sbin/named; Debian package bind9)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = bindserver.BindServer(tmp_path_factory.mktemp("bind")).start()
    yield server
    server.stop()


# last octets not yet handed out this session: in the classless /26 and in the rest of the /24
_octets = {"classless": random.sample(range(1, 64), 63),
           "rev24": random.sample(range(64, 255), 191)}


@pytest.fixture
def bind_names():
    """A host name of its own and addresses no other test of the session uses: ``low`` in the
    RFC 2317 /26 (0-63), ``high`` in the rest of the /24, ``v6`` in 2001:db8:100::/64."""
    tag = uuid.uuid4().hex[:10]
    low, high = _octets["classless"].pop(), _octets["rev24"].pop()
    return {"host": f"h{tag}.vps.example.net", "low": f"192.0.2.{low}",
            "high": f"192.0.2.{high}", "v6": f"2001:db8:100::{low:x}{high:x}"}
