"""Pure S3 ``aws-chunked`` writing: cutting a byte stream into chunks, framing them, the framed length.

Owns: the encoder side of the wire format described in :mod:`sigproxy.streaming` -- :class:`SignedFramer`
(signed chunks with no copy of the data), :class:`Rechunker` (fixed-size pieces), the unsigned frames, and
the exact ``Content-Length`` of a framed body. Must not: do I/O, read the clock, log, import aiohttp or
asyncio, or look up credentials (the caller passes a :class:`~sigproxy.streaming.ChunkSigner`).

Chunk sizes (AWS "sigv4-streaming": every chunk but the last is at least 8 KiB; minio refuses chunks over
16 MiB; aws-sdk-java-v2 sends 64 KiB, botocore 1 MiB). A signature covers one whole chunk and precedes its
data, so a writer holds one chunk of data before it can send any of it: the chunk size is also the memory
each upload needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sigproxy.streaming import (
    DEFAULT_CHUNK_SIZE,
    TRAILER_SIGNATURE_HEADER,
    ChunkSigner,
    trailer_lines,
)

__all__ = [
    "MIN_CHUNK_SIZE",
    "SignedFramer",
    "Rechunker",
    "frame_unsigned",
    "final_unsigned",
    "signed_encoded_length",
    "unsigned_encoded_length",
]

# AWS: "Each chunk must be at least 8 KB in size, except the last chunk" (sigv4-streaming).
MIN_CHUNK_SIZE = 8 * 1024

_CRLF = b"\r\n"
_SIGNATURE_LENGTH = 64
# Framing bytes around a signed chunk besides its hex size and data: ";chunk-signature=" + sig + 2 CRLFs.
_SIGNED_OVERHEAD = len(";chunk-signature=") + _SIGNATURE_LENGTH + 2 * len(_CRLF)
# "x-amz-trailer-signature:" + sig + CRLF.
_TRAILER_SIGNATURE_LINE = len(TRAILER_SIGNATURE_HEADER) + 1 + _SIGNATURE_LENGTH + len(_CRLF)


class SignedFramer:
    """Cuts a stream of byte pieces into signed ``chunk_size`` chunks of the chain, without copying the data.

    :meth:`feed` hashes each piece as it arrives and holds it (the piece itself, or a ``memoryview`` slice
    of it where a chunk boundary cuts it) until its chunk is whole; it then returns the chunk as buffers to
    write in order: the size line with the chunk's signature (``bytes``), then the held pieces. The CRLF
    that closes a chunk's data goes out in front of the next size line (one small write per chunk, not
    two), and :meth:`flush` returns the last, shorter chunk followed by the closing CRLF. Then comes the
    final zero-length chunk (and any trailer), the caller's: :meth:`ChunkSigner.frame` ``(b"")`` or
    :meth:`ChunkSigner.final_with_trailer`.

    Memory: at most ``chunk_size - 1`` bytes of data are held between calls, plus the unused rest of the
    one piece that straddles the boundary (a slice keeps its whole piece alive): under ``chunk_size`` plus
    one piece. Pieces must not change after they are fed (``bytes`` are taken as they are, anything else is
    copied once); the returned buffers are ``bytes`` or views of ``bytes``, so they never change.
    """

    __slots__ = ("_digest", "_held", "_held_len", "_open", "_signer", "_size", "sent")

    def __init__(self, signer: ChunkSigner, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self._signer = signer
        self._size = chunk_size
        self._held: list[bytes | memoryview] = []
        self._held_len = 0
        self._digest = hashlib.sha256()
        self._open = False  # a chunk's data was returned without its closing CRLF
        self.sent = 0
        """Data bytes framed so far (in returned chunks; held bytes are not counted)."""

    @property
    def buffered(self) -> int:
        """Data bytes held back, waiting for their chunk to be whole."""
        return self._held_len

    def _hold(self, part: bytes | memoryview) -> None:
        self._digest.update(part)
        self._held.append(part)
        self._held_len += len(part)

    def _emit(self, out: list[bytes | memoryview]) -> None:
        size = self._held_len
        signature = self._signer.sign_hashed(self._digest.hexdigest())
        line = b"%x;chunk-signature=%s\r\n" % (size, signature.encode("ascii"))
        out.append(_CRLF + line if self._open else line)
        out.extend(self._held)
        self._open = True
        self.sent += size
        self._held = []
        self._held_len = 0
        self._digest = hashlib.sha256()

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
        """The buffers of every chunk that ``data`` completes, in order (empty while a chunk is still short)."""
        if not isinstance(data, bytes):
            data = bytes(data)
        out: list[bytes | memoryview] = []
        end = len(data)
        need = self._size - self._held_len
        if end < need:
            if end:
                self._hold(data)
            return out
        view = memoryview(data)
        pos = 0
        while end - pos >= need:
            self._hold(data if need == end else view[pos : pos + need])
            pos += need
            self._emit(out)
            need = self._size
        if pos < end:
            self._hold(view[pos:end])
        return out

    def flush(self) -> list[bytes | memoryview]:
        """The buffers of the last, shorter chunk (if anything is held), and the CRLF closing the data."""
        out: list[bytes | memoryview] = []
        if self._held_len:
            self._emit(out)
        if self._open:
            out.append(_CRLF)
            self._open = False
        return out


def frame_unsigned(data: bytes) -> bytes:
    """One chunk of a ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` body (``data`` must not be empty)."""
    if not data:
        raise ValueError("the final chunk is written by final_unsigned()")
    return b"".join((b"%x\r\n" % len(data), data, _CRLF))


def final_unsigned(headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """The end of an unsigned body: ``0``, the trailer fields (see :func:`trailer_lines`), the blank line."""
    return b"".join((b"0\r\n", trailer_lines(headers), _CRLF))


def _split(decoded_length: int, chunk_size: int) -> tuple[int, int]:
    if decoded_length < 0:
        raise ValueError("decoded_length must not be negative")
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    return divmod(decoded_length, chunk_size)


def signed_encoded_length(
    decoded_length: int, chunk_size: int = DEFAULT_CHUNK_SIZE, trailer: bytes | int | None = None
) -> int:
    """The exact ``Content-Length`` of a signed body of ``decoded_length`` bytes cut into ``chunk_size`` pieces.

    The pieces are all ``chunk_size`` long but the last (as :class:`Rechunker` cuts them), then comes the
    final chunk. ``trailer`` is ``None`` for :data:`STREAMING_SIGNED`; for :data:`STREAMING_SIGNED_TRAILER`
    it is the trailer fields exactly as sent (:func:`trailer_lines`, e.g.
    ``b"x-amz-checksum-crc32:AAAAAA==\\r\\n"``; a placeholder of the right length does), or their length
    in bytes, *without* the ``x-amz-trailer-signature`` line: that line has a fixed length and is counted
    here.
    """
    full, rest = _split(decoded_length, chunk_size)
    length = full * (len(b"%x" % chunk_size) + _SIGNED_OVERHEAD + chunk_size)
    if rest:
        length += len(b"%x" % rest) + _SIGNED_OVERHEAD + rest
    final = 1 + _SIGNED_OVERHEAD  # "0;chunk-signature=<sig>\r\n" and the closing CRLF
    if trailer is not None:
        final += (trailer if isinstance(trailer, int) else len(trailer)) + _TRAILER_SIGNATURE_LINE
    return length + final


def unsigned_encoded_length(
    decoded_length: int, chunk_size: int = DEFAULT_CHUNK_SIZE, trailer: bytes | int = b""
) -> int:
    """The exact ``Content-Length`` of an unsigned body (``trailer``: the fields as sent or their length)."""
    full, rest = _split(decoded_length, chunk_size)
    length = full * (len(b"%x" % chunk_size) + 2 * len(_CRLF) + chunk_size)
    if rest:
        length += len(b"%x" % rest) + 2 * len(_CRLF) + rest
    trailer_length = trailer if isinstance(trailer, int) else len(trailer)
    return length + len(b"0\r\n") + trailer_length + len(_CRLF)


class Rechunker:
    """Cuts a stream of byte pieces of any sizes into ``chunk_size`` pieces (the last one from :meth:`flush`).

    At most ``chunk_size - 1`` bytes are held between calls; bytes are copied once (twice for a piece
    that straddles calls), never re-sliced from a growing buffer.
    """

    __slots__ = ("_buf", "_size")

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self._size = chunk_size
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held back, waiting for a full chunk."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The whole ``chunk_size`` pieces that ``data`` completes (copies: the caller may reuse ``data``)."""
        size = self._size
        out: list[bytes] = []
        view = memoryview(data)
        pos = 0
        end = len(view)
        buf = self._buf
        if buf:
            take = min(size - len(buf), end)
            buf += view[:take]
            pos = take
            if len(buf) < size:
                return out
            out.append(bytes(buf))
            buf.clear()
        if pos == 0 and end == size and isinstance(data, bytes):
            out.append(data)
            return out
        while end - pos >= size:
            out.append(bytes(view[pos : pos + size]))
            pos += size
        if pos < end:
            buf += view[pos:end]
        return out

    def flush(self) -> bytes:
        """The bytes held back (``b""`` if none); the rechunker is empty afterwards."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest
