"""aws-chunked bodies: the AWS worked example, encoder -> decoder round trips cut at any read boundaries,
botocore's own unsigned-trailer bodies, every malformed form, and the framed-length arithmetic."""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import itertools
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from sigproxy import streaming
from sigproxy.chunkframing import (
    Rechunker,
    final_unsigned,
    frame_unsigned,
    signed_encoded_length,
    unsigned_encoded_length,
)
from sigproxy.signing import EMPTY_SHA256, CanonicalInput, Credentials, Signer, SigningPolicy
from sigproxy.streaming import (
    DEFAULT_CHUNK_SIZE,
    STREAMING_SIGNED,
    Chunk,
    ChunkDecoder,
    ChunkError,
    ChunkSigner,
    End,
    Event,
    Trailer,
    trailer_lines,
)

# The worked example of https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html:
# a 66560-byte object of "a", 64 KiB chunks, PUT /examplebucket/chunkObject.txt.
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_DATE = "20130524T000000Z"
AWS_SCOPE = "20130524/us-east-1/s3/aws4_request"
AWS_KEY = Signer().signing_key(AWS_SECRET, "20130524", "us-east-1", "s3")
AWS_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
AWS_CHUNK_SIGNATURES = (
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
)
AWS_CONTENT_LENGTH = 66824  # the example's Content-Length header

SIG = "0" * 64  # a well-formed signature for framing-only tests
CRC_TRAILER = [("x-amz-checksum-crc32", "AAAAAA==")]


def _signer() -> ChunkSigner:
    return ChunkSigner(AWS_KEY, AWS_DATE, AWS_SCOPE, AWS_SEED)


def _encode(data: bytes, chunk_size: int, *, signed: bool, trailer: Sequence[tuple[str, str]] | None) -> bytes:
    """A whole body, cut by a Rechunker fed one byte piece of odd size at a time."""
    cutter = Rechunker(chunk_size)
    pieces: list[bytes] = []
    for i in range(0, len(data), 97):
        pieces.extend(cutter.feed(data[i : i + 97]))
    rest = cutter.flush()
    if rest:
        pieces.append(rest)
    if not signed:
        return b"".join(frame_unsigned(p) for p in pieces) + final_unsigned(trailer or ())
    signer = _signer()
    body = b"".join(signer.frame(p) for p in pieces)
    return body + (signer.frame(b"") if trailer is None else signer.final_with_trailer(trailer))


