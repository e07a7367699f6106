"""SignedFramer: byte for byte the frames ChunkSigner.frame writes for the same cut, whatever the pieces it
is fed, holding less than a chunk; accepted by the decoder and the chain check; every boundary."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigproxy import chunkframing
from sigproxy.chunkframing import MIN_CHUNK_SIZE, Rechunker, SignedFramer, signed_encoded_length
from sigproxy.signing import Signer
from sigproxy.streaming import Chunk, ChunkDecoder, ChunkSigner, End

# The worked example of https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html.
AWS_KEY = Signer().signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1", "s3")
AWS_DATE = "20130524T000000Z"
AWS_SCOPE = "20130524/us-east-1/s3/aws4_request"
AWS_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
AWS_CHUNK_SIGNATURES = (
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
)


def _signer() -> ChunkSigner:
    return ChunkSigner(AWS_KEY, AWS_DATE, AWS_SCOPE, AWS_SEED)


def _framed(data: bytes, chunk_size: int, cuts: list[int]) -> tuple[bytes, list[int]]:
    """The body SignedFramer writes for ``data`` fed in pieces cut at ``cuts``, final chunk included, and the
    data bytes it held after each feed."""
    signer = _signer()
    framer = SignedFramer(signer, chunk_size)
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    out: list[bytes | memoryview] = []
    held: list[int] = []
    for start, end in itertools.pairwise(points):
        out.extend(framer.feed(data[start:end]))
        held.append(framer.buffered)
    out.extend(framer.flush())
    assert framer.sent == len(data)
    out.append(signer.frame(b""))
    return b"".join(out), held


def _reference(data: bytes, chunk_size: int) -> bytes:
    """The same body from the plain path: Rechunker pieces, each through ChunkSigner.frame."""
    signer = _signer()
    cutter = Rechunker(chunk_size)
    pieces = cutter.feed(data)
    if rest := cutter.flush():
        pieces.append(rest)
    return b"".join(signer.frame(p) for p in pieces) + signer.frame(b"")


def _decoded(body: bytes) -> bytes:
    """Decode ``body`` and check every chunk signature with an independent chain (raises if one is wrong)."""
    decoder = ChunkDecoder(signed=True, trailer=False)
    check = _signer()
    data = bytearray()
    events = decoder.feed(body)
    decoder.close()
    for event in events:
        if isinstance(event, Chunk):
            check.check(event.data, event.signature or "")
            data += event.data
    assert isinstance(events[-1], End)
    check.check(b"", decoder.final_signature or "")
    return bytes(data)


def test_aws_worked_example() -> None:
    """66560 bytes of "a" in 64 KiB chunks, fed in odd pieces: AWS's own three chunk signatures."""
    data = b"a" * 66560
    body, _ = _framed(data, 65536, list(range(0, 66560, 7001)))
    assert body == _reference(data, 65536)
    assert [line.split(b"=")[1] for line in body.split(b"\r\n") if b"chunk-signature=" in line] == [
        s.encode() for s in AWS_CHUNK_SIGNATURES]
    assert len(body) == signed_encoded_length(len(data), 65536)


@pytest.mark.parametrize(("length", "what"), [
    (0, "empty body: only the final chunk"),
    (1, "one byte"),
    (MIN_CHUNK_SIZE - 1, "one byte under a chunk"),
    (MIN_CHUNK_SIZE, "exactly one chunk"),
    (MIN_CHUNK_SIZE + 1, "one byte over: a second chunk of one byte"),
    (3 * MIN_CHUNK_SIZE, "exactly three chunks"),
])
@pytest.mark.parametrize("piece", [1, 1000, MIN_CHUNK_SIZE, MIN_CHUNK_SIZE + 1, 10 * MIN_CHUNK_SIZE])
def test_boundaries(length: int, what: str, piece: int) -> None:
    """At and around chunk boundaries, fed in pieces smaller, equal and larger than a chunk: the reference
    bytes, the announced length, the chunk count, and a decoder that checks each signature takes it."""
    data = bytes(i * 7 % 251 for i in range(length))
    body, held = _framed(data, MIN_CHUNK_SIZE, list(range(0, length, piece)))
    assert body == _reference(data, MIN_CHUNK_SIZE), what
    assert len(body) == signed_encoded_length(length, MIN_CHUNK_SIZE)
    assert body.count(b";chunk-signature=") == -(-length // MIN_CHUNK_SIZE) + 1
    assert _decoded(body) == data
    assert all(h < MIN_CHUNK_SIZE for h in held)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=5000), chunk_size=st.integers(1, 1200), cuts=st.lists(st.integers(0, 5000)))
def test_any_pieces_any_chunk_size(data: bytes, chunk_size: int, cuts: list[int]) -> None:
    """Whatever the pieces and the chunk size: the same bytes as the reference path, less than a chunk held."""
    body, held = _framed(data, chunk_size, cuts)
    assert body == _reference(data, chunk_size)
    assert _decoded(body) == data
    assert all(h < chunk_size for h in held)


def test_trickle_one_byte_at_a_time() -> None:
    """A client trickling single bytes: chunks come out whole, only when complete, and correct."""
    data = bytes(range(256)) * 80  # 20480 bytes: two 8 KiB chunks and a 4 KiB one
    signer = _signer()
    framer = SignedFramer(signer, MIN_CHUNK_SIZE)
    out: list[bytes | memoryview] = []
    for i in range(len(data)):
        frames = framer.feed(data[i : i + 1])
        assert bool(frames) == ((i + 1) % MIN_CHUNK_SIZE == 0)
        out.extend(frames)
    out.extend(framer.flush())
    out.append(signer.frame(b""))
    assert b"".join(out) == _reference(data, MIN_CHUNK_SIZE)


def test_no_copy_of_bytes_and_a_copy_of_anything_else() -> None:
    """A whole-chunk ``bytes`` piece is sent as that very object, a cut one as views of it; a bytearray is
    copied, so the caller may reuse it."""
    signer = _signer()
    framer = SignedFramer(signer, 4)
    piece = b"abcd"
    frames = framer.feed(piece)
    assert frames[1] is piece
    frames = framer.feed(b"efghij")
    assert isinstance(frames[1], memoryview) and frames[1].obj == b"efghij"
    reused = bytearray(b"k")
    assert framer.feed(reused) == []
    reused[:] = b"X"
    last = framer.flush()
    assert b"".join(last[1:-1]) == b"ijk"
    assert framer.sent == 11


def test_bad_chunk_size() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        SignedFramer(_signer(), 0)


def test_module_is_pure() -> None:
    """chunkframing.py imports nothing that does I/O, runs an event loop or reads the clock."""
    tree = ast.parse(Path(chunkframing.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "hashlib", "collections", "sigproxy"}
