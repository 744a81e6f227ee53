"""RFC 2136 dynamic update provider, TSIG-signed (RFC 8945): BIND, Knot, PowerDNS (Windows DNS
with unsigned = true: its secure updates are GSS-TSIG, not spoken here).

Every change is read first (a query to the same server, signed with the same key), sent only
when the server's rrset differs, as one UPDATE message that deletes the rrset and adds the
wanted records (applied atomically by the server), then read back: a server that answered
NOERROR but holds something else (a CNAME at the name, a policy that silently drops the
record) is an error naming what it holds. A repeated call sends no UPDATE at all.

The TSIG secret lives only in the dnspython key object; no message, repr or log line names it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update

from pvekvm.validation import is_valid_hostname

from ._http import same_content, timeout_of
from .model import RECORD_TYPES, DnsError

DEFAULT_PORT = 53
ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,
}
MIN_SECRET_BYTES = 16
# TSIG key names are domain names; tsig-keygen's default is "tsig-key", BIND's "ddns-key.<zone>".
_KEY_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
PROBE_LABEL = "pvekvm-probe"


def hostport(server: object, port: object) -> str:
    """``server:port`` for messages, an IPv6 address in brackets."""
    text = str(server)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def _key_name_ok(name: object) -> bool:
    if not isinstance(name, str) or not name.isascii() or not 0 < len(name.rstrip(".")) <= 253:
        return False
    return all(_KEY_LABEL.fullmatch(label) for label in name.rstrip(".").split("."))


def check_settings(settings: dict[str, Any]) -> None:
    """ValueError for settings every update would fail with (never echoing the secret)."""
    server = settings.get("server")
    if not isinstance(server, str) or not (_is_ip(server) or is_valid_hostname(server)):
        raise ValueError("rfc2136: server must be the primary's IP address or host name")
    port = settings.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"rfc2136: port must be 1..65535, not {str(port)[:20]!r}")
    unsigned = settings.get("unsigned", False)
    if not isinstance(unsigned, bool):
        raise ValueError("rfc2136: unsigned must be true or false")
    has_key = bool(settings.get("key_name") or settings.get("key_secret"))
    if unsigned:
        if has_key:
            raise ValueError("rfc2136: unsigned = true and a TSIG key: choose one")
        return
    if not has_key:
        raise ValueError("rfc2136: set key_name and key_secret (the TSIG key the server's "
                         "update-policy grants), or unsigned = true for an address-based ACL")
    if not _key_name_ok(settings.get("key_name")):
        raise ValueError("rfc2136: key_name must be the TSIG key's name, a domain name")
    secret = settings.get("key_secret")
    try:
        raw = base64.b64decode(str(secret).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("rfc2136: key_secret is not base64 (paste the secret tsig-keygen "
                         "prints)") from None
    if not isinstance(secret, str) or len(raw) < MIN_SECRET_BYTES:
        raise ValueError(f"rfc2136: key_secret must hold at least {MIN_SECRET_BYTES} bytes")
    algorithm = settings.get("key_algorithm", "hmac-sha256")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"rfc2136: key_algorithm must be one of {', '.join(ALGORITHMS)}, "
                         f"not {str(algorithm)[:40]!r}")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _absolute(name: str) -> dns.name.Name:
    try:
        return dns.name.from_text(name.rstrip(".") + ".")
    except dns.exception.DNSException as exc:
        raise ValueError(f"invalid DNS name {name[:80]!r}: {type(exc).__name__}") from None


def _text_of(rtype: str, rdata: object) -> str:
    if rtype == "PTR":
        return str(rdata.target.to_text(omit_final_dot=True)).lower()  # type: ignore[attr-defined]
    return str(rdata.address)  # type: ignore[attr-defined]


def _same(rtype: str, held: Iterable[str], wanted: Iterable[str]) -> bool:
    held, wanted = list(held), list(wanted)
    return all(any(same_content(rtype, h, w) for w in wanted) for h in held) and \
        all(any(same_content(rtype, h, w) for h in held) for w in wanted)


class Rfc2136Provider:
    """Settings: server (the zone's primary: IP or host name), port (53), key_name, key_secret
    (base64, as tsig-keygen prints it), key_algorithm (hmac-sha256), or unsigned = true;
    timeout (seconds, default 5). Updates and reads go over TCP."""

    name = "rfc2136"

    def __init__(self, settings: dict[str, Any]) -> None:
        check_settings(settings)
        self.server = str(settings["server"])
        self.port = int(settings.get("port", DEFAULT_PORT))
        self.timeout = timeout_of(settings)
        self.key_name = str(settings.get("key_name") or "")
        self._key: dns.tsig.Key | None = None
        if not settings.get("unsigned"):
            self._key = dns.tsig.Key(self.key_name, str(settings["key_secret"]),
                                     ALGORITHMS[settings.get("key_algorithm", "hmac-sha256")])
        self._addresses: list[str] = []

    def __repr__(self) -> str:
        return f"Rfc2136Provider({hostport(self.server, self.port)}, key {self.key_name or '-'})"

    # -- transport ---------------------------------------------------------------------------

    def _where(self, zone: str, action: str) -> str:
        return f"rfc2136 {hostport(self.server, self.port)} zone {zone}: {action}"

    def _server_addresses(self, where: str) -> list[str]:
        """The server's addresses: itself when an IP, else every address it resolves to (the
        one that answered last comes first)."""
        if not self._addresses:
            if _is_ip(self.server):
                self._addresses = [self.server]
            else:
                try:
                    infos = socket.getaddrinfo(self.server, self.port, type=socket.SOCK_STREAM)
                except OSError as exc:
                    raise DnsError(f"{where}: cannot resolve server {self.server!r}: {exc}",
                                   transient=True) from None
                self._addresses = list(dict.fromkeys(str(i[4][0]) for i in infos))
        return self._addresses

    def _send(self, msg: dns.message.Message, where: str) -> dns.message.Message:
        """dns.query.tcp to each address in turn while connecting fails (a host name whose
        IPv6 address the server does not listen on, say); a time-out ends the attempt."""
        addresses = self._server_addresses(where)
        for n, address in enumerate(addresses):
            try:
                resp = dns.query.tcp(msg, address, port=self.port, timeout=self.timeout)
            except OSError as exc:
                if isinstance(exc, TimeoutError) or n + 1 == len(addresses):
                    raise
                continue
            self._addresses = [address] + [a for a in addresses if a != address]
            return resp
        raise AssertionError("unreachable: at least one address")

    def _exchange(self, msg: dns.message.Message, where: str) -> dns.message.Message:
        """Send over TCP; every failure becomes a DnsError naming what to fix."""
        if self._key is not None:
            msg.use_tsig(self._key)
        key = f"TSIG key {self.key_name!r}"
        try:
            return self._send(msg, where)
        except dns.exception.Timeout:
            raise DnsError(f"{where}: no answer within {self.timeout:g}s", transient=True) \
                from None
        except dns.tsig.PeerBadKey:
            raise DnsError(f"{where}: the server does not know {key} with this algorithm "
                           "(BADKEY): check key_name and key_algorithm against the server's "
                           "key statement") from None
        except dns.tsig.PeerBadSignature:
            raise DnsError(f"{where}: the server refused the signature of {key} (BADSIG): "
                           "key_secret differs from the server's") from None
        except dns.tsig.PeerBadTime:
            raise DnsError(f"{where}: the server refused the signature's time (BADTIME): this "
                           "host's clock and the server's differ; synchronise them (NTP)",
                           transient=True) from None
        except dns.tsig.PeerError as exc:
            raise DnsError(f"{where}: the server refused {key} ({type(exc).__name__})") from None
        except (dns.tsig.BadSignature, dns.message.UnknownTSIGKey, dns.tsig.BadTime):
            raise DnsError(f"{where}: the answer's TSIG signature does not verify with {key}: "
                           "it is not from the server that holds the key") from None
        except (ConnectionError, EOFError, OSError) as exc:
            raise DnsError(f"{where}: cannot talk to the server ({type(exc).__name__})",
                           transient=True) from None
        except dns.exception.DNSException as exc:
            raise DnsError(f"{where}: malformed answer ({type(exc).__name__})") from None

    def _refusal(self, resp: dns.message.Message, where: str) -> DnsError:
        """The server's answer code, as a reason an operator can act on."""
        code = resp.rcode()
        text = dns.rcode.to_text(code)
        who = f"TSIG key {self.key_name!r}" if self._key is not None else "unsigned updates"
        reasons = {
            dns.rcode.REFUSED: f"the server refused (REFUSED): its update-policy / allow-update "
                               f"does not let {who} make this change",
            dns.rcode.NOTAUTH: "the server is not authoritative for the zone (NOTAUTH): set "
                               "server to the zone's primary, and check the zone's name",
            dns.rcode.NOTZONE: "the name is outside the zone (NOTZONE)",
            dns.rcode.NOTIMP: "the server does not implement dynamic update (NOTIMP)",
            dns.rcode.FORMERR: "the server could not parse the update (FORMERR)",
            dns.rcode.SERVFAIL: "server failure (SERVFAIL): the zone is not loaded or its "
                                "journal not writable; see the server's log",
        }
        reason = reasons.get(code, f"the server answered {text}")
        return DnsError(f"{where}: {reason}", transient=code == dns.rcode.SERVFAIL)

    # -- reads -------------------------------------------------------------------------------

    def _query(self, qname: dns.name.Name, rtype: str, where: str) -> dns.message.Message:
        """An authoritative answer (NOERROR or NXDOMAIN with AA) to one query, or DnsError."""
        msg = dns.message.make_query(qname, rtype)
        msg.flags &= ~dns.flags.RD
        resp = self._exchange(msg, where)
        code = resp.rcode()
        if code == dns.rcode.REFUSED:
            raise DnsError(f"{where}: the server refuses queries for the zone (REFUSED): it "
                           "does not serve the zone, or its allow-query excludes this host")
        if code not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise self._refusal(resp, where)
        if not resp.flags & dns.flags.AA:
            raise DnsError(f"{where}: the server is not authoritative for the zone (answer "
                           "without AA): set server to the zone's primary")
        return resp

    def _read(self, name: str, rtype: str, where: str) -> tuple[list[str], int | None]:
        """The server's rrset (contents, ttl); ([], None) when absent. Another type at the name
        (a CNAME) is returned as e.g. ["CNAME x.example."] with ttl None."""
        qname = _absolute(name)
        resp = self._query(qname, rtype, where)
        wanted = dns.rdatatype.from_text(rtype)
        for rrset in resp.answer:
            if rrset.name == qname and rrset.rdtype == wanted:
                return sorted(_text_of(rtype, rd) for rd in rrset), int(rrset.ttl)
        others = [f"{dns.rdatatype.to_text(rr.rdtype)} {rd.to_text()}"
                  for rr in resp.answer if rr.name == qname for rd in rr]
        return others, None

    # -- provider ----------------------------------------------------------------------------

    @staticmethod
    def _checked(zone: str, name: str, rtype: str) -> None:
        """Belt and braces behind plan.check_record: nothing outside the zone leaves here."""
        if rtype not in RECORD_TYPES:
            raise ValueError(f"unsupported record type {str(rtype)[:10]!r}")
        if not (name == zone or name.endswith("." + zone)) or len(name) > 253:
            raise ValueError(f"record {name[:80]!r} is not inside zone {zone!r}")

    def upsert(self, zone: str, name: str, type: str, contents: list[str], ttl: int) -> None:
        self._checked(zone, name, type)
        where = self._where(zone, f"replace {type} {name}")
        wanted = [c.rstrip(".") + "." if type == "PTR" else c for c in contents]
        held, held_ttl = self._read(name, type, where)
        if held_ttl == int(ttl) and _same(type, held, contents):
            return  # already so: no UPDATE, no serial change
        update = dns.update.UpdateMessage(_absolute(zone))
        update.replace(_absolute(name), int(ttl), type, *wanted)
        resp = self._exchange(update, where)
        if resp.rcode() != dns.rcode.NOERROR:
            raise self._refusal(resp, where)
        held, held_ttl = self._read(name, type, where)
        if held_ttl != int(ttl) or not _same(type, held, contents):
            shown = ", ".join(held) or "nothing"
            raise DnsError(f"{where}: the server took the update (NOERROR) but answers "
                           f"{shown}: another record at the name (a CNAME), or a policy that "
                           "drops the change")

    def delete(self, zone: str, name: str, type: str) -> None:
        self._checked(zone, name, type)
        where = self._where(zone, f"delete {type} {name}")
        _held, held_ttl = self._read(name, type, where)
        if held_ttl is None:
            return  # absent: nothing to send
        update = dns.update.UpdateMessage(_absolute(zone))
        update.delete(_absolute(name), type)
        resp = self._exchange(update, where)
        if resp.rcode() != dns.rcode.NOERROR:
            raise self._refusal(resp, where)
        held, held_ttl = self._read(name, type, where)
        if held_ttl is not None:
            raise DnsError(f"{where}: the server took the delete (NOERROR) but still answers "
                           f"{', '.join(held)} (a wildcard record answering for the name?)")

    def probe(self, zone: str) -> None:
        """The zone's SOA from an authoritative answer (the key is accepted), then an UPDATE that
        changes nothing: delete the rrset of the type we write at ``pvekvm-probe.<zone>``,
        on the prerequisite that the name does not exist. The server checks the prerequisite,
        then its update-policy for that type: REFUSED says the key may not write the zone."""
        self._read_soa(zone, self._where(zone, "probe: the zone's SOA"))
        rtype = "PTR" if zone.endswith(".arpa") else "A"
        where = self._where(zone, f"probe: may the key write {rtype}")
        probe = _absolute(f"{PROBE_LABEL}.{zone}")
        update = dns.update.UpdateMessage(_absolute(zone))
        update.absent(probe)
        update.delete(probe, rtype)
        resp = self._exchange(update, where)
        if resp.rcode() not in (dns.rcode.NOERROR, dns.rcode.YXDOMAIN):
            raise self._refusal(resp, where)

    def _read_soa(self, zone: str, where: str) -> None:
        qname = _absolute(zone)
        resp = self._query(qname, "SOA", where)
        if not any(rr.name == qname and rr.rdtype == dns.rdatatype.SOA for rr in resp.answer):
            raise DnsError(f"{where}: the server answers no SOA for the zone's name: the zone "
                           "is named differently there (a name inside another zone?)")