def _cut(stream: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


def _decode(pieces: Sequence[bytes], *, signed: bool, trailer: bool, **limits: int) -> tuple[list[Event], ChunkDecoder]:
    decoder = ChunkDecoder(signed=signed, trailer=trailer, **limits)
    events: list[Event] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    decoder.close()
    return events, decoder


def _error(stream: bytes, *, signed: bool = True, trailer: bool = False, **limits: int) -> str:
    """The ChunkError message for ``stream`` fed whole then closed (fails the test if there is none)."""
    with pytest.raises(ChunkError) as caught:
        _decode([stream], signed=signed, trailer=trailer, **limits)
    return str(caught.value)


# --- The AWS worked example -------------------------------------------------------------------------


def test_aws_example_chunk_signatures() -> None:
    """The chain gives the AWS example's three signatures: 64 KiB chunk, 1 KiB chunk, final empty chunk."""
    signer = _signer()
    assert signer.sign(b"a" * 65536) == AWS_CHUNK_SIGNATURES[0]
    assert signer.sign(b"a" * 1024) == AWS_CHUNK_SIGNATURES[1]
    assert signer.sign(b"") == AWS_CHUNK_SIGNATURES[2]
    assert signer.previous_signature == AWS_CHUNK_SIGNATURES[2]


def test_aws_example_seed_signature() -> None:
    """The example's seed is the header signature signing.py computes for its request."""
    headers = (
        ("host", "s3.amazonaws.com"),
        ("x-amz-date", AWS_DATE),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", STREAMING_SIGNED),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("content-length", str(AWS_CONTENT_LENGTH)),
    )
    sig = Signer().sign_headers(
        CanonicalInput("PUT", "/examplebucket/chunkObject.txt", (), headers, STREAMING_SIGNED),
        Credentials("AKIAIOSFODNN7EXAMPLE", AWS_SECRET),
        region="us-east-1",
        service="s3",
        now=datetime(2013, 5, 24, tzinfo=UTC),
        policy=SigningPolicy(s3=True),
    )
    assert sig.signature == AWS_SEED


def test_aws_example_body_frames_decodes_and_verifies() -> None:
    """The framed example body has the example's Content-Length and decodes back, every signature checking."""
    body = _encode(b"a" * 66560, DEFAULT_CHUNK_SIZE, signed=True, trailer=None)
    assert body.startswith(b"10000;chunk-signature=" + AWS_CHUNK_SIGNATURES[0].encode() + b"\r\naaa")
    assert body.endswith(b"\r\n0;chunk-signature=" + AWS_CHUNK_SIGNATURES[2].encode() + b"\r\n\r\n")
    assert len(body) == AWS_CONTENT_LENGTH == signed_encoded_length(66560)
    events, decoder = _decode(_cut(body, range(0, len(body), 1000)), signed=True, trailer=False)
    chunks = [e for e in events if isinstance(e, Chunk)]
    assert [len(c.data) for c in chunks] == [65536, 1024]
    assert [c.signature for c in chunks] == list(AWS_CHUNK_SIGNATURES[:2])
    assert isinstance(events[-1], End)
    assert decoder.final_signature == AWS_CHUNK_SIGNATURES[2]
    assert decoder.decoded_length == 66560
    verifier = _signer()
    for c in chunks:
        verifier.check(c.data, c.signature or "")
    verifier.check(b"", decoder.final_signature or "")


def test_chunk_and_trailer_strings_to_sign() -> None:
    """Both strings to sign have the documented lines; the canonical trailer ends in a newline."""
    signer = _signer()
    assert signer.chunk_string_to_sign(b"abc") == "\n".join(
        ("AWS4-HMAC-SHA256-PAYLOAD", AWS_DATE, AWS_SCOPE, AWS_SEED, EMPTY_SHA256, hashlib.sha256(b"abc").hexdigest())
    )
    canonical = b"x-amz-checksum-crc32:AAAAAA==\n"
    assert signer.trailer_string_to_sign([("X-Amz-Checksum-CRC32", " AAAAAA== ")]) == "\n".join(
        ("AWS4-HMAC-SHA256-TRAILER", AWS_DATE, AWS_SCOPE, AWS_SEED, hashlib.sha256(canonical).hexdigest())
    )


def test_final_with_trailer_wire_form() -> None:
    """The trailer block is the final chunk, canonical lower-case lines, the signature line, a blank line."""
    block = _signer().final_with_trailer([("X-Amz-Checksum-CRC32", "AAAAAA==")])
    final = _signer().sign(b"")  # an empty body: the final chunk follows the seed
    trailer_sig = ChunkSigner(AWS_KEY, AWS_DATE, AWS_SCOPE, final).trailer_signature(CRC_TRAILER)
    assert block == (
        b"0;chunk-signature=%s\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:%s\r\n\r\n"
        % (final.encode(), trailer_sig.encode())
    )
    assert trailer_lines([("b", "2"), ("A", "1  1")]) == b"a:1 1\r\nb:2\r\n"


# --- Round trips -------------------------------------------------------------------------------------

_trailer_values = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=60)
_trailers = st.lists(
    st.tuples(st.sampled_from(["x-amz-checksum-crc32", "x-amz-checksum-sha256", "x-amz-meta-Thing"]), _trailer_values),
    max_size=3,
    unique_by=lambda h: h[0],
)


@settings(deadline=None)
@given(
    data=st.binary(max_size=1500),
    chunk_size=st.integers(1, 400),
    trailer=st.none() | _trailers,
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
)
def test_round_trip_signed(
    data: bytes, chunk_size: int, trailer: list[tuple[str, str]] | None, cuts: list[int]
) -> None:
    """Signed bodies, with or without trailer, decode to the same chunks at any read boundaries and verify."""
    body = _encode(data, chunk_size, signed=True, trailer=trailer)
    assert len(body) == signed_encoded_length(
        len(data), chunk_size, None if trailer is None else trailer_lines(trailer)
    )
    events, decoder = _decode(_cut(body, cuts), signed=True, trailer=trailer is not None)
    chunks = [e for e in events if isinstance(e, Chunk)]
    assert b"".join(c.data for c in chunks) == data
    assert all(len(c.data) == chunk_size for c in chunks[:-1])
    assert decoder.decoded_length == len(data)
    verifier = _signer()
    for c in chunks:
        verifier.check(c.data, c.signature or "")
    verifier.check(b"", decoder.final_signature or "")
    if trailer is None:
        assert events[len(chunks) :] == [End()]
    else:
        tail = events[len(chunks) :]
        assert len(tail) == 2 and isinstance(tail[0], Trailer) and tail[1] == End()
        assert sorted(tail[0].headers) == sorted((n.lower(), v) for n, v in trailer)
        verifier.check_trailer(tail[0].headers, tail[0].signature or "")


@settings(deadline=None)
@given(
    data=st.binary(max_size=1500),
    chunk_size=st.integers(1, 400),
    trailer=_trailers,
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
)
def test_round_trip_unsigned_trailer(
    data: bytes, chunk_size: int, trailer: list[tuple[str, str]], cuts: list[int]
) -> None:
    """Unsigned bodies decode to the same chunks and trailer at any read boundaries, with no signatures."""
    body = _encode(data, chunk_size, signed=False, trailer=trailer)
    assert len(body) == unsigned_encoded_length(len(data), chunk_size, trailer_lines(trailer))
    events, decoder = _decode(_cut(body, cuts), signed=False, trailer=True)
    chunks = [e for e in events if isinstance(e, Chunk)]
    assert b"".join(c.data for c in chunks) == data
    assert all(c.signature is None for c in chunks)
    assert decoder.final_signature is None
    assert events[len(chunks) :] == [Trailer(tuple((n.lower(), v) for n, v in sorted(trailer)), None), End()]


