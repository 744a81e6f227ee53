"""The VNC side of ``vncwebsocket``: the websocket pveproxy upgrades to, and an RFB 3.8 server
behind it that plays the VM's display (what QEMU's VNC server is to ``qm vncproxy``).

As PVE (pve-http-server ``websocket_proxy``, qemu-server ``vncproxy``/``vncwebsocket``):

* the upgrade is answered only after the API call succeeded (the ticket checked as
  ``verify_vnc_ticket``: user, ``/vms/{vmid}``, port, 40 s); the requested subprotocol is echoed;
* frames from the client must be masked, unfragmented, without RSV bits, at most 128 KiB;
  binary and text frames carry bytes, ping is answered with pong, close ends the stream; what
  the VM sends goes out in binary frames of at most 128 KiB;
* the vncproxy task accepts one connection within 10 s of ``vncproxy``; a second one, a late
  one or one for a stopped VM (``qm vncproxy`` dies: "VM N not running") is upgraded and then
  closed without a byte of RFB;
* the RFB server asks for VNC Authentication (DES challenge); the password is the one
  ``qm vncproxy`` set (``LC_PVE_TICKET``: the generated ``password``, else the ticket; DES uses
  its first 8 bytes), "Authentication failed" otherwise.

The screen (640x400, raw encoding, any 32-bit true-colour pixel format the client sets) shows
the VM's name, a boot text and a login prompt; printable keys typed are echoed after the
prompt, BackSpace deletes, Return starts a new line, Ctrl-Alt-Del prints a line. The screen is
the VM's: it outlives a connection (``Screen`` per VMID, read by ``/_sim/console/{vmid}``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading
from typing import Any

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 400
LINE_H, TOP, LEFT = 18, 10, 10
MAX_PAYLOAD = 128 * 1024
BG, FG, TITLE = (0, 0, 32), (200, 200, 200), (255, 200, 0)
ACCEPT_WINDOW_S = 10.0  # the vncproxy task's accept timeout
_font: Any = None


def font() -> Any:
    global _font
    if _font is None:
        _font = ImageFont.load_default(size=15)
    return _font


def vnc_response(password: str, challenge: bytes) -> bytes:
    """The VNC Authentication answer: DES-ECB of the 16-byte challenge, keyed with the first 8
    bytes of the password (zero-padded), each byte's bits reversed (RFC 6143 7.2.2)."""
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return enc.update(challenge) + enc.finalize()


class Screen:
    """One VM's display: text lines drawn into an RGB image."""

    def __init__(self, vm: dict[str, Any]) -> None:
        name = str(vm["config"].get("name") or f"VM {vm['vmid']}")
        self.name = name
        self.lines = [name, "",
                      "SeaBIOS (version rel-1.16.3-0-ga6ed6b701f0a-prebuilt.qemu.org)",
                      f"Machine UUID {vm['config'].get('smbios1', 'uuid=').split('uuid=')[-1]}",
                      "Booting from Hard Disk...", "",
                      "Debian GNU/Linux 12 " + name + " tty1", "",
                      name + " login: "]
        self.lock = threading.Lock()
        self.version = 0
        self._image: Image.Image | None = None
        self._shown: list[str] = []

    def render(self) -> tuple[Image.Image, list[str], int]:
        """(image, the text rows it shows, version), consistent with each other."""
        with self.lock:
            if self._image is None:
                img = Image.new("RGB", (WIDTH, HEIGHT), BG)
                draw = ImageDraw.Draw(img)
                rows = (HEIGHT - TOP) // LINE_H
                shown = self.lines[:1] + self.lines[1:][-(rows - 1):]
                for i, text in enumerate(shown):
                    draw.text((LEFT, TOP + i * LINE_H), text, font=font(),
                              fill=TITLE if i == 0 else FG)
                self._image, self._shown = img, shown
            return self._image, self._shown, self.version

    def image(self) -> Image.Image:
        return self.render()[0]

    def _changed(self) -> None:
        self._image = None
        self.version += 1

    def key(self, keysym: int, ctrl_alt: bool) -> None:
        with self.lock:
            if keysym in (0xFFFF, 0xFF9F) and ctrl_alt:  # Delete / KP_Delete
                self.lines += ["[Ctrl-Alt-Del] The system is going down for reboot NOW!",
                               self.name + " login: "]
            elif 0x20 <= keysym <= 0x7E:
                if len(self.lines[-1]) < 200:
                    self.lines[-1] += chr(keysym)
            elif keysym == 0xFF08:  # BackSpace
                prompt = self.name + " login: "
                if len(self.lines[-1]) > len(prompt) or not self.lines[-1].startswith(prompt):
                    self.lines[-1] = self.lines[-1][:-1]
            elif keysym in (0xFF0D, 0xFF8D):  # Return: a new prompt
                self.lines = (self.lines + [self.name + " login: "])[-200:]
            else:
                return
            self._changed()

    def snapshot(self) -> dict[str, Any]:
        """What ``/_sim/console/{vmid}`` answers: the text and the pixels (RGB, base64)."""
        img = self.image()
        with self.lock:
            lines = list(self.lines)
        return {"width": WIDTH, "height": HEIGHT, "name": self.name, "lines": lines,
                "line_height": LINE_H, "top": TOP, "left": LEFT,
                "rgb": base64.b64encode(img.tobytes()).decode()}


