"""The aws-chunked decoder (:class:`sigproxy.streaming.ChunkDecoder`): a client's upload body, byte for byte.

Properties, for any bytes cut at any boundaries:

* the decoder yields events or raises :class:`~sigproxy.streaming.ChunkError`, never anything else;
* it never buffers more than its limits (a size line over 130 bytes, a chunk over ``max_chunk_size``, a
  trailer over ``max_trailer_size`` are refused, not held) — a giant size line is refused at once;
* the result (events, then the error message if any) does not depend on where the feeds were cut;
* what :class:`~sigproxy.streaming.ChunkSigner` and :func:`~sigproxy.chunkframing.frame_unsigned` encode decodes
  back to the same data, trailer and signatures, and the signature chain verifies.
"""

# ruff: noqa: PT017, PT018
# (properties are plain asserts that name the broken invariant; they run outside pytest too)

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from fuzz.engine import Target
from sigproxy import chunkframing, streaming
from sigproxy.streaming import Chunk, ChunkDecoder, ChunkError, ChunkSigner, End, Event, Trailer

KEY = b"k" * 32
DATE = "20240101T000000Z"
SCOPE = "20240101/us-east-1/s3/aws4_request"
SEED = "a" * 64


@dataclass(frozen=True)
class Case:
    signed: bool
    trailer: bool
    body: bytes
    cuts: tuple[int, ...]
    """Feed boundaries (sorted offsets into ``body``)."""
    max_chunk: int
    max_trailer: int
    pieces: tuple[bytes, ...] | None = None
    """The data it encodes when the body came from the encoder, unmutated."""
    headers: tuple[tuple[str, str], ...] = ()


def _feeds(body: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    out, last = [], 0
    for cut in (*cuts, len(body)):
        out.append(body[last:cut])
        last = cut
    return out


Result = tuple[tuple[Event, ...], str | None, int]


def decode(case: Case, feeds: list[bytes]) -> Result:
    """Events, the ChunkError message (``None`` if the body was whole and valid) and the bytes decoded."""
    dec = ChunkDecoder(signed=case.signed, trailer=case.trailer, max_chunk_size=case.max_chunk,
                       max_trailer_size=case.max_trailer)
    events: list[Event] = []
    error = None
    try:
        for piece in feeds:
            events += dec.feed(piece)
            _check_bounds(dec, case)
        dec.close()
    except ChunkError as exc:
        error = str(exc)
        # Broken stays broken, with the same message.
        for again in (lambda: dec.feed(b"x"), dec.close):
            try:
                again()
            except ChunkError as exc2:
                assert str(exc2) == error, (error, str(exc2))
            else:
                raise AssertionError("a broken decoder accepted more input")
    # A feed that raises returns nothing: the events it completed before the error are dropped.
    assert dec.decoded_length >= sum(len(e.data) for e in events if isinstance(e, Chunk))
    if error is None:
        assert dec.decoded_length == sum(len(e.data) for e in events if isinstance(e, Chunk))
        assert dec.finished and isinstance(events[-1], End)
    return tuple(events), error, dec.decoded_length


def _check_bounds(dec: ChunkDecoder, case: Case) -> None:
    line_limit = max(streaming._MAX_SIZE_LINE + 2, case.max_trailer + 2)
    assert len(dec._partial) <= line_limit, f"line buffer {len(dec._partial)} over {line_limit}"
    assert len(dec._data) <= case.max_chunk, f"chunk buffer {len(dec._data)} over {case.max_chunk}"
    assert len(dec._pending) <= case.max_chunk


def same(a: Result, b: Result, how: str) -> None:
    """Split invariance: the same error; the same events when whole, else one event list a prefix of the other
    (a feed that raises drops the events it completed, so a failing body may report fewer)."""
    (ea, erra, _), (eb, errb, _) = a, b
    assert erra == errb, f"{how}: error {erra!r} vs {errb!r}"
    if erra is None:
        assert ea == eb, f"{how}: events differ"
    else:
        short, long = sorted((ea, eb), key=len)
        assert long[: len(short)] == short, f"{how}: events differ"


def check(case: Case) -> str:
    whole = decode(case, [case.body])
    same(whole, decode(case, _feeds(case.body, case.cuts)), "split-dependent result")
    if len(case.body) <= 2048:
        same(whole, decode(case, [case.body[i : i + 1] for i in range(len(case.body))]), "byte-by-byte")
    events, error, _ = whole
    if case.signed:
        _verify_chain(events)
    if case.pieces is not None:
        assert error is None, f"the encoder's output does not decode: {error}"
        data = [e for e in events if isinstance(e, Chunk)]
        assert tuple(e.data for e in data) == case.pieces
        if case.trailer:
            trailers = [e for e in events if isinstance(e, Trailer)]
            assert len(trailers) == 1
            sent = sorted((k.lower(), " ".join(v.strip().split())) for k, v in case.headers)
            got = sorted((k.lower(), " ".join(v.split())) for k, v in trailers[0].headers)
            assert got == sent, (got, sent)
        return "roundtrip"
    return "ok" if error is None else "ChunkError: " + error.split(" over the limit")[0]


def _verify_chain(events: tuple[Event, ...]) -> None:
    """Check every signature the decoder reported: a ChunkError (bad signature) or success, nothing else."""
    signer = ChunkSigner(KEY, DATE, SCOPE, SEED)
    try:
        for e in events:
            if isinstance(e, Chunk):
                assert e.signature is not None
                signer.check(e.data, e.signature)
            elif isinstance(e, Trailer):
                assert e.signature is not None
                signer.check_trailer(e.headers, e.signature)
    except ChunkError as exc:
        assert "signature" in str(exc)


# ----------------------------------------------------------------------------- inputs

_token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~", min_size=1,
                 max_size=20)
