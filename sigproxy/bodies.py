"""Request bodies on their way upstream, in constant memory whatever their size.

How a body goes, decided before a byte of it is read (so ``Expect: 100-continue`` and refusals cost the
client no upload):

* no body, or a known length up to ``max_buffered_body`` with no hash given: read whole, hashed.
* the client gave a hex SHA-256, ``UNSIGNED-PAYLOAD`` or ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``: streamed byte
  for byte, that value kept (with ``x-amz-trailer``, ``x-amz-decoded-content-length``, ``Content-Encoding``).
* the client sent ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`` (signed with a placeholder key): decoded
  chunk by chunk (the client's chunk signatures checked when the connection has a ``client_secret``),
  re-framed into ``chunk_size`` chunks and re-signed with the real key, trailer signature included.
* S3 (the signing names whose ``SigningPolicy.chunked`` is set), a known length over ``max_buffered_body``:
  ``UNSIGNED-PAYLOAD`` over TLS when the connection sets ``s3_payload = "unsigned"``, else aws-chunked with
  signed chunks, announced by ``x-amz-content-sha256`` and ``x-amz-decoded-content-length`` alone: the
  client's ``Content-Encoding`` (or its absence) is left as it is. ``aws-chunked`` is never added to it:
  S3-compatible servers differ in whether they strip it again (AWS S3 does; Ceph RGW 16 stores it as the
  object's encoding, so every later GET said ``Content-Encoding: aws-chunked`` of an object uploaded with
  none), and nothing needs it: the S3 API reference ("Transferring Payload in Multiple Chunks") requires
  ``x-amz-decoded-content-length`` with the length header, AWS's SDK for Java (``AWSS3V4Signer``) sends no
  ``Content-Encoding`` with signed chunks, and moto and RGW tell the framing by ``x-amz-content-sha256``.
* anything else (another service's large body, an unknown length): spooled to an unnamed temporary file
  while hashed, then streamed from it.

A body's content-coding is never decoded or re-encoded (issue 12: RFC 9110 8.4, a content-coding belongs to
the representation, so a proxy keeps it); only the aws-chunked framing sigproxy itself reads or writes is.

Owns: that decision, the async adapters around :mod:`sigproxy.streaming`, and spool files.
Must not: sign request headers, choose connections, or talk to the upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO

from .bodyplan import BodyPlan, Stream, bodiless_plan
from .chunkframing import SignedFramer, signed_encoded_length
from .config import ConnectionConfig, ProxyConfig
from .errors import BadRequest, BodyTimeout, BodyTooLarge, ClientAborted, SigproxyError
from .http1 import ClientRequest
from .inbound import parse_authorization
from .prepare import payload_mode
from .signing import EMPTY_SHA256, UNSIGNED_PAYLOAD, Signer
from .streaming import (
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    Chunk,
    ChunkDecoder,
    ChunkError,
    ChunkSigner,
    End,
    Trailer,
)

__all__ = ["clean_spool", "plan_body", "untouched_plan"]

# Spool files are written and read in pieces this big, each in a worker thread (disk I/O off the loop).
_SPOOL_IO = 1024 * 1024
# Base64 lengths of the checksums S3 puts in trailers: the trailer's size must be known up front.
_CHECKSUM_B64 = {"x-amz-checksum-crc32": 8, "x-amz-checksum-crc32c": 8, "x-amz-checksum-crc64nvme": 12,
                 "x-amz-checksum-sha1": 28, "x-amz-checksum-sha256": 44}


def _streamed(plan: BodyPlan, stream: Stream) -> BodyPlan:
    """``plan``, sending what ``stream`` yields; a failure of it is recorded as ``plan.error`` for the handler to
    answer after the upstream send breaks."""
    plan.stream = lambda signer: _guard(plan, stream(signer))
    return plan


async def _guard(plan: BodyPlan, source: AsyncIterator[bytes | memoryview]) -> AsyncIterator[bytes | memoryview]:
    """``source``'s pieces; why it failed, if it does, kept as ``plan.error`` (a malformed aws-chunked body
    is the client's 400) before the failure goes on."""
    try:
        async for piece in source:
            yield piece
    except ChunkError as exc:
        plan.error = BadRequest(f"malformed aws-chunked body: {exc}")
        raise
    except SigproxyError as exc:
        plan.error = exc
        raise


