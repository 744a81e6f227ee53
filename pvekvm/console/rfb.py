"""The RFB (VNC, RFC 6143) parts the console proxy speaks itself: the security handshake with
Proxmox (VNC Authentication with the password ``vncproxy`` made), the handshake with the browser
(security type None: the browser proved itself with its console token), and a reader of the
browser's messages that tells user input from screen requests (for the idle timeout)."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

VERSION_38 = b"RFB 003.008\n"
SEC_NONE, SEC_VNC = 1, 2


class RfbError(Exception):
    """The peer did not speak RFB as expected, or refused us (the text says which)."""


def vnc_response(password: str, challenge: bytes) -> bytes:
    """VNC Authentication: DES-ECB of the 16-byte challenge keyed with the password's first 8
    bytes (zero-padded), each byte's bits reversed (RFC 6143 7.2.2)."""
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return enc.update(challenge) + enc.finalize()


class Stream:
    """Exact reads over a message transport (websocket messages carry arbitrary chunks)."""

    def __init__(self, recv: Callable[[], Awaitable[bytes]],
                 send: Callable[[bytes], Awaitable[None]]) -> None:
        self._recv, self.send = recv, send
        self.buf = bytearray()

    async def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += await self._recv()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self) -> bytes:
        """What arrived beyond the handshake (relayed first)."""
        out = bytes(self.buf)
        self.buf.clear()
        return out


async def _reason(s: Stream) -> str:
    (length,) = struct.unpack(">I", await s.read(4))
    return (await s.read(min(length, 1024))).decode("utf-8", "replace")


async def client_handshake(s: Stream, password: str) -> None:
    """Authenticate to the VNC server behind Proxmox's vncwebsocket (RFB 3.8 or 3.7)."""
    version = await s.read(12)
    if version[:4] != b"RFB " or version[4:11] not in (b"003.008", b"003.007"):
        raise RfbError(f"the VNC server speaks {version[:11]!r}, not RFB 3.7/3.8")
    await s.send(version)
    (count,) = await s.read(1)
    if count == 0:
        raise RfbError(f"the VNC server refused: {await _reason(s)}")
    offered = set(await s.read(count))
    if SEC_VNC in offered:
        await s.send(bytes([SEC_VNC]))
        await s.send(vnc_response(password, await s.read(16)))
    elif SEC_NONE in offered:
        await s.send(bytes([SEC_NONE]))
        if version[4:11] == b"003.007":
            return
    else:
        raise RfbError(f"the VNC server offers no security type we speak: {sorted(offered)}")
    (result,) = struct.unpack(">I", await s.read(4))
    if result != 0:
        why = await _reason(s) if version[4:11] == b"003.008" else "no reason given"
        raise RfbError(f"the VNC server refused the password: {why}")


async def server_handshake(s: Stream) -> bytes:
    """Greet the browser as an RFB 3.8 server offering security type None; returns the
    browser's ClientInit (to be sent on to the VM's server, whose ServerInit answers it)."""
    await s.send(VERSION_38)
    version = await s.read(12)
    if version not in (VERSION_38, b"RFB 003.007\n"):
        raise RfbError(f"the browser speaks {version[:11]!r}, not RFB 3.7/3.8")
    await s.send(bytes([1, SEC_NONE]))
    if await s.read(1) != bytes([SEC_NONE]):
        raise RfbError("the browser chose a security type not offered")
    if version == VERSION_38:
        await s.send(struct.pack(">I", 0))
    return await s.read(1)


class InputMeter:
    """Reads the browser's message stream (after ClientInit) and says which chunk held user
    input (keys, pointer, clipboard, power): screen update requests and format settings are
    not input. A message type it does not know turns it off: everything then counts as input
    (an unknown client is never cut for idleness by mistake)."""

    #: message type -> (fixed length, counts as input)
    FIXED = {0: (20, False), 3: (10, False), 4: (8, True), 5: (6, True), 150: (10, False),
             250: (4, True)}

    def __init__(self) -> None:
        self.buf = bytearray()  # the head of a message whose size is not known yet (< 9 bytes)
        self.skip = 0  # bytes of the current message still to come
        self.skip_input = False
        self.blind = False

    def feed(self, data: bytes) -> bool:
        """True when ``data`` carried (part of) user input. Linear in ``data``; keeps at most
        the few bytes of a message's head."""
        if self.blind:
            return True
        found = False
        if self.skip:
            taken = min(self.skip, len(data))
            self.skip -= taken
            data = data[taken:]
            found = self.skip_input
        self.buf += data
        at, end = 0, len(self.buf)
        while at < end:
            size, is_input = self._next(bytes(self.buf[at:at + 9]))
            if size is None:  # a head too short to size: its type may still say input
                del self.buf[:at]
                return found or is_input
            found = found or is_input
            if end - at < size:
                self.skip, self.skip_input = size - (end - at), is_input
                at = end
                break
            at += size
        del self.buf[:at]
        return found

    def _next(self, b: bytes) -> tuple[int | None, bool]:
        """(size, is input) of the message whose first bytes are ``b``; size None: not known
        yet (too few bytes), or unknown type (then ``blind``)."""
        kind = b[0]
        if kind in self.FIXED:
            return self.FIXED[kind]
        if kind == 2:  # SetEncodings
            return (4 + 4 * struct.unpack(">H", b[2:4])[0], False) if len(b) >= 4 else (None,
                                                                                         False)
        if kind == 6:  # ClientCutText (negative length: extended clipboard)
            if len(b) < 8:
                return None, True
            (length,) = struct.unpack(">i", b[4:8])
            return 8 + abs(length), True
        if kind == 248:  # ClientFence
            return (9 + b[8], False) if len(b) >= 9 else (None, False)
        if kind == 251:  # SetDesktopSize
            return (8 + 16 * b[6], False) if len(b) >= 7 else (None, False)
        if kind == 255:  # QEMU: extended key event, audio
            if len(b) < 4:
                return None, False
            sub, op = b[1], struct.unpack(">H", b[2:4])[0]
            if sub == 0:
                return 12, True
            if sub == 1:
                return (10 if op == 2 else 4), False
        self.blind = True
        return None, True
