"""A local WebSocket server that checks the upgrade request's SigV4 signature with botocore's own signer, then
echoes: the far end for sigproxy's WebSocket support (it signs the upgrade ``GET`` and relays frames), a stand-in
for AWS IoT's MQTT-over-WebSocket endpoint, API Gateway WebSocket APIs and the like.

The handshake (websockets' ``process_request`` hook) is checked as :mod:`tests.servers.sigv4_verifier` checks a
request: from what arrived it rebuilds the request botocore would have signed -- ``GET``, the raw path and query as
received, the headers named in the signed headers list (values as received) -- computes the signature for the scope
and date the request claims, and compares (:func:`hmac.compare_digest`). Two forms:

- header: ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`` and ``X-Amz-Date``,
  recomputed with :class:`botocore.auth.SigV4Auth` (:class:`~botocore.auth.S3SigV4Auth` for the signing names
  botocore signs with S3's rules); the payload hash is ``x-amz-content-sha256`` when sent, else the empty body's.
  With a session token it must be sent in ``X-Amz-Security-Token`` and be signed (every service, this form).
- query, a presigned URL (``X-Amz-Algorithm``, ``-Credential``, ``-Date``, ``-Expires``, ``-SignedHeaders``,
  ``-Signature``): the canonical request of :class:`botocore.auth.SigV4QueryAuth` (:class:`~botocore.auth.
  S3SigV4QueryAuth`: ``UNSIGNED-PAYLOAD``) over the received query less ``X-Amz-Signature``. A session token is a
  query parameter signed like the others, except for the services in ``token_after_signing``: AWS IoT's
  ``iotdevicegateway`` wants ``X-Amz-Security-Token`` appended *after* signing, outside the canonical query
  (aws-c-mqtt's ``omit_session_token``; AWS IoT's "Signing a WebSocket connection"). For those it must be in the
  query and equal the expected token, and is left out when recomputing; a signature that covers it is refused.

Both forms: the key id must be the verifier's, ``host`` signed, ``X-Amz-Date`` within 5 minutes of now (and a
presigned URL not expired); a token sent when the verifier expects none is refused too. A refused handshake gets
403 with JSON ``{"error": reason}`` and no upgrade. Every upgrade request is appended to ``WsVerifier.handshakes``
as ``{"ok", "reason", "form", "service", "region", "signed_headers", "path", "headers"}``: ``path`` raw as received,
``headers`` with lower-case names (repeated ones joined with ", "), ``ok`` the signature's verdict (websockets itself
may still refuse a malformed upgrade after it).

After the upgrade it echoes: text as text, binary as binary. Two text commands: ``close:CODE:REASON`` makes the
server close with that code and reason, ``send:N`` makes it send a binary message of N bytes (``bytes(range(256))``
repeated). When a connection ends it is appended to ``WsVerifier.sessions`` as ``{"path", "messages", "bytes",
"close_code", "close_reason", "clean"}``: the messages and payload bytes received, the close code and reason the
*client* sent, and ``clean`` -- whether the client's close frame arrived (False when its TCP connection just went
away, and when the server failed the connection, e.g. 1009 for a message over ``max_size``: websockets reads nothing
after failing one, not even the client's answering close frame).

The server runs in a thread with its own event loop, on a loopback address (``localhost`` listens on 127.0.0.1
only), port 0; no pings (the tests control the timing). A fault of the verifier itself answers 500, recorded as such.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import re
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.handlers import S3_SIGNING_NAMES
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from tests.servers.sigv4_verifier import add_signed_headers

__all__ = ["WsVerifier", "start_ws_verifier"]

_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/,]+)/(\d{8})/([^/,]+)/([^/,]+)/aws4_request,\s*"
                   r"SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$")
_CREDENTIAL = re.compile(r"^([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request$")
_SIGNED_HEADERS = re.compile(r"^[a-z0-9-]+(;[a-z0-9-]+)*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_STAMP = re.compile(r"^\d{8}T\d{6}Z$")
_QUERY_AUTH = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
               "X-Amz-Signature")
_TOKEN = "X-Amz-Security-Token"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SKEW = timedelta(minutes=5)
_MAX_EXPIRES = 7 * 24 * 3600  # SigV4's limit for a presigned URL
_PATTERN = bytes(range(256))


@dataclass
class WsVerifier:
    url: str
    host: str
    port: int
    access_key: str
    secret_key: str
    session_token: str | None
    handshakes: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    token_after_signing: tuple[str, ...] = ("iotdevicegateway",)


class _DeclaredPayload:
    """The header form's payload hash: the request's ``x-amz-content-sha256`` (signed or not), else the empty body's
    (an upgrade ``GET`` has none). botocore itself takes the header's value only when it is among the signed
    headers; this covers the unsigned case the same way."""

    declared: str = _EMPTY_SHA256

    def payload(self, request: AWSRequest) -> str:
        return self.declared


class _HeaderAuth(_DeclaredPayload, SigV4Auth):  # type: ignore[misc]
    pass


class _S3HeaderAuth(_DeclaredPayload, S3SigV4Auth):  # type: ignore[misc]
    pass


def _one(headers: Headers, name: str, *, required: bool = True) -> str | None:
    values = headers.get_all(name)
    if len(values) > 1:
        raise ValueError(f"{name} is sent {len(values)} times")
    if not values and required:
        raise ValueError(f"no {name} header")
    return values[0] if values else None


def _check_date(stamp: str, scope_date: str) -> datetime:
    if not _STAMP.match(stamp):
        raise ValueError(f"X-Amz-Date {stamp!r} is not YYYYMMDDTHHMMSSZ")
    if stamp[:8] != scope_date:
        raise ValueError("X-Amz-Date does not match the scope's date")
    when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if abs(datetime.now(UTC) - when) > _SKEW:
        raise ValueError(f"X-Amz-Date {stamp} is more than 5 minutes from now")
    return when


def _rebuild(request: Request, names: list[str], query: str, stamp: str) -> AWSRequest:
    """The request botocore would have signed: ``GET``, the raw path, ``query`` (raw pairs as received), the signed
    headers with their received values, ``stamp`` as the signing time."""
    host = _one(request.headers, "Host")
    path = request.path.partition("?")[0]
    aws = AWSRequest(method=request.method, url=f"http://{host}{path}" + (f"?{query}" if query else ""))
    add_signed_headers(aws, names, request.headers.get_all, stamp)
    return aws


def _signature(signer: SigV4Auth, aws: AWSRequest) -> str:
    return str(signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws))


def _check_header_form(request: Request, v: WsVerifier, record: dict[str, Any]) -> None:
    record["form"] = "header"
    m = _AUTH.match(_one(request.headers, "Authorization") or "")
    if m is None:
        raise ValueError("malformed Authorization header (not AWS4-HMAC-SHA256 Credential=, SignedHeaders=, "
                         "Signature=)")
    key_id, date, region, service, signed, signature = m.groups()
    names = signed.split(";")
    record.update(service=service, region=region, signed_headers=names)
    if key_id != v.access_key:
        raise ValueError(f"unknown access key {key_id}")
    if "host" not in names:
        raise ValueError("host is not signed")
    stamp = _one(request.headers, "X-Amz-Date") or ""
    _check_date(stamp, date)
    token = _one(request.headers, _TOKEN, required=False)
    if v.session_token is None:
        if token is not None:
            raise ValueError("X-Amz-Security-Token sent, but the verifier's credentials have no session token")
    elif token is None:
        raise ValueError("session token missing: no X-Amz-Security-Token header")
    elif not hmac.compare_digest(token.encode(), v.session_token.encode()):
        raise ValueError("X-Amz-Security-Token is not the session's token")
    elif "x-amz-security-token" not in names:
        raise ValueError("X-Amz-Security-Token is not signed")
    declared = _one(request.headers, "X-Amz-Content-SHA256", required=False)
    if declared is not None and _HEX64.match(declared) and declared != _EMPTY_SHA256:
        raise ValueError("x-amz-content-sha256 is not the empty body's hash (an upgrade GET has no body)")

    aws = _rebuild(request, names, request.path.partition("?")[2], stamp)
    signer = (_S3HeaderAuth if service in S3_SIGNING_NAMES else _HeaderAuth)(
        Credentials(v.access_key, v.secret_key), service, region)
    signer.declared = declared or _EMPTY_SHA256
    if not hmac.compare_digest(_signature(signer, aws), signature):
        raise ValueError("SignatureDoesNotMatch")


def _check_query_form(request: Request, v: WsVerifier, record: dict[str, Any]) -> None:
    record["form"] = "query"
    raw = request.path.partition("?")[2].split("&")
    params: dict[str, list[str]] = {}
    for pair in raw:
        key, _, value = pair.partition("=")
        params.setdefault(key, []).append(value)

    def one(name: str) -> str:
        values = params.get(name, [])
        if len(values) != 1:
            raise ValueError(f"{name} is {'repeated in' if values else 'missing from'} the query")
        return unquote(values[0])

    if one("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        raise ValueError("X-Amz-Algorithm is not AWS4-HMAC-SHA256")
    m = _CREDENTIAL.match(one("X-Amz-Credential"))
    if m is None:
        raise ValueError("malformed X-Amz-Credential")
    key_id, date, region, service = m.groups()
    record.update(service=service, region=region)
    signed = one("X-Amz-SignedHeaders")
    if not _SIGNED_HEADERS.match(signed):
        raise ValueError("malformed X-Amz-SignedHeaders")
    names = signed.split(";")
    record["signed_headers"] = names
    signature = one("X-Amz-Signature")
    if not _HEX64.match(signature):
        raise ValueError("malformed X-Amz-Signature")
    if key_id != v.access_key:
        raise ValueError(f"unknown access key {key_id}")
    if "host" not in names:
        raise ValueError("host is not signed")
    stamp = one("X-Amz-Date")
    when = _check_date(stamp, date)
    expires = one("X-Amz-Expires")
    if not expires.isdigit() or not 1 <= int(expires) <= _MAX_EXPIRES:
        raise ValueError(f"X-Amz-Expires {expires!r} is not 1..{_MAX_EXPIRES}")
    if datetime.now(UTC) > when + timedelta(seconds=int(expires)):
        raise ValueError("the presigned URL has expired")

    after = service in v.token_after_signing
    tokens = params.get(_TOKEN, [])
    if v.session_token is None:
        if tokens:
            raise ValueError("X-Amz-Security-Token sent, but the verifier's credentials have no session token")
    elif not tokens:
        raise ValueError("session token missing: no X-Amz-Security-Token in the query")
    elif len(tokens) > 1:
        raise ValueError("X-Amz-Security-Token is repeated in the query")
    elif not hmac.compare_digest(unquote(tokens[0]).encode(), v.session_token.encode()):
        raise ValueError("X-Amz-Security-Token is not the session's token")

    def expected(*, drop_token: bool) -> str:
        drop = {"X-Amz-Signature", _TOKEN} if drop_token else {"X-Amz-Signature"}
        query = "&".join(pair for pair in raw if pair.partition("=")[0] not in drop)
        auth_cls = S3SigV4QueryAuth if service in S3_SIGNING_NAMES else SigV4QueryAuth
        return _signature(auth_cls(Credentials(v.access_key, v.secret_key), service, region),
                          _rebuild(request, names, query, stamp))

    if hmac.compare_digest(expected(drop_token=after), signature):
        return
    if after and tokens and hmac.compare_digest(expected(drop_token=False), signature):
        raise ValueError(f"X-Amz-Security-Token is inside the signed query; {service} wants it appended after "
                         "signing, outside the canonical query")
    raise ValueError("SignatureDoesNotMatch")


def _check(request: Request, v: WsVerifier, record: dict[str, Any]) -> None:
    """Fills ``record`` as far as it gets; raises ``ValueError(reason)`` when the handshake must be refused."""
    query_keys = {pair.partition("=")[0] for pair in request.path.partition("?")[2].split("&")}
    presigned = any(name in query_keys for name in _QUERY_AUTH)
    authorization = bool(request.headers.get_all("Authorization"))
    _one(request.headers, "Host")
    if authorization and presigned:
        raise ValueError("both an Authorization header and a presigned query")
    if authorization:
        _check_header_form(request, v, record)
    elif presigned:
        _check_query_form(request, v, record)
    else:
        raise ValueError("no SigV4 signature: neither an Authorization header nor a presigned query")


def _refuse(connection: ServerConnection, status: int, reason: str) -> Response:
    response = connection.respond(status, json.dumps({"error": reason}))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


def _process_request(v: WsVerifier, connection: ServerConnection, request: Request) -> Response | None:
    headers: dict[str, str] = {}
    for name, value in request.headers.raw_items():
        lname = name.lower()
        headers[lname] = f"{headers[lname]}, {value}" if lname in headers else value
    record: dict[str, Any] = {"ok": False, "reason": None, "form": None, "service": None, "region": None,
                              "signed_headers": [], "path": request.path, "headers": headers}
    try:
        _check(request, v, record)
    except ValueError as exc:
        record["reason"] = str(exc)
        v.handshakes.append(record)
        return _refuse(connection, 403, str(exc))
    except Exception as exc:
        record["reason"] = f"verifier fault: {exc!r}"
        v.handshakes.append(record)
        return _refuse(connection, 500, record["reason"])
    record["ok"] = True
    v.handshakes.append(record)
    return None


async def _echo(v: WsVerifier, connection: ServerConnection) -> None:
    messages = received = 0
    try:
        while True:
            message = await connection.recv()
            messages += 1
            received += len(message.encode() if isinstance(message, str) else message)
            if isinstance(message, str) and message.startswith("close:"):
                _, code, reason = message.split(":", 2)
                await connection.close(int(code), reason)
            elif isinstance(message, str) and message.startswith("send:"):
                size = int(message.removeprefix("send:"))
                await connection.send((_PATTERN * (size // len(_PATTERN) + 1))[:size])
            else:
                await connection.send(message)
    except ConnectionClosed:
        pass
    finally:
        rcvd = connection.protocol.close_rcvd  # the client's close frame (the asyncio connection has no close_rcvd)
        v.sessions.append({"path": connection.request.path if connection.request else None,
                           "messages": messages, "bytes": received,
                           "close_code": rcvd.code if rcvd else None, "close_reason": rcvd.reason if rcvd else None,
                           "clean": rcvd is not None})


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """``mqtt`` when offered (as AWS IoT's MQTT over WebSocket does), else none: a client offering nothing is
    served too."""
    return Subprotocol("mqtt") if "mqtt" in offered else None


def _bind_address(host: str) -> str:
    """The loopback address to listen on for ``host``: ``localhost`` listens on 127.0.0.1 only (port 0 on each of
    its addresses would give two different ports)."""
    if host == "localhost":
        return "127.0.0.1"
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the WebSocket verifier listens on loopback addresses only, not {host}")
    return host


@contextmanager
def start_ws_verifier(access_key: str, secret_key: str, *, session_token: str | None = None,
                      tls: ssl.SSLContext | None = None, host: str = "127.0.0.1",
                      token_after_signing: tuple[str, ...] = ("iotdevicegateway",),
                      max_size: int = 64 * 1024 * 1024) -> Iterator[WsVerifier]:
    """A :class:`WsVerifier` listening (``ws://``, or ``wss://`` with ``tls``) before this yields; stopped, its
    thread joined, on exit."""
    bind = _bind_address(host)
    v = WsVerifier("", host, 0, access_key, secret_key, session_token, token_after_signing=token_after_signing)
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def handler(connection: ServerConnection) -> None:
            await _echo(v, connection)

        def process_request(connection: ServerConnection, request: Request) -> Response | None:
            return _process_request(v, connection, request)

        try:
            async with serve(handler, bind, 0, ssl=tls, process_request=process_request, max_size=max_size,
                             ping_interval=None, select_subprotocol=_select_subprotocol) as server:
                state["port"] = server.sockets[0].getsockname()[1]
                state["stop"] = lambda: loop.call_soon_threadsafe(stop.set)
                ready.set()
                await stop.wait()
        except BaseException as exc:
            state["error"] = exc
            raise
        finally:
            ready.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="ws-verifier", daemon=True)
    thread.start()
    ready.wait(10)
    if "stop" not in state:
        thread.join(5)
        raise RuntimeError(f"the WebSocket verifier did not start: {state.get('error')!r}")
    v.port = state["port"]
    url_host = f"[{host}]" if ":" in host else host
    v.url = f"{'wss' if tls else 'ws'}://{url_host}:{v.port}"
    try:
        yield v
    finally:
        state["stop"]()
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError("the WebSocket verifier's thread did not stop within 10 s")
