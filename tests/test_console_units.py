"""The console proxy's parts that need no services: its settings' refusals, the RFB input
meter (what counts as user input for the idle timeout), the forwarded-for rule."""

from __future__ import annotations

import struct
import time

import pytest

from pvekvm.config import ConfigError, load_settings
from pvekvm.console.rfb import InputMeter
from pvekvm.forwarded import real_caller

KEY = struct.pack(">BBxxI", 4, 1, 0x61)
UPDATE = struct.pack(">BBHHHH", 3, 1, 0, 0, 640, 400)
POINTER = struct.pack(">BBHH", 5, 0, 10, 10)


@pytest.mark.parametrize("body,error", [
    ("token_ttl_s = 0", "token_ttl_s: expected a positive number"),
    ("sessions_per_service = -1", "sessions_per_service: expected 0"),
    ('tls_cert = "/x.pem"', "set both tls_cert and tls_key"),
    ('public_url = "console.example.net"', "public_url: expected https://"),
    ("idle_timeout_s = true", "idle_timeout_s: expected int"),
    ("colour = 1", "unknown key 'colour'"),
    ('frame_ancestors = ["https://a.example; script-src *"]', "frame_ancestors: expected"),
    ('frame_ancestors = ["*"]', "frame_ancestors: expected"),
    ('''frame_ancestors = ["'none'", "'self'"]''', "'none' stands alone"),
])
def test_console_settings_refuse_with_the_key_named(tmp_path, body, error):
    f = tmp_path / "pvekvm.toml"
    f.write_text(f"[console]\n{body}\n")
    with pytest.raises(ConfigError, match=error):
        load_settings(f)


def test_frame_ancestors_default_to_self_and_take_origins(tmp_path):
    f = tmp_path / "pvekvm.toml"
    f.write_text("[console]\n")
    assert load_settings(f).console.frame_ancestors == ("'self'",)
    f.write_text('''[console]\nframe_ancestors = ["'self'", "https://billing.example.net:8443",
                   "https://*.example.org"]\n''')
    assert load_settings(f).console.frame_ancestors == (
        "'self'", "https://billing.example.net:8443", "https://*.example.org")


def test_screen_requests_are_not_input_keys_pointer_and_clipboard_are():
    m = InputMeter()
    set_encodings = struct.pack(">BxH", 2, 3) + b"\0" * 12
    assert not m.feed(set_encodings + UPDATE * 50)
    assert m.feed(UPDATE + KEY) and m.feed(POINTER)
    cut = struct.pack(">BxxxI", 6, 5) + b"hello"
    assert m.feed(cut[:3]) and m.feed(cut[3:]) and not m.feed(UPDATE)  # a head: input already
    m2 = InputMeter()
    assert m2.feed(cut[:6]) and m2.feed(cut[6:]) and not m2.feed(UPDATE)
    qemu_key = struct.pack(">BBHII", 255, 0, 1, 0x61, 30)
    assert InputMeter().feed(qemu_key)
    for split in range(1, len(UPDATE)):  # a message cut across websocket frames
        m3 = InputMeter()
        assert not m3.feed(UPDATE[:split]) and not m3.feed(UPDATE[split:] + UPDATE)


def test_an_unknown_message_turns_the_meter_blind_never_an_idle_cut_by_mistake():
    m = InputMeter()
    assert m.feed(b"\x63" + b"\0" * 20) and m.feed(UPDATE) and m.blind


def test_the_meter_is_linear_and_keeps_no_clipboard():
    m = InputMeter()
    big = struct.pack(">BxxxI", 6, 50_000_000)
    assert m.feed(big)
    started = time.perf_counter()
    for _ in range(380):
        assert m.feed(b"x" * 128 * 1024)  # 50 MB of paste, as 128 KiB frames: input
    assert time.perf_counter() - started < 2 and len(m.buf) == 0
    assert m.feed(b"x" * (50_000_000 - 380 * 128 * 1024)) and not m.feed(UPDATE)
    assert not m.blind
    many = UPDATE * 13_000  # a 128 KiB frame of small messages: no quadratic copying
    started = time.perf_counter()
    assert not InputMeter().feed(many)
    assert time.perf_counter() - started < 1


def test_forwarded_for_is_believed_from_trusted_proxies_only():
    trusted = ("10.0.0.0/8",)
    assert real_caller("198.51.100.1", ["203.0.113.9"], trusted) == "198.51.100.1"
    assert real_caller("10.0.0.5", ["1.2.3.4, 203.0.113.9"], trusted) == "203.0.113.9"
    assert real_caller("10.0.0.5", ["garbage"], trusted) == "10.0.0.5"
    assert real_caller("10.0.0.5", [",".join(["10.0.0.1"] * 10_000)], trusted) == "10.0.0.5"
