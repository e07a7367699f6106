"""Pure WebSocket frame boundaries (RFC 6455 5.2) for the relay that passes frames through unchanged.

Owns: :class:`FrameScanner`, which walks one direction's byte stream after the upgrade (101) from frame
header to frame header -- checking each header before it may be forwarded, enforcing a message size limit,
counting frames and messages and reading that side's close frame -- and :func:`close_frame`, the one frame
the relay writes itself. Must not: do I/O, import asyncio, log, copy or unmask payload bytes (except a
close frame's, at most 125), check RSV bits (the endpoints negotiated any extension, e.g. permessage-deflate
sets RSV1, not us), validate the UTF-8 of text messages, or rewrite a byte it forwards.
"""

from __future__ import annotations

import secrets
import struct
from typing import NoReturn

__all__ = [
    "PROTOCOL_ERROR",
    "MESSAGE_TOO_BIG",
    "WebSocketViolation",
    "FrameScanner",
    "close_frame",
]

# RFC 6455 7.4.1 status codes.
PROTOCOL_ERROR = 1002
MESSAGE_TOO_BIG = 1009
_NO_STATUS = 1005

_CONTROL_MAX = 125  # RFC 6455 5.5: a control frame's payload is at most 125 bytes.
_DATA_OPCODES = frozenset((0x0, 0x1, 0x2))  # continuation, text, binary (RFC 6455 5.2, 5.6)
_CONTROL_OPCODES = frozenset((0x8, 0x9, 0xA))  # close, ping, pong (RFC 6455 5.5)
_CLOSE = 0x8
# What completing the current frame's payload means.
_END_NOTHING, _END_MESSAGE, _END_CLOSE = 0, 1, 2


class WebSocketViolation(Exception):
    """A frame the relay refuses: close ``code`` (RFC 6455 7.4.1: 1002 protocol error, 1009 message too big),
    ``reason`` (short English text, <= 100 bytes UTF-8, safe to put in a close frame and a log line), and
    ``forward``: the bytes of the fed data before the offending frame's header, which may still be passed on
    (complete frames and any payload of the frame before it)."""

    def __init__(self, code: int, reason: str, forward: bytes) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.forward = forward


