"""The orders added with the OS picker, rescue mode, SSH keys and mail languages, sent by an
attacker: each hostile value is refused once with a reason that does not echo it, in time linear
in its size, and what is accepted is canonical (an ISO name cannot leave its storage, a key
comment cannot add YAML to PVE's user-data, a language tag cannot add a mail header)."""

from __future__ import annotations

import base64
import json
import re
import secrets as random
import time
import urllib.parse
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from pvekvm import languages, sshkeys
from pvekvm.mail import Mail
from pvekvm.wire.orders import MAX_EVENT_BYTES, InvalidEvent, ResetPasswordEvent, parse_event
from pvesim.vmconfig import userdata
from tests.jsonfuzz import best_cpu_s

ED25519 = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
NEW_TYPES: dict[str, dict[str, Any]] = {
    "reinstall_iso": {"iso": "debian-12.iso"}, "rescue_on": {}, "rescue_off": {},
    "language_change": {"language": "de"}, "create": {
        "client_id": 4, "product": "vps-small", "email": "a@example.com",
        "ssh_keys": [ED25519]},
    "reinstall": {"ssh_keys": [ED25519]}, "reset_password": {"ssh_keys": [ED25519]}}


def _body(kind: str, **fields: object) -> bytes:
    return json.dumps({"version": 1, "type": kind, "idempotency_key": "k-1", "service_id": 7,
                       **NEW_TYPES[kind], **fields}).encode()


def _refusal(body: bytes) -> str:
    with pytest.raises(InvalidEvent) as err:
        parse_event(body)
    return err.value.reason


@pytest.mark.parametrize("kind", sorted(NEW_TYPES))
def test_each_new_order_refuses_a_megabyte_and_30000_levels_in_linear_time(kind: str):
    assert parse_event(_body(kind)).type == kind  # the base order is a valid one
    big = _body(kind, note="x" * (1 << 20))
    assert _refusal(big) == f"event too large: {len(big)} bytes (max {MAX_EVENT_BYTES})"
    deep = _body(kind)[:-1] + b', "x": ' + b"[" * 30000 + b"]" * 30000 + b"}"
    assert _refusal(deep) == "not JSON: nested 30001 levels deep (max 32)"
    tenth = _body(kind)[:-1] + b', "x": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    assert best_cpu_s(_refusal, deep) < 30 * best_cpu_s(_refusal, tenth)  # linear: ~10


@pytest.mark.parametrize("iso", [
    "../x.iso", "local:iso/../../etc/pve/x.iso", "iso/a.iso", "a.iso/../../b.iso",
    "other-storage:iso/a.iso", "a\x00.iso", "a.iso\n", "a.iso\x00.txt", "\uff41.iso",
    ".iso", "-a.iso", "a.ISO", "a.iso ", "%2e%2e%2fa.iso", "a" * 4000 + ".iso"])
def test_an_installer_iso_that_leaves_its_storage_is_refused(iso: str):
    """reinstall_iso's ``iso`` is a bare file name: the step joins it to the product's ISO
    storage (``<storage>:iso/<name>``), so no other storage's or path's volume is reachable."""
    reason = _refusal(_body("reinstall_iso", iso=iso))
    assert reason == ("field 'iso': not an ISO file name (no path, [A-Za-z0-9._+-], ending "
                      f".iso): string of {len(iso)} characters" if len(iso) <= 205 else
                      f"field 'iso': too long: {len(iso)} characters (max 205)")


@pytest.mark.parametrize("value", [
    "de\r\nBcc: victim@example.com", "de\nX-Injected: 1", "ar\u202e", "ar-\u202eLatn",
    "de;rm -rf /", "de\x00", "\u0430r", "en" + "-x" * 20, "german\r\n"])
def test_a_language_that_would_break_a_mail_header_is_refused_without_echo(value: str):
    reason = _refusal(_body("language_change", language=value))
    assert reason.startswith("field 'language': ")
    assert value not in reason and "\r" not in reason and "\n" not in reason


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=40))
def test_every_accepted_language_is_a_plain_tag_safe_in_a_header(value: str):
    """Whatever a client stores as its language (a look-alike letter such as the Kelvin sign
    lower-cases to ASCII), what lands in Content-Language is an ASCII BCP 47 tag."""
    try:
        tag = languages.normalize(value)
    except ValueError:
        return
    assert re.fullmatch(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}", tag), tag
    lines = Mail("subject", "body", tag).mime().split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    assert f"Content-Language: {tag}" in lines
    names = [line.split(":", 1)[0] for line in lines]
    assert len(set(names)) == len(names), lines  # no header twice (one-part mail: was C-L)
    assert set(names) <= {"Subject", "MIME-Version", "Content-Language", "Content-Type",
                          "Content-Transfer-Encoding"}


COMMENT_REASONS = {
    "not an OpenSSH public key line ('<type> <base64> [comment]' on one line)",
    f"comment must be at most {sshkeys.MAX_COMMENT} characters of letters, digits, spaces and "
    "@._+=,()'/-"}


def _user_data_keys(lines: list[str]) -> dict:
    return yaml.safe_load(userdata({"sshkeys": sshkeys.pve_sshkeys(lines)}, 100))


