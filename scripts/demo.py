"""Helpers for ``scripts/demo`` (run with the project's .venv python, from the repository root).

    python scripts/demo.py connection FILE        wait for pvesim's connection file, print URL+token
    python scripts/demo.py vms FILE               the VMs, asked through the PVE API with the token
    python scripts/demo.py smtp DIR [--port N]    mail catcher: saves each mail as DIR/NNN.eml,
                                                  writes its port to DIR/port (0 = a free port)
    python scripts/demo.py mails DIR              list the caught mails (recipient, subject)
    python scripts/demo.py pdns-zones ZONE...     (re)create PowerDNS zones through its API
    python scripts/demo.py dig NAME_OR_IP...      ask PowerDNS (A/AAAA for names, PTR for IPs)

PowerDNS: ``PDNS_API_PORT`` (8081), ``PDNS_DNS_PORT`` (5354), ``PDNS_API_KEY`` (pvekvm-test-key),
as scripts/pdns.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

PDNS_API = f"http://127.0.0.1:{os.environ.get('PDNS_API_PORT', '8081')}/api/v1/servers/localhost"
PDNS_DNS_PORT = int(os.environ.get("PDNS_DNS_PORT", "5354"))
PDNS_KEY = os.environ.get("PDNS_API_KEY", "pvekvm-test-key")


# ----------------------------------------------------------------------------- pvesim
def cmd_connection(args: argparse.Namespace) -> int:
    path = Path(args.file)
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            conn = json.loads(path.read_text())
            break
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                print(f"!! no connection file at {path} after {args.timeout:.0f}s", file=sys.stderr)
                return 1
            time.sleep(0.2)
    print(f"   base URL    {conn['base_url']}")
    print(f"   nodes       {', '.join(conn.get('nodes', []))}")
    print(f"   API token   {conn['token_id']}")
    print(f"   secret      {conn['token_secret']}")
    print(f"   CA bundle   {conn.get('ca_bundle')}")
    print(f"   try         curl -s --cacert {conn.get('ca_bundle')} -H 'Authorization: "
          f"PVEAPIToken={conn['token_id']}={conn['token_secret']}' {conn['base_url']}/version")
    return 0


def cmd_vms(args: argparse.Namespace) -> int:
    """``GET /cluster/resources?type=vm`` with the API token, as an operator would ask PVE."""
    import requests

    conn = json.loads(Path(args.file).read_text())
    resp = requests.get(f"{conn['base_url']}/cluster/resources", params={"type": "vm"},
                        headers={"Authorization": f"PVEAPIToken={conn['token_id']}="
                                                  f"{conn['token_secret']}"},
                        verify=conn.get("ca_bundle", True), timeout=10)
    resp.raise_for_status()
    print(f"   {'vmid':>5}  {'name':<30} {'node':<5} {'status':<8} {'cpus':>4} {'memory':>8}"
          f" {'disk':>7}")
    for vm in sorted(resp.json()["data"], key=lambda v: int(v["vmid"])):
        kind = "  (template)" if vm.get("template") else ""
        mem_mb, disk_gb = int(vm.get("maxmem", 0)) >> 20, int(vm.get("maxdisk", 0)) >> 30
        print(f"   {vm['vmid']:>5}  {vm.get('name', ''):<30} {vm['node']:<5}"
              f" {vm.get('status', '?'):<8} {vm.get('maxcpu', 0):>4}"
              f" {mem_mb:>6}MB {disk_gb:>5}GB{kind}")
    return 0


# ----------------------------------------------------------------------------- mail catcher
class MailSaver:
    """aiosmtpd handler: every accepted mail becomes DIR/NNN.eml (written, then renamed)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = len(list(directory.glob("*.eml")))

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        self.count += 1
        path = self.directory / f"{self.count:03d}.eml"
        head = f"X-Demo-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(head + raw)
        tmp.replace(path)
        subject = message_from_bytes(raw, policy=policy.default)["Subject"]
        print(f"mail {path.name} to {', '.join(envelope.rcpt_tos)}: {subject}", flush=True)
        return "250 Message accepted"


