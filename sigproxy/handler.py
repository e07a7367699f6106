"""One request's lifecycle, whatever intake mode delivered it:
select connection -> redirect (``dial``/``sign_host``, :mod:`sigproxy.dialing`) -> check host -> service/region
-> credentials -> body -> sign -> forward -> stream back.

Errors from the proxy itself become responses in exactly one place (:func:`error_response`): in the error format
of the AWS protocol the request speaks (:mod:`sigproxy.awserrors`), else sigproxy's JSON; once response bytes
have gone to the client, a failure aborts the connection instead (never a second response). A bug (any other
exception) is answered there too, ``500 internal_error``; whatever ends a request, it gets exactly one access line.
Must not: know which listener mode produced the request beyond the :class:`Exchange` it is given.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from multidict import CIMultiDict

from .accesslog import log_access
from .authlimit import AuthFailures
from .awserrors import protocol_for, render, signing_name_for
from .bodies import plan_body, untouched_plan
from .bodyplan import BodyPlan, bodiless_plan
from .clientcert import Subject
from .config import Config, ConnectionConfig, ReverseListener
from .credentials import Providers
from .dialing import Dial
from .errors import (
    BadProxyToken,
    BadRequest,
    BodyTooLarge,
    ClientAborted,
    ClientSignatureInvalid,
    SigproxyError,
    TooManyAuthFailures,
    UnsupportedRequest,
)
from .fieldnames import (
    AUTHORIZATION,
    EXPECT,
    PROXY_AUTHORIZATION,
    UPGRADE,
    X_AMZ_CONTENT_SHA256,
    X_SIGPROXY_CONNECTION,
    X_SIGPROXY_REGION,
    X_SIGPROXY_SERVICE,
    X_SIGPROXY_USER,
)
from .forwarding import Upstream
from .headerrules import end_to_end
from .http1 import ClientRequest, Response, StreamResponse, http_date
from .inbound import ReceivedRequest, verify_header_auth, verify_presigned
from .jsonlines import RequestIds, access_millis, audit_path
from .metrics import Metrics
from .prepare import sign_handshake, sign_request, untouched_request
from .records import Record
from .routing import (
    Target,
    check_host,
    check_policy,
    check_shape,
    parse_client_key_id,
    parse_client_scope,
    presigned_by_client,
    redirect_target,
    resolve_service_region,
    select_connection,
    sigv4a_region_set,
)
from .signing import EMPTY_SHA256, Credentials, Signer, policy_for
from .streaming import ChunkSigner
from .users import parse_user
from .websocket import upgrade_request_headers, websocket_upgrade
from .wsrelay import RelayLimits, switch_and_relay

__all__ = ["AwsDialect", "Exchange", "Handler", "RequestIds", "aws_dialect", "error_bytes", "error_response"]

logger: Final = logging.getLogger(__name__)
access_logger: Final = logging.getLogger("sigproxy.access")

# Responses with a known length up to one chunk are read whole and sent in one write (a streaming copy
# would cost more syscalls and awaits than the bytes are worth); larger ones stream.
_SMALL_RESPONSE: Final = 64 * 1024
# The signing clock: an aware UTC now, without a Python frame of its own (it runs once per request).
_utc_now: Final = functools.partial(datetime.now, UTC)


class Exchange(Record):
    """What intake hands over: the ``target`` as the client meant it, and where the request came from: the
    reverse ``listener`` that received it (``None`` for the forward proxy), the ``Proxy-Authorization`` of the
    CONNECT that opened the tunnel it came through (``tunnel_authorization``), the subject of the client's
    certificate on a listener with ``client_ca_file`` (``client_cert``)."""

    __match_args__ = ("target", "listener", "tunnel_authorization", "client_cert")

    def __init__(self, target: Target, listener: ReverseListener | None = None, tunnel_authorization: str | None = None,
                 client_cert: Subject | None = None) -> None:
        self.target: Final = target
        self.listener: Final = listener
        self.tunnel_authorization: Final = tunnel_authorization
        self.client_cert: Final = client_cert

    def with_target(self, target: Target) -> Exchange:
        """This exchange with ``target`` instead (a request signed for another host, or its query without the
        client's presign parameters)."""
        return Exchange(target, self.listener, self.tunnel_authorization, self.client_cert)


@dataclass(frozen=True, slots=True)
class AwsDialect:
    """How to answer an error to a request that speaks an AWS protocol (from :func:`aws_dialect`)."""

    protocol: str
    """``rest-xml``, ``query``, ``ec2``, ``json``, ``rest-json`` or ``smithy-rpc-v2-cbor``."""
    signing_name: str | None


def aws_dialect(request: ClientRequest, target_host: str, query: str, service: str | None) -> AwsDialect | None:
    """The AWS protocol ``request`` speaks (``service``: the signing name, once routing resolved it), or ``None``
    when it can't be told: see :func:`sigproxy.awserrors.protocol_for`."""
    headers = request.headers
    signing_name = signing_name_for(service, headers.get(AUTHORIZATION), query, target_host)
    protocol = protocol_for(headers, request.method, query, signing_name)
    return None if protocol is None else AwsDialect(protocol, signing_name)


def _error_parts(exc: SigproxyError, request_id: str,
                 dialect: AwsDialect | None) -> tuple[list[tuple[str, str]], bytes]:
    headers = [("Date", http_date()), ("X-Sigproxy-Error", exc.code), ("X-Sigproxy-Request-Id", request_id)]
    if exc.status == 407:
        headers.append(("Proxy-Authenticate", 'Basic realm="sigproxy"'))
    if isinstance(exc, TooManyAuthFailures):
        headers.append(("Retry-After", str(exc.retry_after)))
    if dialect is None:
        body = {"error": {"code": exc.code, "message": exc.message, "request_id": request_id}}
        return [("Content-Type", "application/json"), *headers], json.dumps(body).encode()
    content_type, aws_headers, aws_body = render(dialect.protocol, code=exc.aws_code, message=exc.message,
                                                 request_id=request_id, status=exc.status,
                                                 signing_name=dialect.signing_name)
    return [("Content-Type", content_type), *headers, *aws_headers], aws_body


def error_response(exc: SigproxyError, request_id: str, *, close: bool = False,
                   dialect: AwsDialect | None = None) -> Response:
    """The one place a proxy error becomes an HTTP response (``close``: the connection closes after it).

    With a ``dialect`` (:func:`aws_dialect`) the body is that AWS protocol's error with ``exc.aws_code``, so SDKs
    show it; without, sigproxy's JSON ``{"error": {"code", "message", "request_id"}}``. Both carry
    ``X-Sigproxy-Error: <exc.code>`` and ``X-Sigproxy-Request-Id``.
    """
    headers, body = _error_parts(exc, request_id, dialect)
    return Response(exc.status, None, headers, body, close=close)


def error_bytes(exc: SigproxyError, request_id: str) -> bytes:
    """The same response as raw HTTP/1.1 bytes, closing the connection (for intake before any HTTP server)."""
    return error_response(exc, request_id, close=True).encode(None, keep_alive=False)


def _received(request: ClientRequest, target: Target) -> ReceivedRequest:
    """The request as the client sent it to us (origin-form path and query, headers as received)."""
    raw = request.raw_path
    if raw.startswith("/"):
        path, _, query = raw.partition("?")
    else:  # absolute form: the target holds the raw path and query as sent
        path, query = target.path, target.query
    return ReceivedRequest(request.method, path, query, tuple(request.headers.items()))


def _once(headers: CIMultiDict[str], name: str) -> str | None:
    """A header that names a connection, or ``None``; given more than once it is refused (first-wins would
    let a second, mistyped name pass unnoticed). Raises :class:`BadRequest`."""
    if name not in headers:  # most requests name none: a lookup, not a list (issue 15)
        return None
    values = headers.getall(name)
    if len(values) > 1:
        raise BadRequest(f"{name} is given {len(values)} times; send it once")
    return values[0]


class Handler:
    """Signs and forwards requests; shared by every listener. Holds no per-request state."""

    __slots__ = ("_clock", "_config", "_failures", "_ids", "_metrics", "_providers", "_signer", "_spool_dir",
                 "_upstream")

    def __init__(self, config: Config, providers: Providers, upstream: Upstream, signer: Signer, *,
                 metrics: Metrics, ids: RequestIds, failures: AuthFailures | None = None,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self._config = config
        self._spool_dir = config.proxy.state_dir / "spool"
        self._providers = providers
        self._upstream = upstream
        self._signer = signer
        self._metrics = metrics
        self._ids = ids
        self._clock = clock
        self._failures = failures or AuthFailures(config.proxy.auth_failures, config.proxy.auth_failure_window)

    @property
    def config(self) -> Config:
        return self._config

    @property
    def providers(self) -> Providers:
        return self._providers

    @property
    def failures(self) -> AuthFailures:
        return self._failures

    def _next_id(self) -> str:
        return self._ids.next()

    def _finish(self, info: dict[str, object], started: float) -> None:
        """The access log line and the request's metrics. A WebSocket's line has the session's length (``ms``)
        and its handshake's (``handshake_ms``); the latency metric gets the handshake's."""
        elapsed = time.monotonic() - started
        info["ms"] = access_millis(elapsed)
        switched = info.pop("switched_at", None)
        if isinstance(switched, float):
            elapsed = switched - started
            info["handshake_ms"] = access_millis(elapsed)
        log_access(access_logger, info)
        up, down = info.get("bytes_up"), info.get("bytes_down")
        self._metrics.record(str(info.get("connection", "-")), str(info.get("service", "-")),
                             str(info.get("status")), elapsed, bytes_up=up if isinstance(up, int) else 0,
                             bytes_down=down if isinstance(down, int) else 0,
                             error=str(info["error"]) if "error" in info else None)

    async def __call__(self, request: ClientRequest, exchange: Exchange) -> Response | StreamResponse:
        request_id = self._next_id()
        started = time.monotonic()
        remote = request.remote
        info: dict[str, object] = {"request_id": request_id, "client": remote, "method": request.method,
                                   "host": exchange.target.host, "path": audit_path(exchange.target)}
        try:
            self._failures.check(remote)
            try:
                response = await self._handle(request, exchange, info)
            except (BadProxyToken, ClientSignatureInvalid):
                self._failures.record(remote)
                raise
        except asyncio.CancelledError:
            # Only the end of a SIGTERM drain cancels a request (ClientServer.shutdown): it is cut, and its line
            # is owed all the same. A relayed WebSocket has said why it ended (``ws_end: shutdown``).
            if "ws_end" not in info:
                info["status"], info["error"] = "aborted", "shutdown"
            self._finish(info, started)
            raise
        except Exception as exc:  # a refusal, the client gone, or a bug: each gets its line (_failed)
            return self._failed(request, exc, info, started, host=exchange.target.host, query=exchange.target.query)
        info.setdefault("status", response.status)
        self._finish(info, started)
        return response

    def reject(self, request: ClientRequest, exc: Exception) -> Response:
        """Answer a request that intake could not even turn into an :class:`Exchange`: ``exc`` is a
        :class:`SigproxyError`, or a bug in intake (answered as :meth:`_failed` answers one)."""
        info: dict[str, object] = {"request_id": self._next_id(), "client": request.remote, "method": request.method,
                                   "host": request.host}
        return self._failed(request, exc, info, time.monotonic(), host=request.host or "",
                            query=request.raw_path.partition("?")[2])

    def _failed(self, request: ClientRequest, exc: Exception, info: dict[str, object], started: float, *, host: str,
                query: str) -> Response:
        """A failed request's access line and error answer (:func:`error_response`). ``exc``: a :class:`SigproxyError`
        (its status and code), a bare :class:`ConnectionError` (the client went away), or a bug: anything else is
        ``500 internal_error``, its traceback logged here, once, and the connection closed after the answer. Once
        part of an answer has gone out, none can follow: the connection is cut and the line says ``aborted``."""
        request_id = str(info["request_id"])
        error = exc if isinstance(exc, SigproxyError) else None
        if error is None and not isinstance(exc, ConnectionError):
            logger.error("request %s: unexpected error answering %s %s", request_id, request.method, host,
                         exc_info=exc)
            error = SigproxyError("sigproxy failed on this request (see its log)")
        protocol = request.protocol
        if error is None or (protocol is not None and protocol.answer_begun):
            info["status"], info["error"] = "aborted", error.code if error is not None else "client_disconnected"
            self._finish(info, started)
            request.abort()
            return error_response(error or ClientAborted("the client went away"), request_id, close=True)
        info["error"], info["status"] = error.code, error.status
        self._finish(info, started)
        service = info.get("service")
        dialect = aws_dialect(request, host, query, service if isinstance(service, str) else None)
        return error_response(error, request_id, close=type(error) is SigproxyError, dialect=dialect)

    async def _handle(self, request: ClientRequest, exchange: Exchange,
                      info: dict[str, object]) -> Response | StreamResponse:
        config = self._config
        target = exchange.target
        headers = request.headers
        authorization = _once(headers, AUTHORIZATION)
        client_scope = parse_client_scope(authorization, target.query)
        selection = select_connection(
            config,
            target,
            connection_header=_once(headers, X_SIGPROXY_CONNECTION),
            proxy_authorization=_once(headers, PROXY_AUTHORIZATION) or exchange.tunnel_authorization,
            client_scope=client_scope,
            listener=exchange.listener,
            client_key_id=parse_client_key_id(authorization, target.query),
            client_cert=exchange.client_cert,
        )
        conn = selection.connection
        info["connection"], info["selected_by"] = conn.name, selection.how
        listener, dial = exchange.listener, None
        if (listener.redirect is not None) if listener is not None else config.redirecting_routes:
            # dial / sign_host / tls_server_name: from here on the target is the host signed and sent.
            target, dial = redirect_target(config, target, listener)
            if dial is not None:
                if target.host != exchange.target.host:
                    info["sign_host"] = target.authority
                exchange = exchange.with_target(target)
                info["dial"] = str(dial)
        check_host(conn, target)
        region_set = sigv4a_region_set(conn, target, headers)
        service, region = resolve_service_region(
            conn,
            target,
            service_header=headers.get(X_SIGPROXY_SERVICE),
            region_header=region_set or headers.get(X_SIGPROXY_REGION),  # SigV4A: the region set is the region
            client_scope=client_scope,
        )
        info["service"], info["region"] = service, region
        websocket = UPGRADE in headers and websocket_upgrade(request.method, request.version, headers,
                                                               body=request.body_exists)
        check_shape(target, headers, service)
        check_policy(conn, request.method, service, region, headers.items(), websocket=websocket)
        presigned = presigned_by_client(target.query)
        received: ReceivedRequest | None = None
        if conn.client_secret is not None:
            received = _received(request, target)
            if presigned:
                query = verify_presigned(received, secret=conn.client_secret.reveal(), expected_key_id=conn.name,
                                         now=self._clock(), signer=self._signer)
                target = Target(target.scheme, target.host, target.port, target.path, query)
                exchange = exchange.with_target(target)
                presigned = False
                received = None
            elif AUTHORIZATION not in headers:
                raise ClientSignatureInvalid(
                    f"connection {conn.name!r} takes only requests signed with its client secret: set "
                    f"AWS_ACCESS_KEY_ID={conn.name} and AWS_SECRET_ACCESS_KEY to that secret in the client"
                )
            elif headers.get(X_AMZ_CONTENT_SHA256):
                self._verify_client(conn, received, [headers[X_AMZ_CONTENT_SHA256]])
                received = None
        if presigned and conn.presigned != "passthrough":
            raise UnsupportedRequest(
                "the request is already presigned; sigproxy does not re-sign someone else's presigned URL "
                f"(set presigned = \"passthrough\" on connection {conn.name!r} to forward it untouched)"
            )
        user = parse_user(headers.getall(X_SIGPROXY_USER, []), conn.name) if conn.user_header else None
        if user is not None:
            info["user"] = user
        providers = self._providers
        ready = providers.ready(conn.name, user=user)  # a hit: one call, no coroutine
        if ready is not None:
            creds, identity = ready
            info["cred_cache"] = "hit"
        else:
            creds, cache_hit = await providers.get(conn.name, user=user)
            info["cred_cache"] = "hit" if cache_hit else "miss"
            identity = providers.identity(conn.name, user=user)
        if identity.role_arn is not None:
            info["role_arn"], info["session_name"] = identity.role_arn, identity.session_name
            if identity.source_identity is not None:
                info["source_identity"] = identity.source_identity
        else:
            info["key_id"] = creds.access_key_id
        if websocket:
            if received is not None:  # the client signed its handshake, which has no body
                self._verify_client(conn, received, [EMPTY_SHA256])
            info["body"] = "websocket"
            if presigned:  # presigned = "passthrough": forwarded as the client sent it
                url, untouched = untouched_request(method=request.method, target=target, headers=headers.items(),
                                                   body_length=None, upstream_scheme=conn.upstream_scheme)
                out = [*untouched, *upgrade_request_headers(headers)]
            else:
                info["service"], signed = sign_handshake(self._signer, creds, target=target, headers=headers.items(),
                                                         service=service, region=region, now=self._clock(),
                                                         upstream_scheme=conn.upstream_scheme, region_set=region_set)
                url, out = signed.url, [*signed.headers, *upgrade_request_headers(headers)]
            return await self._exchange(request, info, BodyPlan(EMPTY_SHA256, None, "websocket"), url=url,
                                        headers=out, chunk_signer=None, conn=conn, dial=dial, upgrade=True)
        scheme = conn.upstream_scheme or target.scheme
        if headers.get(EXPECT, "").lower() == "100-continue":
            if (request.content_length or 0) > config.proxy.max_body:
                raise BodyTooLarge(f"request body of {request.content_length} bytes is over max_body "
                                   f"({config.proxy.max_body} bytes)")
            # Only now: the connection, the host and the credentials are settled.
            request.write_continue()
        if presigned:
            plan = untouched_plan(request, config.proxy)
        else:
            plan = bodiless_plan(request) or await plan_body(
                request, conn, config.proxy, aws_chunked=policy_for(service).chunked, upstream_tls=scheme == "https",
                spool_dir=self._spool_dir, chunk_signing=region_set is None)
        info["body"] = plan.mode
        try:
            if region_set is not None and plan.needs_chunk_signer:
                raise UnsupportedRequest(
                    "this request is signed with SigV4A (multi-region), and sigproxy does not sign aws-chunked "
                    "chunks with SigV4A: send the body with its SHA-256 or UNSIGNED-PAYLOAD in x-amz-content-sha256"
                )
            if received is not None:
                # The client signed its body's hash without sending it: known once the body is read.
                if plan.mode not in ("empty", "buffered", "spooled"):
                    raise ClientSignatureInvalid("send x-amz-content-sha256 with a signed streaming body")
                self._verify_client(conn, received, [plan.payload_hash])
            return await self._forward(request, exchange, info, conn=conn, plan=plan, creds=creds,
                                       service=service, region=region, region_set=region_set, dial=dial)
        finally:
            plan.close()

    def _verify_client(self, conn: ConnectionConfig, received: ReceivedRequest, payload_hashes: list[str]) -> None:
        assert conn.client_secret is not None
        verify_header_auth(received, secret=conn.client_secret.reveal(), expected_key_id=conn.name,
                           payload_hashes=payload_hashes, now=self._clock(), signer=self._signer)

    def _forward(self, request: ClientRequest, exchange: Exchange, info: dict[str, object], *,
                 conn: ConnectionConfig, plan: BodyPlan, creds: Credentials, service: str,
                 region: str, region_set: str | None, dial: Dial | None) -> Awaitable[Response | StreamResponse]:
        """Sign, then the exchange to await (not a coroutine of its own: one frame less on every resume);
        ``region_set``: sign with SigV4A for it (:mod:`sigproxy.sigv4a`); ``dial``: where to connect, when not
        to the target (:mod:`sigproxy.dialing`)."""
        if plan.mode == "presigned":
            url, untouched = untouched_request(method=request.method, target=exchange.target,
                                               headers=request.headers.items(), body_length=plan.length,
                                               upstream_scheme=conn.upstream_scheme)
            return self._exchange(request, info, plan, url=url, headers=untouched, chunk_signer=None, conn=conn,
                                  dial=dial)
        if plan.headers:  # the plan's replace the client's of the same name
            replaced = {name.lower() for name, _ in plan.headers}
            headers = [(k, v) for k, v in request.headers.items() if k.lower() not in replaced] + plan.headers
        else:
            headers = list(request.headers.items())
        out = sign_request(
            self._signer,
            creds,
            method=request.method,
            target=exchange.target,
            headers=headers,
            payload_hash=plan.payload_hash,
            body_length=plan.length,
            service=service,
            region=region,
            now=self._clock(),
            upstream_scheme=conn.upstream_scheme,
            region_set=region_set,
        )
        chunk_signer = None
        if plan.needs_chunk_signer:
            sig = out.signature
            key = self._signer.signing_key(creds.secret_access_key, sig.amz_date[:8], region, service)
            chunk_signer = ChunkSigner(key, sig.amz_date, sig.credential_scope, sig.signature)
        return self._exchange(request, info, plan, url=out.url, headers=out.headers, chunk_signer=chunk_signer,
                              conn=conn, dial=dial)

    async def _exchange(self, request: ClientRequest, info: dict[str, object], plan: BodyPlan, *, url: str,
                        headers: Sequence[tuple[str, str]], chunk_signer: ChunkSigner | None,
                        conn: ConnectionConfig, dial: Dial | None, upgrade: bool = False) -> Response | StreamResponse:
        """Send the request upstream and stream the response back (``upgrade``: a WebSocket handshake, whose
        ``101`` starts the relay; any other answer to it goes back as for any request, and the connection
        closes after it)."""
        try:
            upstream = await self._upstream.send(request.method, url, headers, plan.body(chunk_signer),
                                                 verify_tls=conn.verify_tls, explicit_hosts=conn.hosts,
                                                 private_networks=conn.private_networks, connection=conn.name,
                                                 dial=dial, upgrade=upgrade, interim=request.forward_interim)
        except SigproxyError as exc:
            if plan.error is not None:
                raise plan.error from exc
            raise
        info["bytes_up"] = plan.length
        async with upstream:
            if upstream.status == 101:  # only ever to an upgrade: h1conn refuses a 101 nobody asked for
                proxy = self._config.proxy
                return await switch_and_relay(request, upstream, info, RelayLimits(
                    proxy.websocket_idle_timeout, proxy.websocket_max_message))
            headers_out = end_to_end(upstream.headers, upstream.connection_options)
            length = upstream.content_length
            if length is not None and length <= _SMALL_RESPONSE:
                # One chunk's worth with a known length: read it whole and answer in one write.
                data = await upstream.read()
                info["bytes_down"] = len(data)
                return Response(upstream.status, upstream.reason, headers_out, data)
            response = StreamResponse(upstream.status, upstream.reason, headers_out)
            await response.prepare(request)
            sent = 0
            try:
                async for chunk in upstream.iter_any():
                    sent += len(chunk)
                    await response.write(chunk)
                info["bytes_down"] = sent
                await response.write_eof()
            except (SigproxyError, ConnectionError) as exc:
                _abort(request, info, exc, sent=sent, expected=length)
        return response


def _abort(request: ClientRequest, info: dict[str, object], exc: SigproxyError | ConnectionError, *, sent: int,
           expected: int | None) -> None:
    """A response body that broke off after its head went out: the upstream ended early or failed
    (:class:`SigproxyError`), or the client went away (:class:`ConnectionError`). There can be no second
    response, so the client connection is closed without completing the body (no final chunk), and the
    access line says ``aborted`` with the byte counts. One log line, no traceback."""
    of = f" of {expected}" if expected is not None else ""
    if isinstance(exc, SigproxyError):
        info["error"] = exc.code
        logger.warning("request %s: response to %s %s aborted after %d%s bytes: %s", info.get("request_id"),
                       info.get("method"), info.get("host"), sent, of, exc.message)
    else:
        info["error"] = "client_disconnected"
        logger.info("request %s: client %s went away after %d%s bytes of the response to %s %s",
                    info.get("request_id"), info.get("client"), sent, of, info.get("method"), info.get("host"))
    info["status"], info["bytes_down"] = "aborted", sent
    if expected is not None:
        info["bytes_expected"] = expected
    request.abort()