_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_headers = st.lists(st.tuples(_token, _value), max_size=3, unique_by=lambda kv: kv[0].lower()).filter(
    lambda hs: all(k.lower() != streaming.TRAILER_SIGNATURE_HEADER for k, _ in hs)
)


def encode(signed: bool, trailer: bool, pieces: tuple[bytes, ...], headers: tuple[tuple[str, str], ...]) -> bytes:
    if signed:
        signer = ChunkSigner(KEY, DATE, SCOPE, SEED)
        out = b"".join(signer.frame(p) for p in pieces)
        return out + (signer.final_with_trailer(headers) if trailer else signer.frame(b""))
    out = b"".join(chunkframing.frame_unsigned(p) for p in pieces)
    return out + chunkframing.final_unsigned(headers if trailer else ())


@st.composite
def _mutate(draw: Any, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup", "interesting"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        elif op == "dup":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif op == "interesting":
            data[at:at] = draw(st.sampled_from([
                b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"0\r\n\r\n", b";chunk-signature=", b"x-amz-trailer-signature:",
                b"ffffffffffffffff", b"10000000000000000", b"0" * 17, b"-1", b"+1", b" 1", b"1 ", b"0x1", b"\x00",
                b":", b"a" * 200,
            ]))
    return bytes(data)


@st.composite
def cases(draw: Any) -> Case:
    signed = draw(st.booleans())
    trailer = draw(st.booleans())
    max_chunk = draw(st.sampled_from([1, 7, 64, 1000, streaming.DEFAULT_MAX_CHUNK_SIZE]))
    max_trailer = draw(st.sampled_from([0, 10, 100, streaming.DEFAULT_MAX_TRAILER_SIZE]))
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "raw", "giant"]))
    pieces: tuple[bytes, ...] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    if kind == "raw":
        body = draw(st.binary(max_size=600))
    elif kind == "giant":
        # A size line, a chunk or a trailer line far over every limit: must be refused, not buffered.
        prefix = draw(st.sampled_from([b"", b"1\r\nx\r\n", b"0\r\n", b"0;chunk-signature=" + b"a" * 64 + b"\r\n",
                                       b"ffffff\r\n", b"10\r\n"]))
        filler = draw(st.sampled_from([b"1", b"a", b"x", b"\r", b" ", b"0"]))
        body = prefix + filler * draw(st.integers(200, 70_000)) + draw(st.sampled_from([b"", b"\r\n"]))
    else:
        limit = min(max_chunk, 300)
        pieces = tuple(draw(st.lists(st.binary(min_size=1, max_size=limit), max_size=5)))
        headers = tuple(draw(_headers)) if trailer else ()
        if trailer and sum(len(k) + len(v) + 3 for k, v in headers) + 100 * signed > max_trailer:
            headers = ()
            if signed:  # the x-amz-trailer-signature line alone is 90 bytes
                max_trailer = max(max_trailer, 90)
        body = encode(signed, trailer, pieces, headers)
        if kind == "mutated":
            body = draw(_mutate(body))
            pieces = None
    cuts = tuple(sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=8)))))
    return Case(signed, trailer, body, cuts, max_chunk, max_trailer, pieces, headers)


def giant_size_line_is_refused(length: int = 10 * 2**20) -> None:
    """A decoder fed megabytes of one size line refuses after ~130 bytes, holding no more than that."""
    dec = ChunkDecoder(signed=False, trailer=True)
    try:
        for _ in range(length // 65536):
            dec.feed(b"1" * 65536)
            assert len(dec._partial) <= streaming._MAX_SIZE_LINE + 2
    except ChunkError as exc:
        assert str(exc) == "bad chunk size line"
        assert len(dec._partial) <= streaming._MAX_SIZE_LINE + 2
        return
    raise AssertionError("a giant size line was buffered")


def _describe(case: Case) -> bytes:
    return (f"signed={case.signed} trailer={case.trailer} max_chunk={case.max_chunk} "
            f"max_trailer={case.max_trailer} cuts={case.cuts}\n").encode() + case.body


TARGETS = [Target("chunked", cases(), check, describe=_describe)]
