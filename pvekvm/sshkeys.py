"""The client's SSH public keys: parsed from the key blob, checked, and encoded for PVE.

A key is one OpenSSH public key line ``<type> <base64 blob> [comment]`` of an accepted type
(ed25519, ECDSA on nistp256/384/521, RSA of at least 2048 bits). The blob is decoded and loaded
by ``cryptography`` (as ``ssh-keygen -l``, PVE's own check, does), so a line that merely looks
like a key is refused. Reasons never quote the key (a private key pasted by mistake must not end
up in logs or billing). Everything here is linear in the input: the line's length is bounded
before anything is decoded.

PVE's ``sshkeys`` is a ``urlencoded`` string (pve-common: ``^[-%a-zA-Z0-9_.!~*'()]*$``) that
qemu-server decodes with ``URI::Escape::uri_unescape`` and splits on newlines:
:func:`pve_sshkeys` percent-encodes everything outside that set (spaces as ``%20``, never ``+``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

MAX_KEYS = 32  # the wire's hard cap; the engine's max_ssh_keys setting may be lower
MAX_KEY_LENGTH = 4096  # characters of one line: an RSA-16384 key line is about 2,800
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384  # ssh-keygen's own limit
MAX_COMMENT = 100
# the keys together, as the request body PVE receives carries them (form-encoded ``sshkeys=``):
# pve-http-server refuses a body over 64 KiB before 8.4 (libpve-http-server-perl 5.2.1 raised
# $limit_max_post to 512 KiB) with 501 "for data too large"; the rest of that PUT (user,
# password, network, description) stays well inside the other 16 KiB
MAX_PVE_BYTES = 48 * 1024
CURVES = {"ecdsa-sha2-nistp256": "secp256r1", "ecdsa-sha2-nistp384": "secp384r1",
          "ecdsa-sha2-nistp521": "secp521r1"}
KEY_TYPES = ("ssh-ed25519", *CURVES, "ssh-rsa")
# a comment stays one plain YAML scalar in PVE's user-data (``  - <key line>``): no ": ", " #"
_COMMENT = re.compile(r"[A-Za-z0-9@._+=,()'/-]+(?: [A-Za-z0-9@._+=,()'/-]+)*")
# what an OpenSSH key type looks like (ssh-dss, sk-ssh-ed25519@openssh.com, x509v3-sign-rsa):
# only such a first word is named in a refusal, never a passphrase pasted as "word word"
_KEY_TYPE_NAME = re.compile(r"(?:ssh|sk|ecdsa|x509v3|rsa|dsa)-[a-z0-9@.-]{1,40}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class BadKey(ValueError):
    """A key that is refused; the message says why without quoting it."""


@dataclass(frozen=True)
class SshKey:
    key_type: str
    blob: str  # base64, as sent
    comment: str
    bits: int

    @property
    def line(self) -> str:
        """The canonical line stored and sent to PVE."""
        return f"{self.key_type} {self.blob}" + (f" {self.comment}" if self.comment else "")

    @property
    def fingerprint(self) -> str:
        """``ssh-keygen -l``'s: SHA256 of the blob, base64 without padding."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_key(line: str) -> SshKey:
    """One public key line, checked; :class:`BadKey` says what is wrong."""
    if len(line) > MAX_KEY_LENGTH:
        raise BadKey(f"too long: {len(line)} characters (max {MAX_KEY_LENGTH})")
    if "PRIVATE KEY" in line:
        raise BadKey("this is a private key: send the public key (the .pub file) only")
    parts = line.strip().split(" ", 2)
    if len(parts) < 2 or not line.strip() or "\n" in line or "\r" in line or "\t" in line:
        raise BadKey("not an OpenSSH public key line ('<type> <base64> [comment]' on one line)")
    key_type, blob = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) == 3 else ""
    if key_type not in KEY_TYPES:
        if any(word in KEY_TYPES for word in line.split()[1:]):
            raise BadKey("options before the key (authorized_keys' no-pty, command=...) are "
                         "not accepted: send the key line only")
        known = _KEY_TYPE_NAME.fullmatch(key_type)  # else it may be a pasted secret's word
        raise BadKey((f"key type {key_type!r} is not accepted" if known else
                      "not an OpenSSH public key line: an unknown key type")
                     + f" (use one of {', '.join(KEY_TYPES)})")
    if not _BASE64.fullmatch(blob):
        raise BadKey("malformed: the key data is not base64")
    try:
        raw = base64.b64decode(blob, validate=True)
    except binascii.Error:
        raise BadKey("malformed: the key data is not base64") from None
    if len(raw) < 4 or raw[4:4 + int.from_bytes(raw[:4], "big")] != key_type.encode():
        raise BadKey(f"malformed: the key data is not a {key_type} key")
    try:
        key = load_ssh_public_key(f"{key_type} {blob}".encode())
    except (ValueError, TypeError):
        raise BadKey(f"malformed: the key data is not a valid {key_type} key") from None
    if comment and (len(comment) > MAX_COMMENT or not _COMMENT.fullmatch(comment)):
        raise BadKey(f"comment must be at most {MAX_COMMENT} characters of letters, digits, "
                     "spaces and @._+=,()'/-")
    bits = _bits(key_type, key)
    return SshKey(key_type, blob, comment, bits)


def _bits(key_type: str, key: object) -> int:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise BadKey(f"weak: an RSA key of {key.key_size} bits (min {MIN_RSA_BITS})")
        if key.key_size > MAX_RSA_BITS:
            raise BadKey(f"an RSA key of {key.key_size} bits (max {MAX_RSA_BITS})")
        return int(key.key_size)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != CURVES.get(key_type):
            raise BadKey(f"malformed: the curve does not match {key_type}")
        return int(key.curve.key_size)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 256
    raise BadKey(f"key type {key_type!r} is not accepted")  # pragma: no cover


def parse_keys(lines: list[str] | tuple[str, ...], limit: int = MAX_KEYS) -> list[SshKey]:
    """Every key checked, at most ``limit``, none twice. ``BadKey`` names the key by its
    position (1-based)."""
    if len(lines) > limit:
        raise BadKey(f"too many keys: {len(lines)} (max {limit})")
    keys: list[SshKey] = []
    seen: dict[str, int] = {}
    for at, line in enumerate(lines, 1):
        if not isinstance(line, str):
            raise BadKey(f"key {at}: expected string")
        try:
            key = parse_key(line)
        except BadKey as exc:
            raise BadKey(f"key {at}: {exc}") from None
        if key.blob in seen:
            raise BadKey(f"key {at}: the same key as key {seen[key.blob]}")
        seen[key.blob] = at
        keys.append(key)
    size = len(urllib.parse.urlencode({"sshkeys": pve_sshkeys([k.line for k in keys])}))
    if size > MAX_PVE_BYTES:
        raise BadKey(f"the keys are too large together: {size} bytes as Proxmox receives them "
                     f"(max {MAX_PVE_BYTES}; fewer keys, or ed25519 ones)")
    return keys


def stored(lines: list[str] | tuple[str, ...]) -> str | None:
    """The services.ssh_keys value: canonical lines joined by newlines (None: no keys)."""
    return "\n".join(k.line for k in parse_keys(lines)) or None


def lines_of(column: str | None) -> list[str]:
    return [line for line in (column or "").split("\n") if line]


def pve_sshkeys(lines: list[str]) -> str:
    """PVE's ``sshkeys`` value: the lines joined by newlines, percent-encoded
    (``urllib.parse.quote(..., safe='')``: spaces ``%20``, ``+`` ``/`` ``=`` encoded)."""
    return urllib.parse.quote("\n".join(lines), safe="")


def views(column: str | None) -> list[dict[str, Any]]:
    """What the API shows of a service's keys: type, bits, fingerprint, comment (no blob)."""
    out: list[dict[str, Any]] = []
    for line in lines_of(column):
        try:
            key = parse_key(line)
        except BadKey:  # stored keys were checked; a row edited by hand is shown as such
            out.append({"type": "invalid", "bits": 0, "fingerprint": "", "comment": ""})
            continue
        out.append({"type": key.key_type, "bits": key.bits, "fingerprint": key.fingerprint,
                    "comment": key.comment})
    return out
