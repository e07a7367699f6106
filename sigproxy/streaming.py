"""Pure S3 ``aws-chunked`` bodies: the chunk-signature chain, framing, and a sans-I/O decoder.

Owns: the wire format of the three streaming payload modes (:data:`STREAMING_SIGNED`,
:data:`STREAMING_SIGNED_TRAILER`, :data:`STREAMING_UNSIGNED_TRAILER`), the chunk and trailer strings to
sign, and decoding. Writing bodies (cutting a stream into chunks, framing them, their exact length) is
:mod:`sigproxy.chunkframing`.
Must not: do I/O, read the clock, log anything, import aiohttp or asyncio, or look up credentials (the
caller passes the derived signing key, the request's ``x-amz-date``, scope and header signature).

Wire format (AWS "sigv4-streaming" and "sigv4-streaming-trailers" pages; aws-sdk-java-v2
``ChunkedEncodedInputStream``/``SigV4ChunkExtensionProvider``/``SigV4TrailerProvider``; minio
``cmd/streaming-signature-v4.go``/``streaming-v4-unsigned.go``; botocore ``AwsChunkedWrapper``)::

    signed chunk      <hex size>;chunk-signature=<64 hex>\\r\\n<data>\\r\\n
    signed end        0;chunk-signature=<64 hex>\\r\\n\\r\\n
    signed + trailer  0;chunk-signature=<64 hex>\\r\\n<name>:<value>\\r\\n...
                      x-amz-trailer-signature:<64 hex>\\r\\n\\r\\n
    unsigned chunk    <hex size>\\r\\n<data>\\r\\n
    unsigned end      0\\r\\n<name>:<value>\\r\\n...\\r\\n

Chunk string to sign (the first ``previous`` is the seed, the request's header signature; the final
zero-length chunk is signed like any other)::

    AWS4-HMAC-SHA256-PAYLOAD\\n<amz date>\\n<scope>\\n<previous>\\n<sha256 of "">\\n<sha256 of chunk data>

Trailer string to sign (``previous`` is the final chunk's signature)::

    AWS4-HMAC-SHA256-TRAILER\\n<amz date>\\n<scope>\\n<previous>\\n<sha256 of canonical trailer>

The canonical trailer is the canonical-headers block of SigV4 (lower-case names sorted, values trimmed,
every line ending in ``\\n``, the last one too), as aws-sdk-java-v2 and the .NET SDK build it. minio hashes
the raw lines instead (CRLF -> LF); the two agree because :class:`ChunkSigner` sends the trailer lines in
canonical order and form, and every SDK sends a single lower-case checksum line.

Verifying an inbound signed body: feed the bytes to a :class:`ChunkDecoder`, call
:meth:`ChunkSigner.check` for every :class:`Chunk`, then ``check(b"", decoder.final_signature)`` when the
:class:`Trailer` or :class:`End` arrives, then :meth:`ChunkSigner.check_trailer` for the :class:`Trailer`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from sigproxy.signing import EMPTY_SHA256, canonical_headers

__all__ = [
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "CHUNK_ALGORITHM",
    "TRAILER_ALGORITHM",
    "TRAILER_SIGNATURE_HEADER",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_CHUNK_SIZE",
    "DEFAULT_MAX_TRAILER_SIZE",
    "ChunkError",
    "Chunk",
    "Trailer",
    "End",
    "Event",
    "ChunkDecoder",
    "ChunkSigner",
    "trailer_lines",
]

# x-amz-content-sha256 values that announce an aws-chunked body
# (https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-auth-using-authorization-header.html).
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
# First lines of the chunk and trailer strings to sign.
CHUNK_ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"
TRAILER_ALGORITHM = "AWS4-HMAC-SHA256-TRAILER"
TRAILER_SIGNATURE_HEADER = "x-amz-trailer-signature"
# The chunk size of the AWS worked example and of aws-sdk-java-v2 / smithy-kotlin (CHUNK_SIZE_BYTES).
DEFAULT_CHUNK_SIZE = 64 * 1024
# minio refuses chunks over 16 MiB (errChunkTooBig); no SDK sends more than 1 MiB (botocore's default).
DEFAULT_MAX_CHUNK_SIZE = 16 * 2**20
# Trailers carry a checksum or two (under 100 bytes each); 16 KiB is generous and bounds a hostile client.
DEFAULT_MAX_TRAILER_SIZE = 16 * 1024

_CRLF = b"\r\n"
# Longest size line accepted: 16 hex digits + ";chunk-signature=" + 64 hex is 97 bytes.
_MAX_SIZE_LINE = 128

_SIGNED_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16});chunk-signature=([0-9a-f]{64})")
_UNSIGNED_SIZE_LINE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# A trailer field is an RFC 9110 field-name (token), ":", and a value of visible ASCII, spaces and tabs.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_BYTES = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\x20-\x7e\t]*")
_FIELD_VALUE_BYTES = re.compile(rb"[\x20-\x7e\t]*")
_HEX_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class ChunkError(ValueError):
    """An ``aws-chunked`` body is malformed, over a limit, or carries a wrong signature.

    The message says exactly what is wrong, one of: ``bad chunk size line``, ``chunk shorter than its
    size line``, ``chunk longer than its size line``, ``chunk of N bytes over the limit of M``,
    ``garbage in trailer``, ``missing x-amz-trailer-signature``, ``trailer over the limit of M bytes``,
    ``data after the final chunk``, ``stream ended before the final chunk``, ``stream ended in the
    trailer``, ``bad chunk signature``, ``bad trailer signature``.
    """


@dataclass(frozen=True, slots=True)
class Chunk:
    """One whole data chunk (never the final zero-length one)."""

    data: bytes
    signature: str | None
    """The ``chunk-signature`` it was sent with (64 lower-case hex), ``None`` for an unsigned body."""


@dataclass(frozen=True, slots=True)
class Trailer:
    """The trailer section, emitted just before :class:`End` when the decoder expects a trailer."""

    headers: tuple[tuple[str, str], ...]
    """Trailer fields in the order sent: names as sent, values without surrounding spaces or tabs."""
    signature: str | None
    """The ``x-amz-trailer-signature`` value; ``None`` for an unsigned body."""


@dataclass(frozen=True, slots=True)
class End:
    """The body is complete: the final chunk, the trailer and the closing blank line were all read."""


Event: TypeAlias = Chunk | Trailer | End

# Decoder states.
_SIZE = 0  # reading a size line
_DATA = 1  # reading chunk data
_DATA_CRLF = 2  # reading the CRLF after chunk data
_TRAILER = 3  # reading trailer lines up to the blank line
_DONE = 4  # End emitted


class ChunkDecoder:
    """Sans-I/O decoder of one ``aws-chunked`` body; feed it bytes cut at any boundaries.

    It checks the framing only; signatures are checked by the caller with :class:`ChunkSigner` (see the
    module docstring). Memory is bounded by ``max_chunk_size`` plus ``max_trailer_size``: a chunk is
    held until it is whole and its closing CRLF has arrived, then emitted once as a :class:`Chunk`.
    Copies are linear: whole chunks are sliced straight out of the fed bytes, partial ones appended to one
    ``bytearray``, and only short lines are ever re-buffered.

    After a :class:`ChunkError` the decoder is broken: every later call raises the same error.
    """

    __slots__ = (
        "_chunk_signature",
        "_crlf",
        "_data",
        "_decoded",
        "_error",
        "_final_signature",
        "_max_chunk",
        "_max_trailer",
        "_need",
        "_partial",
        "_pending",
        "_signed",
        "_state",
        "_trailer",
        "_trailer_headers",
        "_trailer_left",
        "_trailer_signature",
    )

    def __init__(
        self,
        *,
        signed: bool,
        trailer: bool,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
        max_trailer_size: int = DEFAULT_MAX_TRAILER_SIZE,
    ) -> None:
        if max_chunk_size < 1:
            raise ValueError("max_chunk_size must be at least 1")
        if max_trailer_size < 0:
            raise ValueError("max_trailer_size must not be negative")
        self._signed = signed
        self._trailer = trailer
        self._max_chunk = max_chunk_size
        self._max_trailer = max_trailer_size
        self._state = _SIZE
        self._partial = bytearray()  # an incomplete line
        self._need = 0  # data bytes still missing from the current chunk
        self._data = bytearray()  # the current chunk's data when it spans feeds
        self._pending = b""  # a whole chunk waiting for its closing CRLF
        self._crlf = 0  # bytes of that CRLF seen
        self._chunk_signature: str | None = None
        self._final_signature: str | None = None
        self._trailer_left = 0
        self._trailer_headers: list[tuple[str, str]] = []
        self._trailer_signature: str | None = None
        self._decoded = 0
        self._error: str | None = None

    @property
    def decoded_length(self) -> int:
        """Data bytes emitted so far."""
        return self._decoded

    @property
    def final_signature(self) -> str | None:
        """The final zero-length chunk's signature once it has been read (``None`` before, or unsigned)."""
        return self._final_signature

    @property
    def finished(self) -> bool:
        """:class:`End` has been emitted."""
        return self._state == _DONE

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Take the next bytes of the body (any length, even empty); return the events they complete, in order.

        Raises:
            ChunkError: the bytes break the format or a limit, or arrive after the end.
        """
        if self._error is not None:
            raise ChunkError(self._error)
        if not isinstance(data, bytes):
            data = bytes(data)
        events: list[Event] = []
        try:
            self._run(data, events)
        except ChunkError as exc:
            self._error = str(exc)
            raise
        return events

    def close(self) -> None:
        """The body has ended (EOF).

        Raises:
            ChunkError: the body stopped inside a chunk, before the final chunk, or inside the trailer.
        """
        if self._error is not None:
            raise ChunkError(self._error)
        if self._state == _DONE:
            return
        if self._state == _DATA:
            self._error = "chunk shorter than its size line"
        elif self._state == _TRAILER:
            self._error = "stream ended in the trailer"
        else:
            self._error = "stream ended before the final chunk"
        raise ChunkError(self._error)

    def _run(self, data: bytes, events: list[Event]) -> None:
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                need = self._need
                if end - pos >= need:
                    if self._data:
                        self._data += memoryview(data)[pos : pos + need]
                        self._pending = bytes(self._data)
                        self._data = bytearray()
                    else:
                        self._pending = data[pos : pos + need]
                    pos += need
                    self._need = 0
                    self._crlf = 0
                    self._state = _DATA_CRLF
                else:
                    self._data += memoryview(data)[pos:end]
                    self._need -= end - pos
                    pos = end
            elif state == _DATA_CRLF:
                if self._crlf == 0 and data.startswith(_CRLF, pos):
                    pos += 2
                else:
                    while self._crlf < 2 and pos < end:
                        if data[pos] != _CRLF[self._crlf]:
                            raise ChunkError("chunk longer than its size line")
                        self._crlf += 1
                        pos += 1
                    if self._crlf < 2:
                        continue
                chunk = self._pending
                self._pending = b""
                self._decoded += len(chunk)
                events.append(Chunk(chunk, self._chunk_signature))
                self._state = _SIZE
            elif state == _DONE:
                raise ChunkError("data after the final chunk")
            else:
                pos = self._line(data, pos, end, events)

    def _line(self, data: bytes, pos: int, end: int, events: list[Event]) -> int:
        """Consume bytes of a size or trailer line; handle the line once its LF has arrived."""
        partial = self._partial
        if self._state == _SIZE:
            limit = _MAX_SIZE_LINE + 2
            too_long = "bad chunk size line"
        elif not self._trailer:
            limit = 2  # only the closing blank line may follow the final chunk
            too_long = "garbage in trailer"
        else:
            limit = self._trailer_left
            too_long = f"trailer over the limit of {self._max_trailer} bytes"
        window = min(end, pos + max(limit - len(partial), 0))
        lf = data.find(b"\n", pos, window)
        if lf < 0:
            if window < end or len(partial) + (end - pos) > limit:
                raise ChunkError(too_long)
            partial += memoryview(data)[pos:end]
            return end
        if partial:
            partial += memoryview(data)[pos : lf + 1]
            line = bytes(partial)
            partial.clear()
        else:
            line = data[pos : lf + 1]
        if self._state == _SIZE:
            if not line.endswith(_CRLF):
                raise ChunkError("bad chunk size line")
            self._size_line(line[:-2])
        else:
            self._trailer_left -= len(line)
            if not line.endswith(_CRLF):
                raise ChunkError("garbage in trailer")
            self._trailer_line(line[:-2], events)
        return lf + 1

    def _size_line(self, line: bytes) -> None:
        signature: str | None = None
        if self._signed:
            match = _SIGNED_SIZE_LINE.fullmatch(line)
            if match is None:
                raise ChunkError("bad chunk size line")
            size = int(match[1], 16)
            signature = match[2].decode("ascii")
        else:
            if _UNSIGNED_SIZE_LINE.fullmatch(line) is None:
                raise ChunkError("bad chunk size line")
            size = int(line, 16)
        if size > self._max_chunk:
            raise ChunkError(f"chunk of {size} bytes over the limit of {self._max_chunk}")
        if size == 0:
            self._final_signature = signature
            self._trailer_left = self._max_trailer + len(_CRLF)  # the closing blank line is always allowed
            self._state = _TRAILER
        else:
            self._chunk_signature = signature
            self._need = size
            self._state = _DATA

    def _trailer_line(self, line: bytes, events: list[Event]) -> None:
        if not line:
            if self._trailer:
                if self._signed and self._trailer_signature is None:
                    raise ChunkError("missing x-amz-trailer-signature")
                events.append(Trailer(tuple(self._trailer_headers), self._trailer_signature))
            events.append(End())
            self._state = _DONE
            return
        raw_name, colon, raw_value = line.partition(b":")
        if (
            not colon
            or self._trailer_signature is not None
            or _TOKEN_BYTES.fullmatch(raw_name) is None
            or _FIELD_VALUE_BYTES.fullmatch(raw_value) is None
        ):
            raise ChunkError("garbage in trailer")
        name = raw_name.decode("ascii")
        value = raw_value.strip(b" \t").decode("ascii")
        if name.lower() == TRAILER_SIGNATURE_HEADER:
            if not self._signed or _HEX_SIGNATURE.fullmatch(value) is None:
                raise ChunkError("garbage in trailer")
            self._trailer_signature = value
        else:
            self._trailer_headers.append((name, value))


def _canonical_trailer(headers: Sequence[tuple[str, str]]) -> str:
    block, _ = canonical_headers(headers)
    return block


def trailer_lines(headers: Sequence[tuple[str, str]]) -> bytes:
    """The trailer fields as sent: canonical order and form (lower-case names, sorted), CRLF-terminated.

    Sending exactly the canonical form keeps servers that hash the raw lines (minio) and servers that
    canonicalise first (AWS, Ceph RGW) in agreement.

    Raises:
        ValueError: a name is not an HTTP token or a value holds a control character or non-ASCII.
    """
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
            raise ValueError(f"not a valid trailer field: {name!r}")
        if name.lower() == TRAILER_SIGNATURE_HEADER:
            raise ValueError("x-amz-trailer-signature is added by the signer")
    return _canonical_trailer(headers).replace("\n", "\r\n").encode("ascii")


class ChunkSigner:
    """The signature chain of one aws-chunked body.

    ``seed_signature`` is the request's header signature. Each :meth:`sign` (and :meth:`frame`,
    :meth:`check`) advances the chain to the chunk it signed; the trailer signature, being terminal,
    does not advance it.
    """

    __slots__ = ("_chunk_head", "_mac", "_prefix", "_previous")

    def __init__(self, signing_key: bytes, amz_date: str, scope: str, seed_signature: str) -> None:
        # The keyed HMAC state is built once and copied per signature (saves the key schedule per chunk).
        self._mac = hmac.new(signing_key, digestmod=hashlib.sha256)
        self._prefix = f"{amz_date}\n{scope}\n"
        self._chunk_head = f"{CHUNK_ALGORITHM}\n{self._prefix}"
        self._previous = seed_signature

    @property
    def previous_signature(self) -> str:
        """The last signature of the chain (the seed before any chunk)."""
        return self._previous

    def chunk_string_to_sign(self, data: bytes) -> str:
        """The string to sign for ``data`` as the next chunk (does not advance the chain)."""
        return self._chunk_string(hashlib.sha256(data).hexdigest())

    def _chunk_string(self, data_sha256: str) -> str:
        return f"{self._chunk_head}{self._previous}\n{EMPTY_SHA256}\n{data_sha256}"

    def trailer_string_to_sign(self, headers: Sequence[tuple[str, str]]) -> str:
        """The string to sign for a trailer after the final chunk (does not advance the chain)."""
        digest = hashlib.sha256(_canonical_trailer(headers).encode("utf-8")).hexdigest()
        return f"{TRAILER_ALGORITHM}\n{self._prefix}{self._previous}\n{digest}"

    def _hmac(self, string_to_sign: str) -> str:
        mac = self._mac.copy()
        mac.update(string_to_sign.encode("utf-8"))
        return mac.hexdigest()

    def sign(self, data: bytes) -> str:
        """The next chunk's signature (``b""`` for the final chunk); advances the chain."""
        return self.sign_hashed(hashlib.sha256(data).hexdigest())

    def sign_hashed(self, data_sha256: str) -> str:
        """The next chunk's signature from the SHA-256 (64 lower-case hex) of its data, hashed by the caller
        (e.g. piece by piece as it arrived); advances the chain."""
        signature = self._hmac(self._chunk_string(data_sha256))
        self._previous = signature
        return signature

    def frame(self, data: bytes) -> bytes:
        """Sign and frame one chunk; ``frame(b"")`` is the final chunk of a body without trailer."""
        signature = self.sign(data)
        return b"".join((b"%x;chunk-signature=%s\r\n" % (len(data), signature.encode("ascii")), data, _CRLF))

    def trailer_signature(self, headers: Sequence[tuple[str, str]]) -> str:
        """The ``x-amz-trailer-signature`` for ``headers`` after the final chunk was signed."""
        return self._hmac(self.trailer_string_to_sign(headers))

    def final_with_trailer(self, headers: Sequence[tuple[str, str]]) -> bytes:
        """The final chunk, the trailer fields (see :func:`trailer_lines`), their signature, the blank line."""
        lines = trailer_lines(headers)
        final = self.sign(b"")
        signature = self.trailer_signature(headers)
        return b"".join(
            (
                b"0;chunk-signature=%s\r\n" % final.encode("ascii"),
                lines,
                b"%s:%s\r\n\r\n" % (TRAILER_SIGNATURE_HEADER.encode("ascii"), signature.encode("ascii")),
            )
        )

    def check(self, data: bytes, signature: str) -> None:
        """Verify ``signature`` as the next chunk's (constant-time compare); advances the chain.

        Raises:
            ChunkError: ``bad chunk signature``.
        """
        expected = self.sign(data)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8")):
            raise ChunkError("bad chunk signature")

    def check_trailer(self, headers: Sequence[tuple[str, str]], signature: str) -> None:
        """Verify a trailer signature after the final chunk was checked (constant-time compare).

        Raises:
            ChunkError: ``bad trailer signature``.
        """
        expected = self.trailer_signature(headers)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8")):
            raise ChunkError("bad trailer signature")