@settings(deadline=None)
@given(data=st.binary(max_size=600), chunk_size=st.integers(1, 200), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_plain_unsigned_body_without_trailer(data: bytes, chunk_size: int, cuts: list[int]) -> None:
    """signed=False, trailer=False reads plain chunked framing ending in ``0\\r\\n\\r\\n``."""
    body = _encode(data, chunk_size, signed=False, trailer=None)
    assert body.endswith(b"0\r\n\r\n")
    events, _ = _decode(_cut(body, cuts), signed=False, trailer=False)
    assert b"".join(e.data for e in events if isinstance(e, Chunk)) == data
    assert events[-1] == End()


@pytest.mark.parametrize("chunk_size", [1, 5, 8192])
def test_botocore_unsigned_trailer_body(chunk_size: int) -> None:
    """A body from botocore's own AwsChunkedWrapper (STREAMING-UNSIGNED-PAYLOAD-TRAILER) decodes, CRC and all."""
    data = bytes(range(256)) * 77
    wrapper = AwsChunkedWrapper(
        io.BytesIO(data), checksum_cls=Crc32Checksum, checksum_name="x-amz-checksum-crc32", chunk_size=chunk_size
    )
    body = wrapper.read()
    events, decoder = _decode(_cut(body, range(0, len(body), 333)), signed=False, trailer=True)
    assert b"".join(e.data for e in events if isinstance(e, Chunk)) == data
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert events[-2:] == [Trailer((("x-amz-checksum-crc32", crc),), None), End()]
    assert decoder.decoded_length == len(data)
    assert len(body) == unsigned_encoded_length(len(data), chunk_size, trailer_lines([("x-amz-checksum-crc32", crc)]))


def test_empty_body() -> None:
    """A body of no data is just the final chunk: End and no Chunk; its length is 86 bytes."""
    body = _encode(b"", DEFAULT_CHUNK_SIZE, signed=True, trailer=None)
    assert len(body) == signed_encoded_length(0) == 86
    events, decoder = _decode([body], signed=True, trailer=False)
    assert events == [End()]
    assert decoder.decoded_length == 0
    assert decoder.finished


def test_uppercase_hex_size_and_padded_trailer_value_accepted() -> None:
    """Upper-case hex sizes are read; spaces around a trailer value are dropped, a name keeps its case."""
    body = b"A\r\n0123456789\r\n0\r\nX-Amz-Checksum-CRC32:  AAAAAA==\t\r\n\r\n"
    events, _ = _decode([body], signed=False, trailer=True)
    assert events == [Chunk(b"0123456789", None), Trailer((("X-Amz-Checksum-CRC32", "AAAAAA=="),), None), End()]


@settings(deadline=None)
@given(data=st.binary(min_size=1, max_size=300), trailer=st.booleans(), cut=st.integers(0, 10_000))
def test_any_truncation_is_an_error(data: bytes, trailer: bool, cut: int) -> None:
    """Every proper prefix of a valid body ends in a ChunkError at close(), never a silent short body."""
    body = _encode(data, 64, signed=True, trailer=CRC_TRAILER if trailer else None)
    prefix = body[: cut % len(body)]
    with pytest.raises(ChunkError):
        _decode([prefix], signed=True, trailer=trailer)


# --- Malformed bodies --------------------------------------------------------------------------------

_DATA_5 = b"5;chunk-signature=" + SIG.encode() + b"\r\nhello\r\n"
_FINAL = b"0;chunk-signature=" + SIG.encode() + b"\r\n"


@pytest.mark.parametrize(
    ("stream", "signed", "trailer", "message"),
    [
        pytest.param(b"zz;chunk-signature=" + SIG.encode() + b"\r\n", True, False, "bad chunk size line", id="bad-hex"),
        pytest.param(b"0x5;chunk-signature=" + SIG.encode() + b"\r\n", True, False, "bad chunk size line", id="0x"),
        pytest.param(b"-1;chunk-signature=" + SIG.encode() + b"\r\n", True, False, "bad chunk size line", id="neg"),
        pytest.param(b"+5\r\nhello\r\n", False, True, "bad chunk size line", id="plus"),
        pytest.param(b" 5\r\nhello\r\n", False, True, "bad chunk size line", id="space"),
        pytest.param(b"5_0\r\n", False, True, "bad chunk size line", id="underscore"),
        pytest.param(b"1" * 17 + b"\r\n", False, True, "bad chunk size line", id="17-digits"),
        pytest.param(b";chunk-signature=" + SIG.encode() + b"\r\n", True, False, "bad chunk size line", id="no-size"),
        pytest.param(b"5\r\nhello\r\n", True, False, "bad chunk size line", id="no-chunk-signature"),
        pytest.param(b"5;chunk-sig=" + SIG.encode() + b"\r\n", True, False, "bad chunk size line", id="misspelt"),
        pytest.param(b"5;chunk-signature=" + b"0" * 63 + b"\r\n", True, False, "bad chunk size line", id="sig-63"),
        pytest.param(b"5;chunk-signature=" + b"0" * 65 + b"\r\n", True, False, "bad chunk size line", id="sig-65"),
        pytest.param(b"5;chunk-signature=" + b"A" * 64 + b"\r\n", True, False, "bad chunk size line", id="sig-upper"),
        pytest.param(b"5;chunk-signature=" + b"g" * 64 + b"\r\n", True, False, "bad chunk size line", id="sig-nonhex"),
        pytest.param(_DATA_5[:-2].replace(b"\r\nhello", b"\nhello") + b"\r\n", True, False, "bad chunk size line",
                     id="bare-lf"),
        pytest.param(b"5;chunk-signature=" + SIG.encode() + b";x=y\r\n", True, False, "bad chunk size line",
                     id="extension"),
        pytest.param(b"5" + b" " * 300, False, True, "bad chunk size line", id="line-too-long"),
        pytest.param(b"5;chunk-signature=" + SIG.encode() + b"\r\n", False, True, "bad chunk size line",
                     id="signature-when-unsigned"),
        pytest.param(b"5;chunk-signature=" + SIG.encode() + b"\r\nhel", True, False,
                     "chunk shorter than its size line", id="short-then-eof"),
        pytest.param(b"5;chunk-signature=" + SIG.encode() + b"\r\nhello, world\r\n", True, False,
                     "chunk longer than its size line", id="long"),
        pytest.param(b"5;chunk-signature=" + SIG.encode() + b"\r\nhello\n", True, False,
                     "chunk longer than its size line", id="data-lf-only"),
        pytest.param(_DATA_5 + _FINAL + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n", True, False, "garbage in trailer",
                     id="trailer-not-expected"),
        pytest.param(_DATA_5 + _FINAL + b"nonsense\r\n\r\n", True, True, "garbage in trailer", id="no-colon"),
        pytest.param(_DATA_5 + _FINAL + b"bad name:x\r\n\r\n", True, True, "garbage in trailer", id="name-space"),
        pytest.param(_DATA_5 + _FINAL + b":x\r\n\r\n", True, True, "garbage in trailer", id="empty-name"),
        pytest.param(_DATA_5 + _FINAL + b"x-amz-checksum-crc32:A\x01A\r\n\r\n", True, True, "garbage in trailer",
                     id="control-char"),
        pytest.param(_DATA_5 + _FINAL + b"x-amz-checksum-crc32:\xc3\xa9\r\n\r\n", True, True, "garbage in trailer",
                     id="non-ascii"),
        pytest.param(_DATA_5 + _FINAL + b"x-amz-checksum-crc32:AAAAAA==\n\r\n", True, True, "garbage in trailer",
                     id="trailer-bare-lf"),
        pytest.param(_DATA_5 + _FINAL + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n", True, True,
                     "missing x-amz-trailer-signature", id="no-trailer-signature"),
        pytest.param(_DATA_5 + _FINAL + b"x-amz-trailer-signature:" + b"0" * 63 + b"\r\n\r\n", True, True,
                     "garbage in trailer", id="trailer-signature-63"),
        pytest.param(_DATA_5 + _FINAL + b"x-amz-trailer-signature:" + SIG.encode() + b"\r\na:b\r\n\r\n", True, True,
                     "garbage in trailer", id="line-after-trailer-signature"),
        pytest.param(b"5\r\nhello\r\n0\r\nx-amz-trailer-signature:" + SIG.encode() + b"\r\n\r\n", False, True,
                     "garbage in trailer", id="trailer-signature-when-unsigned"),
        pytest.param(_DATA_5 + _FINAL + b"\r\nx", True, False, "data after the final chunk", id="data-after-end"),
        pytest.param(b"5\r\nhello\r\n0\r\n\r\n\r\n", False, True, "data after the final chunk", id="extra-crlf"),
        pytest.param(b"", True, False, "stream ended before the final chunk", id="empty"),
        pytest.param(_DATA_5, True, False, "stream ended before the final chunk", id="no-final"),
        pytest.param(_DATA_5[:10], True, False, "stream ended before the final chunk", id="half-size-line"),
        pytest.param(_DATA_5[:-1], True, False, "stream ended before the final chunk", id="half-crlf"),
        pytest.param(_DATA_5 + _FINAL, True, False, "stream ended in the trailer", id="no-blank-line"),
        pytest.param(_DATA_5 + _FINAL + b"x-amz-checksum-crc32:AA", True, True, "stream ended in the trailer",
                     id="half-trailer"),
    ],
)
def test_malformed_body(stream: bytes, signed: bool, trailer: bool, message: str) -> None:
    """Each malformed body raises ChunkError naming what is wrong, fed whole or one byte at a time."""
    assert _error(stream, signed=signed, trailer=trailer) == message
    with pytest.raises(ChunkError) as caught:
        _decode([stream[i : i + 1] for i in range(len(stream))], signed=signed, trailer=trailer)
    assert str(caught.value) == message


def test_oversize_chunk_refused_at_its_size_line() -> None:
    """A chunk over max_chunk_size is refused as soon as its size line arrives, before any of its data."""
    decoder = ChunkDecoder(signed=True, trailer=False, max_chunk_size=16)
    assert decoder.feed(b"10;chunk-signature=" + SIG.encode() + b"\r\n") == []  # exactly the limit
    decoder = ChunkDecoder(signed=True, trailer=False, max_chunk_size=16)
    with pytest.raises(ChunkError, match=r"^chunk of 17 bytes over the limit of 16$"):
        decoder.feed(b"11;chunk-signature=" + SIG.encode() + b"\r\n")
    assert _error(b"ffffffffffffffff\r\n", signed=False) == f"chunk of {2**64 - 1} bytes over the limit of {16 * 2**20}"


def test_trailer_over_its_limit() -> None:
    """A trailer section longer than max_trailer_size is refused without waiting for its end."""
    stream = _DATA_5 + _FINAL + b"x-amz-meta-big:" + b"v" * 100
    assert _error(stream, trailer=True, max_trailer_size=64) == "trailer over the limit of 64 bytes"
    fits = _DATA_5 + _FINAL + b"a:b\r\nx-amz-trailer-signature:" + SIG.encode() + b"\r\n\r\n"
    events, _ = _decode([fits], signed=True, trailer=True, max_trailer_size=len(fits) - len(_DATA_5 + _FINAL) - 2)
    assert events[-2:] == [Trailer((("a", "b"),), SIG), End()]


def test_data_after_end_in_a_later_feed() -> None:
    """Once End was emitted, more bytes are refused; an empty feed or close() is fine."""
    decoder = ChunkDecoder(signed=True, trailer=False)
    assert decoder.feed(_DATA_5 + _FINAL + b"\r\n") == [Chunk(b"hello", SIG), End()]
    assert decoder.feed(b"") == []
    decoder.close()
    with pytest.raises(ChunkError, match=r"^data after the final chunk$"):
        decoder.feed(b"0")


def test_error_is_sticky() -> None:
    """After a ChunkError every later feed() and close() raises the same error."""
    decoder = ChunkDecoder(signed=False, trailer=True)
    with pytest.raises(ChunkError, match=r"^bad chunk size line$"):
        decoder.feed(b"zz\r\n")
    with pytest.raises(ChunkError, match=r"^bad chunk size line$"):
        decoder.feed(b"0\r\n\r\n")
    with pytest.raises(ChunkError, match=r"^bad chunk size line$"):
        decoder.close()


def test_chunk_emitted_only_once_its_crlf_arrived() -> None:
    """A chunk whose data is complete is held back until the CRLF that proves its length arrives."""
    decoder = ChunkDecoder(signed=True, trailer=False)
    assert decoder.feed(_DATA_5[:-2]) == []
    assert decoder.feed(b"\r") == []
    assert decoder.feed(b"\n") == [Chunk(b"hello", SIG)]
    assert decoder.decoded_length == 5


# --- Verification ------------------------------------------------------------------------------------


def test_check_accepts_the_chain_and_rejects_a_flipped_byte() -> None:
    """check() accepts what the signer produced and rejects the middle chunk once a byte of it is flipped."""
    data = bytes(range(256)) * 3
    body = bytearray(_encode(data, 256, signed=True, trailer=None))
    events, _ = _decode([bytes(body)], signed=True, trailer=False)
    verifier = _signer()
    for e in events:
        if isinstance(e, Chunk):
            verifier.check(e.data, e.signature or "")
    frame = len(b"100;chunk-signature=") + 64 + 2 + 256 + 2  # one 256-byte chunk on the wire
    body[frame + len(b"100;chunk-signature=") + 64 + 2 + 128] ^= 0x01  # mid-data of the second chunk
    events, _ = _decode([bytes(body)], signed=True, trailer=False)
    chunks = [e for e in events if isinstance(e, Chunk)]
    verifier = _signer()
    verifier.check(chunks[0].data, chunks[0].signature or "")
    with pytest.raises(ChunkError, match=r"^bad chunk signature$"):
        verifier.check(chunks[1].data, chunks[1].signature or "")


def test_check_rejects_reordered_chunks_and_a_wrong_seed() -> None:
    """The chain binds chunk order and the seed: swapped chunks or another seed do not verify."""
    signer = _signer()
    sig_a, sig_b = signer.sign(b"a"), signer.sign(b"b")
    with pytest.raises(ChunkError, match=r"^bad chunk signature$"):
        _signer().check(b"b", sig_b)
    with pytest.raises(ChunkError, match=r"^bad chunk signature$"):
        ChunkSigner(AWS_KEY, AWS_DATE, AWS_SCOPE, "1" * 64).check(b"a", sig_a)
    with pytest.raises(ChunkError, match=r"^bad chunk signature$"):
        _signer().check(b"a", "not even hex \u00e9")


def test_check_trailer() -> None:
    """check_trailer() accepts the signer's trailer signature, whatever the field case, and rejects a change."""
    signer = _signer()
    signer.sign(b"")
    signature = signer.trailer_signature(CRC_TRAILER)
    signer.check_trailer([("X-Amz-Checksum-Crc32", "AAAAAA==")], signature)
    with pytest.raises(ChunkError, match=r"^bad trailer signature$"):
        signer.check_trailer([("x-amz-checksum-crc32", "AAAAAB==")], signature)


# --- Lengths, rechunking, encoder inputs -------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 7, 1000, DEFAULT_CHUNK_SIZE])
@pytest.mark.parametrize("trailer", [None, b"x-amz-checksum-crc32:AAAAAA==\r\n"], ids=["no-trailer", "trailer"])
def test_signed_encoded_length_matches_a_real_body(chunk_size: int, trailer: bytes | None) -> None:
    """signed_encoded_length() is len() of the real body at 0, 1, size-1, size, size+1 and several chunks."""
    headers = CRC_TRAILER if trailer is not None else None
    for size in sorted({0, 1, chunk_size - 1, chunk_size, chunk_size + 1, 3 * chunk_size + 5}):
        body = _encode(b"x" * size, chunk_size, signed=True, trailer=headers)
        assert signed_encoded_length(size, chunk_size, trailer) == len(body), size
        if trailer is not None:
            assert signed_encoded_length(size, chunk_size, len(trailer)) == len(body)
        unsigned = _encode(b"x" * size, chunk_size, signed=False, trailer=headers)
        assert unsigned_encoded_length(size, chunk_size, trailer or b"") == len(unsigned), size


def test_signed_encoded_length_large() -> None:
    """A 5 MiB + 3 byte body in 64 KiB chunks has exactly the computed length."""
    size = 5 * 2**20 + 3
    assert signed_encoded_length(size) == len(_encode(b"\0" * size, DEFAULT_CHUNK_SIZE, signed=True, trailer=None))
    # 80 full chunks of "10000;chunk-signature=<64>\r\n...\r\n", a 3-byte one, the final chunk.
    assert signed_encoded_length(size) == 80 * (5 + 17 + 64 + 2 + 65536 + 2) + (1 + 17 + 64 + 2 + 3 + 2) + 86


def test_length_arguments_checked() -> None:
    """Negative lengths and empty chunk sizes are programming errors (ValueError), not ChunkErrors."""
    with pytest.raises(ValueError, match="negative"):
        signed_encoded_length(-1)
    with pytest.raises(ValueError, match="chunk_size"):
        signed_encoded_length(1, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        Rechunker(0)


@given(pieces=st.lists(st.binary(max_size=300), max_size=30), size=st.integers(1, 128))
def test_rechunker_cuts_exact_pieces(pieces: list[bytes], size: int) -> None:
    """Rechunker returns only whole chunk_size pieces, keeps less than one chunk back, and loses nothing."""
    cutter = Rechunker(size)
    out: list[bytes] = []
    for piece in pieces:
        got = cutter.feed(piece)
        assert all(len(g) == size for g in got)
        assert cutter.buffered < size
        out.extend(got)
    rest = cutter.flush()
    assert len(rest) < size
    assert cutter.buffered == 0
    assert b"".join(out) + rest == b"".join(pieces)


def test_rechunker_accepts_mutable_buffers() -> None:
    """A bytearray fed to Rechunker may be reused by the caller: the pieces are copies."""
    cutter = Rechunker(4)
    buf = bytearray(b"abcd")
    (piece,) = cutter.feed(buf)
    buf[:] = b"zzzz"
    assert piece == b"abcd"


def test_encoder_inputs_checked() -> None:
    """Trailer fields must be HTTP tokens and printable values; the signature field is the signer's."""
    for bad in [("bad name", "v"), ("x", "a\r\nb"), ("x", "\u00e9"), ("x-amz-trailer-signature", SIG)]:
        with pytest.raises(ValueError, match="trailer"):
            trailer_lines([bad])
    with pytest.raises(ValueError, match="final_unsigned"):
        frame_unsigned(b"")
    with pytest.raises(ValueError, match="max_chunk_size"):
        ChunkDecoder(signed=True, trailer=False, max_chunk_size=0)


def test_module_is_pure() -> None:
    """streaming.py imports nothing that does I/O, runs an event loop or reads the clock."""
    tree = ast.parse(Path(streaming.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "hashlib", "hmac", "re", "collections", "dataclasses", "typing", "sigproxy"}