async def _client_pieces(request: ClientRequest, limit: int, silence: float) -> AsyncIterator[bytes]:
    """The client's body as it arrives (HTTP chunking already undone by the server), up to ``limit`` bytes; a
    silence of ``silence`` seconds (``body_timeout``) ends it with :class:`BodyTimeout`.

    The pieces are the buffers received, one at a time, never joined (joining would copy everything buffered
    whenever the client is ahead of the upstream)."""
    total = 0
    while True:
        try:
            async with asyncio.timeout(silence):
                piece = await request.body.next_piece()
        except TimeoutError:
            # Nothing more is read from this client: the body ends here (no lingering read of the rest) and
            # the connection closes once the 408 is out. The error fails whatever was being sent upstream.
            request.stop_reading()
            raise BodyTimeout(f"the client sent no body data for {silence:g} s (body_timeout)") from None
        except (ConnectionError, OSError) as exc:
            raise ClientAborted(f"the client's body broke off: {exc}") from exc
        if not piece:
            return
        total += len(piece)
        if total > limit:
            raise BodyTooLarge(f"request body is over max_body ({limit} bytes)")
        yield piece


def untouched_plan(request: ClientRequest, proxy: ProxyConfig) -> BodyPlan:
    """The body exactly as the client sent it (a presigned request forwarded as is)."""
    length = request.content_length
    if length is not None and length > proxy.max_body:
        raise BodyTooLarge(f"request body of {length} bytes is over max_body ({proxy.max_body} bytes)")
    return _streamed(BodyPlan("", length, "presigned"),
                     lambda _: _client_pieces(request, proxy.max_body, proxy.body_timeout))


def _trailer_length(names: Sequence[str]) -> int | None:
    """Bytes of the trailer lines for these trailer header names, or ``None`` if unknowable."""
    total = 0
    for name in names:
        b64 = _CHECKSUM_B64.get(name)
        if b64 is None:
            return None
        total += len(name) + 1 + b64 + 2
    return total


async def plan_body(request: ClientRequest, conn: ConnectionConfig, proxy: ProxyConfig, *, aws_chunked: bool,
                    upstream_tls: bool, spool_dir: Path, chunk_signing: bool = True) -> BodyPlan:
    """Decide how the body goes and prepare what must be read first (small bodies, spools). ``aws_chunked``:
    the service takes aws-chunked uploads (``SigningPolicy.chunked`` of its signing name). ``chunk_signing=False``
    (SigV4A, whose chunk signing sigproxy does not do): a large body is spooled and hashed whole instead of sent
    as signed chunks, as botocore's SigV4A signer does (``CrtS3SigV4AsymAuth``: the body's hash or
    ``UNSIGNED-PAYLOAD``, never signed chunks).

    Raises :class:`BodyTooLarge`, :class:`BadRequest`, :class:`ClientAborted`.
    """
    bodiless = bodiless_plan(request)
    if bodiless is not None:
        return bodiless
    claimed = request.headers.get("X-Amz-Content-SHA256", "").strip()
    mode = payload_mode(claimed)
    length = request.content_length
    if length is not None and length > proxy.max_body:
        raise BodyTooLarge(f"request body of {length} bytes is over max_body ({proxy.max_body} bytes)")

    if mode == "keep":
        return _streamed(BodyPlan(claimed, length, "passthrough"),
                         lambda _: _client_pieces(request, proxy.max_body, proxy.body_timeout))
    if mode == "resign":
        return _resign_plan(request, conn, proxy, claimed, length)
    if mode == "other":
        raise BadRequest(f"x-amz-content-sha256 {claimed[:80]!r} is neither a SHA-256 nor a payload mode")

    if length is not None and length <= proxy.max_buffered_body:
        data = b"".join([piece async for piece in _client_pieces(request, proxy.max_body, proxy.body_timeout)])
        return BodyPlan(hashlib.sha256(data).hexdigest(), len(data), "buffered", data=data)
    if aws_chunked and length is not None:
        if conn.s3_payload == "unsigned" and upstream_tls:
            return _streamed(BodyPlan(UNSIGNED_PAYLOAD, length, "unsigned"),
                             lambda _: _client_pieces(request, proxy.max_body, proxy.body_timeout))
        if chunk_signing:
            return _signed_chunks_plan(request, proxy, length)
    return await _spool_plan(request, proxy, spool_dir)