def _xor(data: bytes, key: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``key`` (RFC 6455 5.3): masks and unmasks alike."""
    n = len(data)
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(n, "big")


class FrameScanner:
    """Scans one direction of a WebSocket connection; see :meth:`feed`.

    Holds at most one incomplete frame header (13 bytes) between feeds, plus a close frame's payload (at most
    125 bytes) while it arrives. A feed that lies inside one frame's payload costs O(1); a feed of many frames
    costs one header parse each, without copying their payloads.
    """

    __slots__ = (
        "_broken",
        "_close_key",
        "_close_payload",
        "_held",
        "_in_message",
        "_masked",
        "_max_message",
        "_message_size",
        "_on_end",
        "_remaining",
        "close_code",
        "close_reason",
        "frames",
        "messages",
        "payload_bytes",
    )

    def __init__(self, *, masked: bool, max_message: int) -> None:
        """``masked``: frames from this side must be masked (the client's, RFC 6455 5.1) or must not be
        (the server's). ``max_message``: most payload bytes one message may have, summed over its frames."""
        if max_message < 0:
            raise ValueError("max_message must not be negative")
        self._masked = masked
        self._max_message = max_message
        self._held = b""  # an incomplete frame header, not yet forwarded
        self._remaining = 0  # payload bytes of the current frame still to come
        self._on_end = _END_NOTHING
        self._in_message = False  # a fragmented data message lacks its FIN frame (RFC 6455 5.4)
        self._message_size = 0  # payload bytes of the data message in progress
        self._close_key: bytes | None = None
        self._close_payload = b""
        self._broken = False
        self.messages = 0
        """Data messages completed (text or binary; a fragmented one counts once, when its FIN frame ends)."""
        self.frames = 0
        """Frames whose header has been scanned, control frames included."""
        self.payload_bytes = 0
        """Payload bytes scanned so far (all frames)."""
        self.close_code: int | None = None
        """This side's close frame's status code once seen whole; 1005 for an empty payload (RFC 6455 7.1.5)."""
        self.close_reason = ""
        """The close frame's reason (UTF-8, errors replaced), ``""`` if none."""

    @property
    def at_boundary(self) -> bool:
        """Everything returned so far (and a violation's ``forward``) ends between two frames: a frame of the
        relay's own may go next. A held-back header was not returned."""
        return not self._remaining

    @property
    def closed(self) -> bool:
        """This side's close frame has been seen whole."""
        return self.close_code is not None

    def feed(self, data: bytes) -> bytes:
        """Scan ``data`` (any split of the byte stream: a header may straddle feeds) and return the bytes that
        may be forwarded now: normally ``data`` itself (the same object, no copy, when no header is held back);
        a frame header that is not complete at the end of ``data`` is held back and returned prefixed to the
        next feed's bytes, so that a header is only forwarded once it has been checked. Raises
        WebSocketViolation; after that the scanner must not be fed again (it raises RuntimeError).

        Rules (RFC 6455 5.2 unless noted), each a 1002 but the size limit: a known opcode; MASK as
        ``masked`` says (5.1, 5.3); an 8-byte length with its top bit clear; control frames whole (FIN) and
        at most 125 bytes (5.5), a close payload not 1 byte long (5.5.1); continuation frames only inside a
        fragmented message, text/binary frames only outside one (5.4); a data frame taking its message over
        ``max_message`` payload bytes is a 1009 (7.4.1), raised from its header, before any of it is forwarded.
        """
        if self._broken:
            raise RuntimeError("FrameScanner fed after a WebSocketViolation")
        remaining = self._remaining
        if len(data) < remaining and not self._held and self._on_end != _END_CLOSE:
            self._remaining = remaining - len(data)  # inside one frame's payload: O(1)
            self.payload_bytes += len(data)
            return data
        buf = self._held + data if self._held else data
        end = len(buf)
        pos = 0
        while True:
            if remaining:
                take = min(remaining, end - pos)
                if self._on_end == _END_CLOSE:
                    self._close_payload += buf[pos : pos + take]
                pos += take
                remaining -= take
                self.payload_bytes += take
                if remaining:
                    break
                self._end_frame()
            if pos == end:
                break
            size = self._header(buf, pos, end)
            if not size:  # incomplete: held back until it can be checked
                self._held = buf[pos:]
                self._remaining = 0
                return buf[:pos]
            pos += size
            remaining = self._remaining
            if not remaining:
                self._end_frame()
        self._held = b""
        self._remaining = remaining
        return buf

    def _fail(self, code: int, reason: str, buf: bytes, pos: int) -> NoReturn:
        self._broken = True
        self._remaining = 0  # ``forward`` ends where the refused frame's header begins
        raise WebSocketViolation(code, reason, buf[:pos])

    def _header(self, buf: bytes, pos: int, end: int) -> int:
        """Checks the frame header at ``buf[pos:]`` and enters its frame: the header's size, 0 if incomplete."""
        avail = end - pos
        if avail < 2:
            return 0
        b0 = buf[pos]
        b1 = buf[pos + 1]
        fin = b0 & 0x80
        opcode = b0 & 0x0F
        length = b1 & 0x7F
        if opcode in _DATA_OPCODES:
            if opcode == 0 and not self._in_message:
                self._fail(PROTOCOL_ERROR, "continuation frame with no message in progress", buf, pos)
            if opcode != 0 and self._in_message:
                self._fail(PROTOCOL_ERROR, "new data frame inside a fragmented message", buf, pos)
        elif opcode in _CONTROL_OPCODES:
            if not fin:
                self._fail(PROTOCOL_ERROR, f"fragmented control frame (opcode {opcode:#x})", buf, pos)
            if length > _CONTROL_MAX:
                self._fail(PROTOCOL_ERROR, f"control frame (opcode {opcode:#x}) over 125 bytes", buf, pos)
            if opcode == _CLOSE and length == 1:
                self._fail(PROTOCOL_ERROR, "close frame with a 1-byte payload", buf, pos)
        else:
            self._fail(PROTOCOL_ERROR, f"reserved opcode {opcode:#x}", buf, pos)
        if bool(b1 & 0x80) != self._masked:
            side = "client sent an unmasked frame" if self._masked else "server sent a masked frame"
            self._fail(PROTOCOL_ERROR, side, buf, pos)
        size = 2
        if length == 126:
            if avail < 4:
                return 0
            (length,) = struct.unpack_from("!H", buf, pos + 2)
            size = 4
        elif length == 127:
            if avail < 10:
                return 0
            (length,) = struct.unpack_from("!Q", buf, pos + 2)
            size = 10
            if length >> 63:
                self._fail(PROTOCOL_ERROR, "64-bit payload length with its top bit set", buf, pos)
        if opcode < _CLOSE and self._message_size + length > self._max_message:
            self._fail(MESSAGE_TOO_BIG, f"message over {self._max_message} bytes", buf, pos)
        if self._masked:
            size += 4
        if avail < size:
            return 0
        self.frames += 1
        self._remaining = length
        if opcode < _CLOSE:
            if fin:
                self._in_message = False
                self._message_size = 0
                self._on_end = _END_MESSAGE
            else:
                self._in_message = True
                self._message_size += length
        elif opcode == _CLOSE:
            self._on_end = _END_CLOSE
            self._close_key = buf[pos + size - 4 : pos + size] if self._masked else None
            self._close_payload = b""
        return size

    def _end_frame(self) -> None:
        if self._on_end == _END_MESSAGE:
            self.messages += 1
        elif self._on_end == _END_CLOSE:
            payload = self._close_payload
            if self._close_key is not None:
                payload = _xor(payload, self._close_key)
            if payload:
                self.close_code = int.from_bytes(payload[:2], "big")
                self.close_reason = payload[2:].decode("utf-8", "replace")
            else:
                self.close_code = _NO_STATUS
            self._close_payload = b""
        self._on_end = _END_NOTHING


def close_frame(code: int, reason: str = "", *, mask: bool) -> bytes:
    """A whole close frame (RFC 6455 5.5.1): FIN, opcode 8, payload = 2-byte code + UTF-8 reason truncated to
    fit 125 bytes (never cutting a UTF-8 character); masked with a random 4-byte key (``secrets``/``os.urandom``)
    when ``mask`` (a frame to the server), unmasked otherwise. Raises ValueError for a code a sender may not
    use on the wire (RFC 6455 7.4.1/7.4.2: only 1000-1003, 1007-1011, 3000-4999; never 1005/1006/1015), or
    for a ``reason`` that is not encodable as UTF-8 (lone surrogates: UnicodeEncodeError)."""
    if not (1000 <= code <= 1003 or 1007 <= code <= 1011 or 3000 <= code <= 4999):
        raise ValueError(f"close code {code} may not be sent (RFC 6455 7.4)")
    text = reason.encode("utf-8")
    cut = _CONTROL_MAX - 2
    if len(text) > cut:
        while text[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: the cut would split a character
            cut -= 1
        text = text[:cut]
    payload = code.to_bytes(2, "big") + text
    if not mask:
        return bytes((0x80 | _CLOSE, len(payload))) + payload
    key = secrets.token_bytes(4)
    return bytes((0x80 | _CLOSE, 0x80 | len(payload))) + key + _xor(payload, key)
