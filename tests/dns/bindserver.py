"""A real BIND 9 (Debian's ``bind9``, /usr/sbin/named) for the RFC 2136 tests.

Each instance writes its own configuration, keys and zone files under a temporary directory,
listens on 127.0.0.1 at a port of this checkout's range (PVEKVM_BIND_PORTS, default
25000-25999; never 53) and has no control channel: the machine's /etc/bind is never read.

Zones it serves (TSIG key ``pvekvm.`` may update what its grants say):
  vps.example.net                  A/AAAA (``zonesub``)
  locked.example.net               only key ``other.`` may update: ``pvekvm.`` gets REFUSED
  2.0.192.in-addr.arpa             PTR; .0-.63 are RFC 2317 CNAMEs into the classless zone
  0/26.2.0.192.in-addr.arpa        PTR (the classless zone the /24 delegates)
  0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa PTR (2001:db8:100::/64)
"""

from __future__ import annotations

import base64
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

NAMED = shutil.which("named") or "/usr/sbin/named"
FORWARD = "vps.example.net"
LOCKED = "locked.example.net"
REV24 = "2.0.192.in-addr.arpa"
CLASSLESS = "0/26.2.0.192.in-addr.arpa"
REV6 = "0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa"
KEY_NAME = "pvekvm."
OTHER_KEY = "other."


def new_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def port_range() -> range:
    low, _, high = os.environ.get("PVEKVM_BIND_PORTS", "25000-25999").partition("-")
    return range(int(low), int(high) + 1)


def free_port_in_range() -> int:
    """A port of our range free for both UDP and TCP on 127.0.0.1."""
    ports = list(port_range())
    random.shuffle(ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports[0]}-{ports[-1]}")


_SOA = "@ IN SOA ns1.vps.example.net. hostmaster.vps.example.net. 1 3600 600 86400 60\n" \
       "@ IN NS ns1.vps.example.net.\n"


def _zone_files() -> dict[str, tuple[str, str]]:
    """zone -> (file name, contents)."""
    parent = _SOA + "0/26 IN NS ns1.vps.example.net.\n" \
        "$GENERATE 0-63 $ CNAME $.0/26.2.0.192.in-addr.arpa.\n"
    return {
        FORWARD: ("forward.db", _SOA + "ns1 IN A 127.0.0.1\n"),
        LOCKED: ("locked.db", _SOA),
        REV24: ("rev24.db", parent),
        CLASSLESS: ("classless.db", _SOA),
        REV6: ("rev6.db", _SOA),
    }


_GRANTS = {
    FORWARD: f"grant {KEY_NAME} zonesub A AAAA;",
    LOCKED: f"grant {OTHER_KEY} zonesub A AAAA;",
    REV24: f"grant {KEY_NAME} zonesub PTR;",
    CLASSLESS: f"grant {KEY_NAME} zonesub PTR;",
    REV6: f"grant {KEY_NAME} zonesub PTR;",
}


def _die_with_parent() -> None:
    """named gets SIGTERM when the test process dies, even by kill -9 (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class BindServer:
    """One named process; ``start()`` returns once it answers the forward zone's SOA."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        self.port = 0
        self.secret = new_secret()
        self.other_secret = new_secret()
        self.proc: subprocess.Popen | None = None

    # -- life ------------------------------------------------------------------------------

    def _config(self) -> str:
        d = self.dir
        zones = "".join(
            f'zone "{zone}" {{ type primary; file "{d / fname}"; '
            f"update-policy {{ {_GRANTS[zone]} }}; }};\n"
            for zone, (fname, _) in _zone_files().items()
        )
        return (
            f'key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{self.secret}"; }};\n'
            f'key "{OTHER_KEY}" {{ algorithm hmac-sha256; secret "{self.other_secret}"; }};\n'
            "options {\n"
            f'  directory "{d}";\n  pid-file "{d / "named.pid"}";\n'
            f'  session-keyfile "{d / "session.key"}";\n  managed-keys-directory "{d}";\n'
            f'  bindkeys-file "{d / "bind.keys"}";\n'
            f"  listen-on port {self.port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n"
            "  recursion no;\n  dnssec-validation no;\n  notify no;\n"
            "  allow-transfer { none; };\n};\n"
            "controls { };\n"
            "logging {\n"
            f'  channel log {{ file "{d / "named.log"}"; severity info; print-time yes; }};\n'
            "  category default { log; };\n  category update { log; };\n"
            "  category update-security { log; };\n};\n" + zones
        )

    def start(self, timeout: float = 10.0) -> BindServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        for fname, text in _zone_files().values():
            (self.dir / fname).write_text("$TTL 300\n" + text)
        last: Exception | None = None
        for _attempt in range(3):  # a port taken between the probe and named's bind: next one
            self.port = free_port_in_range()
            conf = self.dir / "named.conf"
            conf.write_text(self._config())
            out = open(self.dir / "named.out", "wb")  # noqa: SIM115 - kept for the process
            self.proc = subprocess.Popen(
                [NAMED, "-c", str(conf), "-f", "-4", "-n", "1"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            out.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if self.query(FORWARD, "SOA", timeout=0.2):
                        return self
                except (OSError, dns.exception.DNSException) as exc:
                    last = exc
                time.sleep(0.05)  # poll interval while named loads its zones
            self.stop()
            last = RuntimeError(f"named did not answer on port {self.port}: {self.log()[-2000:]}")
        raise RuntimeError(str(last))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log(self) -> str:
        text = ""
        for name in ("named.out", "named.log"):
            path = self.dir / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    # -- answers ---------------------------------------------------------------------------

    def answer(self, name: str, rtype: str, timeout: float = 3) -> dns.message.Message:
        """The server's whole answer to one unsigned query over UDP."""
        return dns.query.udp(dns.message.make_query(name, rtype), "127.0.0.1",
                             port=self.port, timeout=timeout)

    def query(self, name: str, rtype: str, timeout: float = 3) -> list[str]:
        """The rdata the server answers for (name, type) (a CNAME it follows within the zone)."""
        resp = self.answer(name, rtype, timeout)
        assert resp.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN), resp
        wanted = dns.rdatatype.from_text(rtype)
        return sorted(rd.to_text() for rr in resp.answer if rr.rdtype == wanted for rd in rr)

    def resolve(self, name: str, rtype: str) -> list[str]:
        """What a resolver ends up with: CNAMEs followed (named, authoritative only, stops at
        one into another zone; a resolver asks the target's servers: here the same one)."""
        for _ in range(8):
            found = self.query(name, rtype)
            if found:
                return found
            cname = self.query(name, "CNAME")
            if not cname:
                return []
            name = cname[0]
        raise AssertionError(f"CNAME loop at {name}")

    def soa_serial(self, zone: str) -> int:
        return int(self.query(zone, "SOA")[0].split()[2])

    def settings(self, **changes: object) -> dict:
        """Provider settings for this server and the ``pvekvm.`` key."""
        return {"server": "127.0.0.1", "port": self.port, "key_name": KEY_NAME,
                "key_secret": self.secret, "key_algorithm": "hmac-sha256", "timeout": 2,
                "ttl": 300, **changes}