# --- websocket (server side, RFC 6455) --------------------------------------------------------

class Closed(Exception):
    """The websocket ended (close frame, EOF, or a frame PVE refuses)."""


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


class WebSocket:
    def __init__(self, sock: socket.socket, rfile: Any) -> None:
        self.sock, self.rfile = sock, rfile
        self.buf = bytearray()
        self.wlock = threading.Lock()

    def _exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if data is None or len(data) < n:
            raise Closed("eof")
        return bytes(data)

    def _frame(self) -> bytes | None:
        """The payload of the next data frame (None for control frames handled here)."""
        b0, b1 = self._exact(2)
        if not b0 & 0x80:
            raise Closed("received fragmented websocket frame")
        if b0 & 0x70:
            raise Closed("received websocket frame with RSV flags")
        if not b1 & 0x80:
            raise Closed("received unmasked websocket frame from client")
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", self._exact(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", self._exact(8))
        if length > MAX_PAYLOAD:
            raise Closed(f"received too large websocket frame (len = {length})")
        mask = self._exact(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._exact(length)))
        opcode = b0 & 0x0F
        if opcode in (1, 2):
            return payload
        if opcode == 8:
            raise Closed("close")
        if opcode == 9:
            self._send(payload, 0x8A)
            return None
        if opcode == 0xA:
            return None
        raise Closed(f"received unhandled websocket opcode {opcode}")

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes of the stream the client sends."""
        while len(self.buf) < n:
            payload = self._frame()
            if payload:
                self.buf += payload
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _send(self, data: bytes, head: int = 0x82) -> None:
        n = len(data)
        if n <= 125:
            hdr = struct.pack(">BB", head, n)
        elif n <= 0xFFFF:
            hdr = struct.pack(">BBH", head, 126, n)
        else:
            hdr = struct.pack(">BBQ", head, 127, n)
        with self.wlock:
            self.sock.sendall(hdr + data)

    def send(self, data: bytes) -> None:
        for i in range(0, len(data), MAX_PAYLOAD):
            self._send(data[i:i + MAX_PAYLOAD])


# --- RFB 3.8 server ---------------------------------------------------------------------------

_RAWMODES = {  # (bits-per-pixel, big-endian, red shift, green shift, blue shift) -> Pillow
    (32, 0, 0, 8, 16): "RGBX", (32, 0, 16, 8, 0): "BGRX",
    (32, 1, 16, 8, 0): "XRGB", (32, 1, 0, 8, 16): "XBGR"}


class RfbSession:
    """One client of one VM's display, served on the handler's thread until it leaves."""

    def __init__(self, ws: WebSocket, screen: Screen, password: str) -> None:
        self.ws, self.screen, self.password = ws, screen, password
        self.rawmode = "BGRX"  # the ServerInit format: 32 bpp, little-endian, r16 g8 b0
        self.pending: tuple[int, int, int, int] | None = None
        self.sent_version = -1
        self.sent_rows: list[str] | None = None  # None: the client has nothing yet
        self.ctrl = self.alt = False

    def handshake(self) -> bool:
        ws = self.ws
        ws.send(b"RFB 003.008\n")
        version = ws.read(12)
        if version[:4] != b"RFB " or version[4:11] not in (b"003.008", b"003.007"):
            return False
        ws.send(b"\x01\x02")  # one type: VNC Authentication
        if ws.read(1) != b"\x02":
            ws.send(struct.pack(">I", 1) + _reason("security type not offered"))
            return False
        challenge = os.urandom(16)
        ws.send(challenge)
        if ws.read(16) != vnc_response(self.password, challenge):
            ws.send(struct.pack(">I", 1) + _reason("Authentication failed"))
            return False
        ws.send(struct.pack(">I", 0))
        ws.read(1)  # ClientInit: shared flag
        name = self.screen.name.encode()
        ws.send(struct.pack(">HHBBBBHHHBBB3xI", WIDTH, HEIGHT, 32, 24, 0, 1, 255, 255, 255,
                            16, 8, 0, len(name)) + name)
        return True

    def serve(self) -> None:
        if not self.handshake():
            return
        ws = self.ws
        while True:
            kind = ws.read(1)[0]
            if kind == 0:  # SetPixelFormat
                fmt = ws.read(19)[3:]
                bpp, _depth, big, true = fmt[0], fmt[1], fmt[2], fmt[3]
                shifts = (fmt[10], fmt[11], fmt[12])
                mode = _RAWMODES.get((bpp, 1 if big else 0, *shifts)) if true else None
                if mode is None:
                    return  # only 32-bit true colour here (noVNC's); QEMU would convert
                self.rawmode = mode
            elif kind == 2:  # SetEncodings
                (count,) = struct.unpack(">xH", ws.read(3))
                ws.read(4 * count)
            elif kind == 3:  # FramebufferUpdateRequest
                incremental, x, y, w, h = struct.unpack(">BHHHH", ws.read(9))
                self.pending = (x, y, w, h)
                if not incremental:
                    self.sent_version, self.sent_rows = -1, None
                self.flush()
            elif kind == 4:  # KeyEvent
                down, keysym = struct.unpack(">B2xI", ws.read(7))
                self.key(bool(down), keysym)
            elif kind == 5:  # PointerEvent
                ws.read(5)
            elif kind == 6:  # ClientCutText (the guest's clipboard; nothing on the console)
                (length,) = struct.unpack(">3xI", ws.read(7))
                ws.read(min(length, 1 << 20) if length < 0x80000000 else 0)
            else:
                return  # QEMU closes on a message it does not know

    def key(self, down: bool, keysym: int) -> None:
        if keysym in (0xFFE3, 0xFFE4):
            self.ctrl = down
        elif keysym in (0xFFE9, 0xFFEA, 0xFFE7, 0xFFE8):
            self.alt = down
        elif down:
            self.screen.key(keysym, self.ctrl and self.alt)
            self.flush()

    def flush(self) -> None:
        """Answer the pending update request when the screen changed since the last one."""
        if self.pending is None or self.screen.version == self.sent_version:
            return
        img, rows, version = self.screen.render()
        x, y, w, h = self.pending
        x, y = min(x, WIDTH), min(y, HEIGHT)
        w, h = min(w, WIDTH - x), min(h, HEIGHT - y)
        if self.sent_rows is not None:  # incremental: only the band of text rows that changed
            old = self.sent_rows + [""] * (len(rows) - len(self.sent_rows))
            changed = [i for i, text in enumerate(rows) if old[i] != text]
            changed += range(len(rows), len(self.sent_rows))
            if changed:
                top = max(y, TOP + min(changed) * LINE_H)
                bottom = min(y + h, TOP + (max(changed) + 1) * LINE_H)
                y, h = top, max(0, bottom - top)
        pixels = img.crop((x, y, x + w, y + h)).tobytes("raw", self.rawmode)
        self.ws.send(struct.pack(">BxHHHHHi", 0, 1, x, y, w, h, 0) + pixels)
        self.pending, self.sent_version, self.sent_rows = None, version, list(rows)


def _reason(text: str) -> bytes:
    return struct.pack(">I", len(text)) + text.encode()