def _signed_chunks_plan(request: ClientRequest, proxy: ProxyConfig, length: int) -> BodyPlan:
    chunk_size = proxy.chunk_size

    async def stream(signer: ChunkSigner | None) -> AsyncIterator[bytes | memoryview]:
        assert signer is not None  # needs_chunk_signer: the handler passes one
        framer = SignedFramer(signer, chunk_size)
        async for piece in _client_pieces(request, proxy.max_body, proxy.body_timeout):
            for frame in framer.feed(piece):
                yield frame
        for frame in framer.flush():
            yield frame
        if framer.sent != length:
            raise ClientAborted(f"the client sent {framer.sent} of the {length} bytes it announced")
        yield signer.frame(b"")

    return _streamed(BodyPlan(STREAMING_SIGNED, signed_encoded_length(length, chunk_size), "signed-chunks",
                              headers=[("X-Amz-Decoded-Content-Length", str(length))], needs_chunk_signer=True),
                     stream)


def _resign_plan(request: ClientRequest, conn: ConnectionConfig, proxy: ProxyConfig, claimed: str,
                 length: int | None) -> BodyPlan:
    headers = request.headers
    trailer = claimed == STREAMING_SIGNED_TRAILER
    try:
        decoded = int(headers.get("X-Amz-Decoded-Content-Length", ""))
    except ValueError:
        raise BadRequest(f"{claimed} needs an x-amz-decoded-content-length header") from None
    if decoded < 0 or decoded > proxy.max_body:
        raise BodyTooLarge(f"decoded body of {decoded} bytes is over max_body ({proxy.max_body} bytes)")
    trailer_names = [n.strip().lower() for n in headers.get("X-Amz-Trailer", "").split(",") if n.strip()]
    trailer_len = 0
    if trailer:
        known = _trailer_length(trailer_names)
        if known is None or not trailer_names:
            raise BadRequest(f"{claimed} needs an x-amz-trailer naming S3 checksum headers")
        trailer_len = known
    chunk_size = proxy.chunk_size
    verify = _client_chain(request, conn) if conn.client_secret is not None else None
    max_wire = length if length is not None else signed_encoded_length(decoded, 16 * 2**20) + 2 * 2**20

    async def stream(signer: ChunkSigner | None) -> AsyncIterator[bytes | memoryview]:
        assert signer is not None  # needs_chunk_signer: the handler passes one
        decoder = ChunkDecoder(signed=True, trailer=trailer)
        framer = SignedFramer(signer, chunk_size)
        received = 0
        async for piece in _client_pieces(request, max_wire, proxy.body_timeout):
            for event in decoder.feed(piece):
                if isinstance(event, Chunk):
                    if verify is not None:
                        verify.check(event.data, event.signature or "")
                    received += len(event.data)
                    if received > decoded:  # refused before a byte past it goes upstream: the client's fault
                        raise ChunkError(f"the chunks hold over the {decoded} bytes x-amz-decoded-content-length "
                                         "says")
                    for frame in framer.feed(event.data):
                        yield frame
                elif isinstance(event, Trailer) or (isinstance(event, End) and not trailer):
                    _content_ended(request)
                    for frame in framer.flush():
                        yield frame
                    if framer.sent != decoded:
                        raise ChunkError(f"decoded {framer.sent} bytes, x-amz-decoded-content-length says {decoded}")
                    if verify is not None:
                        verify.check(b"", decoder.final_signature or "")
                    if isinstance(event, Trailer):
                        names = [name.lower() for name, _ in event.headers]
                        if names != trailer_names:
                            raise ChunkError(f"trailer has {names}, x-amz-trailer announced {trailer_names}")
                        if verify is not None:
                            verify.check_trailer(event.headers, event.signature or "")
                        yield signer.final_with_trailer(event.headers)
                    else:
                        yield signer.frame(b"")
        decoder.close()

    return _streamed(BodyPlan(claimed, signed_encoded_length(decoded, chunk_size, trailer_len if trailer else None),
                              "resigned", headers=[("X-Amz-Decoded-Content-Length", str(decoded))],
                              needs_chunk_signer=True),
                     stream)


