"""FrameScanner and close_frame against an independent implementation: wsproto writes the frames (a client's
masked, a server's not) and reads back what the scanner forwards; every length encoding, every split of the
stream, every violation with the exact bytes still forwardable before it."""

from __future__ import annotations

import itertools
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from sigproxy.wsframes import FrameScanner, WebSocketViolation, close_frame

LIMIT = 1 << 20
KEY = b"\x01\x02\x03\x04"


def _sender(masked: bool) -> FrameProtocol:
    """wsproto's frame writer for the side whose frames are ``masked`` (the client's)."""
    return FrameProtocol(client=masked, extensions=[])


def _events(data: bytes, masked: bool) -> list[tuple[str, object]]:
    """What a wsproto receiver of ``masked`` frames makes of ``data``: whole messages and control frames."""
    receiver = FrameProtocol(client=not masked, extensions=[])
    receiver.receive_bytes(data)
    out: list[tuple[str, object]] = []
    text: list[str] = []
    binary: list[bytes] = []
    for frame in receiver.received_frames():
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            if isinstance(frame.payload, str):
                text.append(frame.payload)
            else:
                assert isinstance(frame.payload, bytes)
                binary.append(frame.payload)
            if frame.message_finished:
                out.append((frame.opcode.name, "".join(text) if frame.opcode is Opcode.TEXT else b"".join(binary)))
                text, binary = [], []
        else:
            out.append((frame.opcode.name, frame.payload))
    return out


def _header_size(length: int, masked: bool) -> int:
    return 2 + (0 if length <= 125 else 2 if length <= 0xFFFF else 8) + (4 if masked else 0)


def _hdr(opcode: int, length: int, *, masked: bool, fin: bool = True, rsv: int = 0, wide: int = 0) -> bytes:
    """A hand-made frame header; ``wide`` forces the 2- or 8-byte length encoding."""
    first = (0x80 if fin else 0) | rsv | opcode
    mask = 0x80 if masked else 0
    if wide == 8 or (not wide and length > 0xFFFF):
        head = bytes((first, mask | 127)) + struct.pack("!Q", length)
    elif wide == 2 or length > 125:
        head = bytes((first, mask | 126)) + struct.pack("!H", length)
    else:
        head = bytes((first, mask | length))
    return head + (KEY if masked else b"")


def _feed_all(scanner: FrameScanner, pieces: list[bytes]) -> bytes:
    return b"".join(scanner.feed(p) for p in pieces)


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# -- generated streams -------------------------------------------------------------------------------------

_data_payload = st.one_of(st.text(max_size=40), st.binary(max_size=300))
_message = st.tuples(
    st.just("message"), _data_payload, st.lists(st.integers(0, 300), max_size=3), st.lists(st.binary(max_size=8))
)
_control = st.tuples(st.sampled_from(["ping", "pong"]), st.binary(max_size=125))
_close = st.one_of(
    st.none(),
    st.just((None, "")),
    st.tuples(st.sampled_from([1000, 1001, 1003, 1008, 1011, 3000, 4999]), st.text(max_size=30)),
)


class _Stream:
    """A stream wsproto wrote, with what the scanner must count and where each header lies."""

    def __init__(self, items: list[tuple[object, ...]], close: tuple[int | None, str] | None, masked: bool) -> None:
        proto = _sender(masked)
        frames: list[bytes] = []
        self.events: list[tuple[str, object]] = []
        self.messages = self.payload_bytes = 0
        self.close_code: int | None = None
        self.close_reason = ""

        def put(frame: bytes, length: int) -> None:
            frames.append(frame)
            self.payload_bytes += length

        for item in items:
            if item[0] != "message":
                kind, payload = item
                assert isinstance(payload, bytes)
                put(bytes(proto.ping(payload) if kind == "ping" else proto.pong(payload)), len(payload))
                self.events.append((kind.upper(), payload))  # type: ignore[attr-defined]
                continue
            _, payload, cuts, pings = item
            assert isinstance(payload, str | bytes) and isinstance(cuts, list) and isinstance(pings, list)
            points = sorted({0, len(payload), *(c % (len(payload) + 1) for c in cuts)})
            pieces = [payload[a:b] for a, b in itertools.pairwise(points)] or [payload]
            for i, piece in enumerate(pieces):
                last = i == len(pieces) - 1
                size = len(piece.encode() if isinstance(piece, str) else piece)
                put(bytes(proto.send_data(piece, fin=last)), size)
                if not last and i < len(pings):  # control frames between a message's fragments (RFC 6455 5.4)
                    put(bytes(proto.ping(pings[i])), len(pings[i]))
                    self.events.append(("PING", pings[i]))
            self.messages += 1
            self.events.append(("TEXT" if isinstance(payload, str) else "BINARY", payload))
        if close is not None:
            code, reason = close
            frame = bytes(proto.close(code, reason or None))
            put(frame, 0 if code is None else 2 + len(reason.encode()))
            self.close_code = 1005 if code is None else code
            self.close_reason = reason
            self.events.append(("CLOSE", (self.close_code, reason)))
        self.data = b"".join(frames)
        self.frames = len(frames)
        self.headers: list[tuple[int, int]] = []  # (start, end) of each header
        at = 0
        for frame in frames:
            second = frame[1] & 0x7F
            length = {126: 0x10000 - 1, 127: 0x10000}.get(second, second)  # only its encoding size matters
            self.headers.append((at, at + _header_size(length, masked)))
            at += len(frame)


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(st.one_of(_message, _control), max_size=8),
    close=_close,
    masked=st.booleans(),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=12),
)
def test_any_split_forwards_the_stream_unchanged_and_counts_it(
    items: list[tuple[object, ...]], close: tuple[int | None, str] | None, masked: bool, cuts: list[int]
) -> None:
    stream = _Stream(items, close, masked)
    scanner = FrameScanner(masked=masked, max_message=LIMIT)
    inside = {n for start, end in stream.headers for n in range(start + 1, end)}  # offsets within a header
    out: list[bytes] = []
    sent = 0
    for piece in _splits(stream.data, cuts):
        held_before = sent in inside
        forwarded = scanner.feed(piece)
        out.append(forwarded)
        sent += len(piece)
        # A header goes out only once whole: what is forwarded never ends inside one.
        assert sum(map(len, out)) not in inside
        if not held_before and sent not in inside:
            assert forwarded is piece
    assert b"".join(out) == stream.data
    assert scanner.frames == stream.frames
    assert scanner.messages == stream.messages
    assert scanner.payload_bytes == stream.payload_bytes
    assert scanner.close_code == stream.close_code
    assert scanner.closed is (close is not None)
    assert scanner.close_reason == stream.close_reason
    assert _events(b"".join(out), masked) == stream.events


# -- length encodings, fragments, close ---------------------------------------------------------------------


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_length_encoding_boundaries_split_anywhere_in_the_header(masked: bool, size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = bytes(_sender(masked).send_data(payload))
    head = _header_size(size, masked)
    assert len(frame) == head + size
    for cut in range(head + 1):
        scanner = FrameScanner(masked=masked, max_message=size)
        first = scanner.feed(frame[:cut])
        assert first == (b"" if cut < head else frame[:cut])  # an incomplete header is held back
        assert scanner.frames == (cut == head)
        assert _feed_all(scanner, [frame[cut:]]) == frame[len(first) :]
        assert (scanner.frames, scanner.messages, scanner.payload_bytes) == (1, 1, size)
    assert _events(frame, masked) == [("BINARY", payload)]


@pytest.mark.parametrize("masked", [True, False])
def test_fragmented_message_with_pings_counts_once_at_the_end_of_its_fin_frame(masked: bool) -> None:
    proto = _sender(masked)
    frames = [
        proto.send_data("héllo ", fin=False),
        proto.ping(b"p1"),
        proto.send_data("wörld", fin=False),
        proto.pong(b""),
        proto.ping(b"p2"),
        proto.send_data("!", fin=True),
    ]
    data = b"".join(bytes(f) for f in frames)
    scanner = FrameScanner(masked=masked, max_message=100)
    assert scanner.feed(data[:-1]) == data[:-1]
    assert (scanner.messages, scanner.frames) == (0, 6)  # the FIN frame's header is in, its payload is not
    assert scanner.feed(data[-1:]) == data[-1:]
    assert scanner.messages == 1
    assert scanner.payload_bytes == len("héllo wörld!".encode()) + 4
    assert _events(data, masked) == [("PING", b"p1"), ("PONG", b""), ("PING", b"p2"), ("TEXT", "héllo wörld!")]


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize(("code", "reason"), [(None, ""), (1000, ""), (1001, "going away"), (4000, "bye ✓")])
def test_close_frame_is_seen_whole_across_feeds(masked: bool, code: int | None, reason: str) -> None:
    frame = bytes(_sender(masked).close(code, reason or None))
    for cut in range(1, len(frame)):
        scanner = FrameScanner(masked=masked, max_message=10)
        out = scanner.feed(frame[:cut])
        assert not scanner.closed and scanner.close_code is None
        out += scanner.feed(frame[cut:])
        assert out == frame
        assert scanner.closed
        assert (scanner.close_code, scanner.close_reason) == (1005 if code is None else code, reason)
    # What follows a close frame is still scanned, not refused.
    after = bytes(_sender(masked).send_data(b"late"))
    scanner = FrameScanner(masked=masked, max_message=10)
    assert scanner.feed(frame + after) == frame + after
    assert (scanner.frames, scanner.messages, scanner.closed) == (2, 1, True)


def test_close_reason_that_is_not_utf8_is_replaced() -> None:
    frame = _hdr(8, 4, masked=False) + b"\x03\xe8\xff\xfe"
    scanner = FrameScanner(masked=False, max_message=0)
    scanner.feed(frame)
    assert (scanner.close_code, scanner.close_reason) == (1000, "\ufffd\ufffd")


def test_rsv_bits_and_text_utf8_are_not_the_scanners_business() -> None:
    frames = _hdr(0x1, 2, masked=False, rsv=0x40) + b"\xff\xfe" + _hdr(0x2, 1, masked=False, rsv=0x70) + b"x"
    scanner = FrameScanner(masked=False, max_message=10)
    assert scanner.feed(frames) is frames
    assert (scanner.frames, scanner.messages) == (2, 2)


def test_no_header_held_back_returns_the_same_object_and_the_middle_of_a_payload_is_o1() -> None:
    size = 1 << 20
    scanner = FrameScanner(masked=True, max_message=size)
    head = _hdr(0x2, size, masked=True)
    first = head + b"a" * 10
    assert scanner.feed(first) is first
    middle = bytes(size - 20)
    assert scanner.feed(middle) is middle
    last = b"z" * 10 + _hdr(0x9, 0, masked=True)
    assert scanner.feed(last) is last
    assert (scanner.payload_bytes, scanner.frames, scanner.messages) == (size, 2, 1)
    empty = b""
    assert scanner.feed(empty) is empty

    many = bytes(_sender(False).send_data(b"abc")) * 20000
    scanner = FrameScanner(masked=False, max_message=3)
    started = time.perf_counter()
    assert scanner.feed(many) is many
    assert time.perf_counter() - started < 1.0
    assert (scanner.frames, scanner.messages, scanner.payload_bytes) == (20000, 20000, 60000)


# -- violations ----------------------------------------------------------------------------------------------


def _until_violation(scanner: FrameScanner, pieces: list[bytes]) -> tuple[bytes, WebSocketViolation]:
    """The bytes returned before the violation, and the violation."""
    out = b""
    for piece in pieces:
        try:
            out += scanner.feed(piece)
        except WebSocketViolation as violation:
            return out, violation
    raise AssertionError("no WebSocketViolation")


def _prefix(masked: bool) -> bytes:
    proto = _sender(masked)
    return bytes(proto.send_data("first")) + bytes(proto.ping(b"x")) + bytes(proto.send_data(b"\x00" * 200))


def _violations(masked: bool) -> list[tuple[str, bytes, bytes, int]]:
    """(name, frames before, offending frame, code): the frames before are valid and leave the state needed."""
    other = not masked
    open_text = bytes(_sender(masked).send_data("part", fin=False))
    return [
        ("reserved data opcode", b"", _hdr(0x3, 0, masked=masked), 1002),
        ("reserved control opcode", b"", _hdr(0xB, 1, masked=masked) + b"x", 1002),
        ("wrong mask bit", b"", _hdr(0x1, 3, masked=other) + b"abc", 1002),
        ("64-bit length top bit", b"", _hdr(0x2, 1 << 63, masked=masked, wide=8), 1002),
        ("control frame over 125", b"", _hdr(0x9, 126, masked=masked) + bytes(126), 1002),
        ("fragmented ping", b"", _hdr(0x9, 0, masked=masked, fin=False), 1002),
        ("fragmented close", b"", _hdr(0x8, 2, masked=masked, fin=False) + b"\x03\xe8", 1002),
        ("1-byte close", b"", _hdr(0x8, 1, masked=masked) + b"\x03", 1002),
        ("continuation with no message", b"", _hdr(0x0, 1, masked=masked) + b"x", 1002),
        ("text inside a fragmented message", open_text, _hdr(0x1, 1, masked=masked) + b"x", 1002),
        ("binary inside a fragmented message", open_text, _hdr(0x2, 0, masked=masked), 1002),
        ("message over the limit", b"", _hdr(0x2, 1001, masked=masked), 1009),
        ("fragments over the limit", open_text, _hdr(0x0, 997, masked=masked, fin=False), 1009),
    ]


@pytest.mark.parametrize("masked", [True, False])
def test_each_violation_raises_its_code_with_exactly_the_frames_before_it(masked: bool) -> None:
    for name, before, bad, code in _violations(masked):
        good = _prefix(masked) + before
        head = 2 + {126: 2, 127: 8}.get(bad[1] & 0x7F, 0) + (4 if bad[1] & 0x80 else 0)
        # Whole, in one feed, with the offending frame's payload after it.
        scanner = FrameScanner(masked=masked, max_message=1000)
        with pytest.raises(WebSocketViolation) as caught:
            scanner.feed(good + bad)
        assert (caught.value.code, caught.value.forward) == (code, good), name
        assert 0 < len(caught.value.reason.encode()) <= 100
        with pytest.raises(RuntimeError):
            scanner.feed(b"")
        # The offending header split across two feeds at every point: what was returned plus ``forward`` is
        # exactly the frames before it.
        for cut in range(1, head + 1):
            scanner = FrameScanner(masked=masked, max_message=1000)
            out, violation = _until_violation(scanner, [good + bad[:cut], bad[cut:]])
            assert violation.code == code, (name, cut)
            assert out + violation.forward == good, (name, cut)


@pytest.mark.parametrize("masked", [True, False])
def test_forward_holds_the_end_of_the_previous_frames_payload(masked: bool) -> None:
    frame = bytes(_sender(masked).send_data(b"y" * 300))
    scanner = FrameScanner(masked=masked, max_message=1000)
    assert scanner.feed(frame[:100]) == frame[:100]
    with pytest.raises(WebSocketViolation) as caught:
        scanner.feed(frame[100:] + _hdr(0x0, 0, masked=masked))
    assert caught.value.forward == frame[100:]


@pytest.mark.parametrize("masked", [True, False])
def test_max_message_exactly_at_the_limit_passes_one_byte_over_is_1009(masked: bool) -> None:
    for limit in (0, 125, 65536):
        whole = bytes(_sender(masked).send_data(bytes(limit)))
        scanner = FrameScanner(masked=masked, max_message=limit)
        assert scanner.feed(whole * 2) == whole * 2
        assert scanner.messages == 2  # the count starts again with each message
        over = bytes(_sender(masked).send_data(bytes(limit + 1)))
        with pytest.raises(WebSocketViolation) as caught:
            FrameScanner(masked=masked, max_message=limit).feed(whole + over)
        assert (caught.value.code, caught.value.forward) == (1009, whole)
        assert str(limit) in caught.value.reason
    # Fragmented: 400 + 600 (a ping between) is the limit; 400 + 601 is over, at the second fragment's header.
    proto = _sender(masked)
    first = bytes(proto.send_data(bytes(400), fin=False)) + bytes(proto.ping(bytes(125)))
    last = bytes(proto.send_data(bytes(600), fin=True))
    again = bytes(proto.send_data(bytes(1000)))  # a new message's count starts from 0
    scanner = FrameScanner(masked=masked, max_message=1000)
    assert scanner.feed(first + last + again) == first + last + again
    assert scanner.messages == 2
    proto = _sender(masked)
    first = bytes(proto.send_data(bytes(400), fin=False)) + bytes(proto.ping(b""))
    over = bytes(proto.send_data(bytes(601), fin=True))
    with pytest.raises(WebSocketViolation) as caught:
        FrameScanner(masked=masked, max_message=1000).feed(first + over)
    assert (caught.value.code, caught.value.forward) == (1009, first)


# -- close_frame ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize(
    ("code", "reason"), [(1000, ""), (1002, "protocol error"), (1009, "message over 1048576 bytes"), (4999, "ü")]
)
def test_close_frame_parses_in_wsproto_and_the_scanner(mask: bool, code: int, reason: str) -> None:
    frame = close_frame(code, reason, mask=mask)
    assert frame[1] & 0x80 == (0x80 if mask else 0)
    assert _events(frame, mask) == [("CLOSE", (code, reason))]
    scanner = FrameScanner(masked=mask, max_message=0)
    assert scanner.feed(frame) is frame
    assert (scanner.close_code, scanner.close_reason, scanner.frames) == (code, reason, 1)


@settings(max_examples=100, deadline=None)
@given(reason=st.text(min_size=0, max_size=130), mask=st.booleans())
def test_close_frame_truncates_the_reason_to_125_bytes_on_a_character_boundary(reason: str, mask: bool) -> None:
    frame = close_frame(1000, reason, mask=mask)
    [(kind, parsed)] = _events(frame, mask)
    assert kind == "CLOSE" and isinstance(parsed, tuple)
    code, got = parsed
    assert code == 1000 and isinstance(got, str)
    payload_len = frame[1] & 0x7F
    assert payload_len == 2 + len(got.encode()) <= 125
    assert reason.startswith(got)
    if got != reason:  # maximal: the next character would not have fitted
        assert len(reason[: len(got) + 1].encode()) > 123


def test_close_frame_long_multibyte_reason() -> None:
    reason = "x" + "€" * 50  # 1 + 150 bytes: 40 euro signs fit in 123 bytes, the 41st would cut
    frame = close_frame(1001, reason, mask=True)
    assert _events(frame, True) == [("CLOSE", (1001, "x" + "€" * 40))]
    assert frame[1] & 0x7F == 2 + 121
    assert _events(close_frame(1001, "€" * 50, mask=False), False) == [("CLOSE", (1001, "€" * 41))]
    assert _events(close_frame(1001, "é" * 100, mask=False), False) == [("CLOSE", (1001, "é" * 61))]
    assert _events(close_frame(1001, "x" + "🙂" * 40, mask=True), True) == [("CLOSE", (1001, "x" + "🙂" * 30))]


def test_close_frame_masks_with_a_fresh_key() -> None:
    keys = {close_frame(1000, mask=True)[2:6] for _ in range(8)}
    assert len(keys) > 1


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 2999, 5000, 65535])
def test_close_frame_refuses_codes_a_sender_may_not_use(code: int) -> None:
    with pytest.raises(ValueError, match=str(code)):
        close_frame(code, mask=False)


def test_at_boundary_follows_what_was_returned() -> None:
    """Whether a frame of the relay's own may follow what was returned (a held-back header was not)."""
    scanner = FrameScanner(masked=False, max_message=100)
    frame = b"\x82\x05hello"
    assert scanner.at_boundary
    assert scanner.feed(frame[:4]) == frame[:4]
    assert not scanner.at_boundary  # inside the payload
    assert scanner.feed(frame[4:] + b"\x82") == frame[4:]  # the next header's first byte held back
    assert scanner.at_boundary
    with pytest.raises(WebSocketViolation) as caught:
        scanner.feed(b"\x65" + b"x" * 101)  # 101 bytes: over max_message
    assert caught.value.code == 1009 and caught.value.forward == b""
    assert scanner.at_boundary


def test_at_boundary_after_a_violation_inside_one_feed() -> None:
    scanner = FrameScanner(masked=False, max_message=100)
    with pytest.raises(WebSocketViolation) as caught:
        scanner.feed(b"\x82\x05hello\x83\x00")  # a reserved opcode after a whole frame
    assert caught.value.forward == b"\x82\x05hello"
    assert scanner.at_boundary