@settings(max_examples=300, deadline=None)
@given(comment=st.text(max_size=60) | st.sampled_from([
    "a\nb", "a%0Ab", "x: y", "x #y", "- x", "a\u2028b", "a\x85", "'a'", "a'", "{a: b}", "[a]",
    "&a *a", "!!python/object", "|", ">", "a\r\npassword: x", "%0Apassword:%20x", "---"]))
def test_a_key_comment_cannot_add_yaml_to_pves_user_data(comment: str):
    """PVE writes each key as ``  - <line>`` into the cloud-init user-data (Cloudinit.pm); a
    comment is refused, or the YAML read back holds exactly the keys sent and nothing more."""
    try:
        key = sshkeys.parse_key(f"{ED25519} {comment}")
    except sshkeys.BadKey as exc:  # a fixed reason: nothing of the line in it
        assert str(exc) in COMMENT_REASONS
        return
    lines = [key.line, f"{ED25519} second"]
    data = _user_data_keys(lines)
    assert data["ssh_authorized_keys"] == lines
    assert set(data) == set(yaml.safe_load(userdata({}, 100))) | {"ssh_authorized_keys"}
    assert re.fullmatch(r"[-%a-zA-Z0-9_.!~*'()]*", sshkeys.pve_sshkeys(lines))


def _rsa_line(bits: int) -> str:
    """An ssh-rsa line with a random ``bits``-bit modulus (a public key is not checked for
    primes, by ssh-keygen nor here: generating a real 16384-bit key takes minutes)."""
    def mpint(n: int) -> bytes:
        raw = n.to_bytes((n.bit_length() + 8) // 8, "big")
        return len(raw).to_bytes(4, "big") + raw
    n = random.randbits(bits) | (1 << (bits - 1)) | 1
    blob = b"\0\0\0\7ssh-rsa" + mpint(65537) + mpint(n)
    return "ssh-rsa " + base64.b64encode(blob).decode()


def test_the_largest_keys_an_order_can_carry_cost_linear_time_and_fit_one_pve_request():
    """RSA-16384 lines are 2,772 characters: 23 fit in an order's 64 KB, the 32 the wire allows
    make an order too large (refused as such). But 19 of them already make PVE's config PUT
    over 64 KiB (form-encoded: ``%2B`` becomes ``%252B``), which PVE before 8.4 refuses at
    deploy: the order is refused up front. Checking the keys costs linear time."""
    keys = [_rsa_line(16384) for _ in range(32)]
    assert sshkeys.parse_key(keys[0]).bits == 16384
    over = _body("reset_password", ssh_keys=keys)
    assert _refusal(over) == f"event too large: {len(over)} bytes (max {MAX_EVENT_BYTES})"
    fits = [k for k in range(1, 33) if len(_body("reset_password", ssh_keys=keys[:k]))
            <= MAX_EVENT_BYTES][-1]
    assert 20 <= fits < sshkeys.MAX_KEYS
    reason = _refusal(_body("reset_password", ssh_keys=keys[:fits]))
    assert re.fullmatch(r"field 'ssh_keys': the keys are too large together: \d+ bytes as "
                        r"Proxmox receives them \(max 49152; fewer keys, or ed25519 ones\)",
                        reason), reason
    most = [k for k in range(1, fits) if len(urllib.parse.urlencode(
        {"sshkeys": sshkeys.pve_sshkeys(keys[:k])})) <= sshkeys.MAX_PVE_BYTES][-1]
    assert most >= 10  # the engine's default max_ssh_keys of the largest keys still fit
    one = best_cpu_s(parse_event, _body("reset_password", ssh_keys=keys[:1]))
    many = best_cpu_s(parse_event, _body("reset_password", ssh_keys=keys[:most]))
    assert many < 3 * most * one, (one, many)
    t0 = time.process_time()
    event = parse_event(_body("reset_password", ssh_keys=keys[:most]))
    assert isinstance(event, ResetPasswordEvent) and event.ssh_keys is not None
    assert len(event.ssh_keys) == most
    assert time.process_time() - t0 < 0.5  # about 3 ms here, at load 12 on 2 cores


def test_a_refused_key_is_never_quoted_not_even_a_secret_pasted_as_one():
    """A private key, a password or a token pasted into the key field: the reason names the
    key's position and what is wrong, never its text (refusals go to billing and logs)."""
    private = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()
    secret_words = ["Hunter2-Zq9x", "correct-horse battery-staple", "hunter2 x",
                    "ghp_" + "A1b2C3" * 6, private.replace("\n", " ")]
    for pasted in [*secret_words, ED25519.split()[1], f"{ED25519[:-3]}!!!"]:
        reason = _refusal(_body("reset_password", ssh_keys=[ED25519, pasted]))
        assert reason.startswith("field 'ssh_keys': key 2: "), reason
        for word in re.findall(r"[A-Za-z0-9+/=_-]{6,}", pasted):
            assert word not in reason, (word, reason)
    assert urllib.parse.quote("\n") not in sshkeys.pve_sshkeys([ED25519])