async def _serve_smtp(directory: Path, host: str, port: int) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    handler = MailSaver(directory)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="demo-mail-catcher", enable_SMTPUTF8=True), host, port)
    bound = server.sockets[0].getsockname()[1]
    tmp = directory / "port.tmp"
    tmp.write_text(f"{bound}\n")
    tmp.replace(directory / "port")
    print(f"mail catcher listening on {host}:{bound}, saving to {directory}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def cmd_smtp(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve_smtp(directory, args.host, args.port))
    return 0


def cmd_mails(args: argparse.Namespace) -> int:
    files = sorted(Path(args.dir).glob("*.eml"))
    for path in files:
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        print(f"   {path.name}  to {msg['X-Demo-Envelope-To'] or msg['To']}:  {msg['Subject']}")
    if not files:
        print("   (no mail received)")
    return 0


# ----------------------------------------------------------------------------- PowerDNS
def _pdns(method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(PDNS_API + path, data=data, method=method,
                                 headers={"X-API-Key": PDNS_KEY,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def cmd_pdns_zones(args: argparse.Namespace) -> int:
    """Each zone afresh (this demo owns them): stale records of an earlier run cannot pass for
    proof that this run published DNS."""
    try:
        _pdns("GET", "")
    except OSError as exc:
        print(f"!! PowerDNS API not answering at {PDNS_API}: {exc}", file=sys.stderr)
        return 1
    for zone in args.zones:
        name = zone.rstrip(".") + "."
        status, _ = _pdns("DELETE", f"/zones/{name}")
        status, text = _pdns("POST", "/zones", {"name": name, "kind": "Native",
                                                "nameservers": ["ns1.pvekvm.test."]})
        if status != 201:
            print(f"!! creating zone {name} failed: HTTP {status} {text[:200]}", file=sys.stderr)
            return 1
        print(f"   zone {name} created")
    return 0


def _query(name: str, rtype: str) -> list[str]:
    import dns.message
    import dns.query
    import dns.rdatatype

    msg = dns.message.make_query(name, rtype)
    answer = dns.query.udp(msg, "127.0.0.1", port=PDNS_DNS_PORT, timeout=3)
    wanted = dns.rdatatype.from_text(rtype)
    return sorted(rd.to_text() for rrset in answer.answer if rrset.rdtype == wanted
                  for rd in rrset)


def cmd_dig(args: argparse.Namespace) -> int:
    """Prints answers like dig's short form; exit 1 when a name got no answer."""
    missing = 0
    for item in args.names:
        try:
            queries = [(ipaddress.ip_address(item).reverse_pointer + ".", "PTR")]
        except ValueError:
            name = item.rstrip(".") + "."
            queries = [(name, "A"), (name, "AAAA")]
        for name, rtype in queries:
            try:
                answers = _query(name, rtype)
            except Exception as exc:  # noqa: BLE001 - timeouts, refused: show and carry on
                answers, note = [], f"({type(exc).__name__})"
            else:
                note = "(no answer)"
            if answers:
                for a in answers:
                    print(f"   {name:<42} {rtype:<5} {a}")
            elif rtype != "AAAA":  # most demo hosts have no IPv6: only A/PTR must answer
                missing += 1
                print(f"   {name:<42} {rtype:<5} {note}")
    return 1 if missing else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("connection")
    p.add_argument("file")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=cmd_connection)
    p = sub.add_parser("vms")
    p.add_argument("file")
    p.set_defaults(func=cmd_vms)
    p = sub.add_parser("smtp")
    p.add_argument("dir")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.set_defaults(func=cmd_smtp)
    p = sub.add_parser("mails")
    p.add_argument("dir")
    p.set_defaults(func=cmd_mails)
    p = sub.add_parser("pdns-zones")
    p.add_argument("zones", nargs="+")
    p.set_defaults(func=cmd_pdns_zones)
    p = sub.add_parser("dig")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=cmd_dig)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