def _content_ended(request: ClientRequest) -> None:
    """The aws-chunked body is decoded to its end: the upstream may answer once its last frame is sent, and what
    the client still sends of the request is its HTTP framing (a chunked body's last chunk and trailer section),
    which the client's connection may then read and drop, staying open (:mod:`sigproxy.intake.h1rest`)."""
    if request.protocol is not None:
        request.protocol.content_ended(request)


def _client_chain(request: ClientRequest, conn: ConnectionConfig) -> ChunkSigner:
    """The client's own chunk-signature chain, rebuilt from its Authorization and the connection's
    client_secret, to verify each incoming chunk."""
    auth = parse_authorization(request.headers.get("Authorization", ""))
    date = request.headers.get("X-Amz-Date", "")
    if not date or conn.client_secret is None:
        raise BadRequest("a chunk-signed upload needs its SigV4 Authorization and X-Amz-Date to be verified")
    key = Signer().signing_key(conn.client_secret.reveal(), auth.date, auth.region, auth.service)
    scope = f"{auth.date}/{auth.region}/{auth.service}/aws4_request"
    return ChunkSigner(key, date, scope, auth.signature)


async def _spool_plan(request: ClientRequest, proxy: ProxyConfig, spool_dir: Path) -> BodyPlan:
    """Read the body into an unnamed temporary file (O_TMPFILE where the kernel has it) while hashing it;
    stream it from there. Closing the file frees it; nothing is left on disk even after a crash."""
    await asyncio.to_thread(spool_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
    file: IO[bytes] = await asyncio.to_thread(tempfile.TemporaryFile, dir=spool_dir)
    plan = BodyPlan(EMPTY_SHA256, 0, "spooled")
    plan.cleanup.append(file.close)
    try:
        digest = hashlib.sha256()
        size = 0
        pending = bytearray()
        async for piece in _client_pieces(request, proxy.max_body, proxy.body_timeout):
            digest.update(piece)
            size += len(piece)
            pending += piece
            if len(pending) >= _SPOOL_IO:
                await asyncio.to_thread(file.write, bytes(pending))
                pending.clear()
        if pending:
            await asyncio.to_thread(file.write, bytes(pending))
        await asyncio.to_thread(file.flush)
    except BaseException:
        plan.close()
        raise
    plan.payload_hash = digest.hexdigest()
    plan.length = size

    async def stream(_: ChunkSigner | None) -> AsyncIterator[bytes]:
        # Its ``size`` bytes and no read after them: the stream ends as its last byte goes (the upstream may
        # answer at once, and h1conn hands a connection back only once its body is sent).
        left = size
        await asyncio.to_thread(file.seek, 0)
        while left > 0:
            piece = await asyncio.to_thread(file.read, min(left, _SPOOL_IO))
            if not piece:
                raise OSError(f"the spool file ended {left} bytes short of the {size} spooled")
            left -= len(piece)
            yield piece

    return _streamed(plan, stream)


def clean_spool(spool_dir: Path) -> int:
    """Remove spool files a crashed process left behind (spool files are normally unnamed). Returns the
    number removed."""
    removed = 0
    if spool_dir.is_dir():
        for path in spool_dir.iterdir():
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed

