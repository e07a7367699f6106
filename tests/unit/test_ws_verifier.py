"""The WebSocket verifier (tests/servers/ws_verifier.py) is itself proven here: it accepts upgrade requests botocore
signed (SigV4 header, presigned query, AWS IoT's token appended after signing) from a real websockets client, refuses
tampered ones with 403 and the reason, and echoes as it promises, over ws:// and wss://."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest
import trustme
from botocore.auth import S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.servers.ws_verifier import WsVerifier, start_ws_verifier

KEY = "AKIDWSVERIFIER"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjE//session+token/with=odd&chars"
MIB = 1024 * 1024


def _http(v: WsVerifier) -> str:
    return "http" + v.url.removeprefix("ws")  # ws:// -> http://, wss:// -> https://


def header_signed(v: WsVerifier, path: str = "/ws", *, service: str = "execute-api", secret: str = SECRET,
                  token: str | None = None, headers: dict[str, str] | None = None,
                  at: datetime | None = None) -> dict[str, str]:
    """The headers botocore's SigV4Auth adds for a GET of ``path`` (Host is the client's, as signed)."""
    request = AWSRequest(method="GET", url=_http(v) + path, headers=headers or {})
    with mock.patch("botocore.auth.get_current_datetime", return_value=at or datetime.now(UTC)):
        SigV4Auth(Credentials(KEY, secret, token), service, "eu-west-1").add_auth(request)
    return dict(request.headers.items())


def presigned(v: WsVerifier, path: str = "/mqtt", *, service: str = "iotdevicegateway", secret: str = SECRET,
              token: str | None = None, append_token: str | None = None, expires: int = 300,
              at: datetime | None = None, auth: type[SigV4QueryAuth] = SigV4QueryAuth) -> str:
    """A URL presigned by botocore; ``token`` is signed inside the query, ``append_token`` appended after signing
    (AWS IoT's way)."""
    request = AWSRequest(method="GET", url=_http(v) + path)
    with mock.patch("botocore.auth.get_current_datetime", return_value=at or datetime.now(UTC)):
        auth(Credentials(KEY, secret, token), service, "eu-west-1", expires=expires).add_auth(request)
    url = str(request.url)
    if append_token is not None:
        url += "&X-Amz-Security-Token=" + quote(append_token, safe="")
    return "ws" + url.removeprefix("http")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def plain() -> Iterator[WsVerifier]:
    with start_ws_verifier(KEY, SECRET) as v:
        yield v


@pytest.fixture
def with_token() -> Iterator[WsVerifier]:
    with start_ws_verifier(KEY, SECRET, session_token=TOKEN) as v:
        yield v


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture(params=["ws", "wss"])
def echo(request: pytest.FixtureRequest, ca: trustme.CA,
         client_tls: ssl.SSLContext) -> Iterator[tuple[WsVerifier, dict[str, Any]]]:
    """A verifier over ws:// (127.0.0.1) or wss:// (localhost, trustme's CA), and the client's connect options."""
    if request.param == "ws":
        with start_ws_verifier(KEY, SECRET) as v:
            yield v, {}
        return
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_tls)
    with start_ws_verifier(KEY, SECRET, tls=server_tls, host="localhost") as v:
        assert v.url == f"wss://localhost:{v.port}"
        yield v, {"ssl": client_tls}


async def accepted(v: WsVerifier, url: str, headers: dict[str, str] | None = None, **options: Any) -> None:
    """The handshake succeeds and the connection echoes; returns once the verifier has recorded the session (its
    thread does so after the client's side is over: a later :func:`refused` counts sessions)."""
    sessions = len(v.sessions)
    async with connect(url, additional_headers=headers, **options) as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"
    await wait_for(lambda: len(v.sessions) > sessions)
    assert v.handshakes[-1]["ok"] is True, v.handshakes[-1]
    assert v.handshakes[-1]["reason"] is None


async def refused(v: WsVerifier, url: str, headers: dict[str, str] | None = None, **options: Any) -> str:
    """The handshake gets 403 with a JSON reason, the one recorded; returns it."""
    sessions = len(v.sessions)
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, additional_headers=headers, **options):
            pass
    response = info.value.response
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/json"
    reason = json.loads(bytes(response.body or b""))["error"]
    assert v.handshakes[-1]["ok"] is False
    assert v.handshakes[-1]["reason"] == reason
    assert len(v.sessions) == sessions  # nothing was upgraded
    return str(reason)


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Until ``predicate()``, 2 s at most: the verifier's thread appends a session once its side of the connection
    is over, which can be after the client's. Polled: that thread's list has no event this loop could await."""
    async with asyncio.timeout(2):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# --- the header form -------------------------------------------------------------------------------------------

async def test_header_form_is_accepted_and_recorded(plain: WsVerifier) -> None:
    headers = header_signed(plain, "/ws/a%20b?stage=prod&b=2", headers={"X-Amz-User-Agent": "sigproxy"})
    await accepted(plain, plain.url + "/ws/a%20b?stage=prod&b=2", headers)
    record = plain.handshakes[-1]
    assert record["form"] == "header"
    assert (record["service"], record["region"]) == ("execute-api", "eu-west-1")
    assert record["signed_headers"] == ["host", "x-amz-date", "x-amz-user-agent"]
    assert record["path"] == "/ws/a%20b?stage=prod&b=2"  # raw, as received
    assert record["headers"]["host"] == f"127.0.0.1:{plain.port}"
    assert record["headers"]["upgrade"] == "websocket"
    assert record["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY}/")
    assert all(name == name.lower() for name in record["headers"])


async def test_header_form_with_a_session_token(with_token: WsVerifier) -> None:
    v = with_token
    await accepted(v, v.url + "/ws", header_signed(v, token=TOKEN))
    assert "x-amz-security-token" in v.handshakes[-1]["signed_headers"]
    unsigned = {**header_signed(v), "X-Amz-Security-Token": TOKEN}  # sent but not covered by the signature
    assert await refused(v, v.url + "/ws", unsigned) == "X-Amz-Security-Token is not signed"
    missing = await refused(v, v.url + "/ws", header_signed(v))
    assert missing == "session token missing: no X-Amz-Security-Token header"
    wrong = await refused(v, v.url + "/ws", header_signed(v, token="other-token"))
    assert wrong == "X-Amz-Security-Token is not the session's token"


def _stale() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=6)


@pytest.mark.parametrize(("case", "reason"), [
    ("no signature", "no SigV4 signature"),
    ("changed path", "SignatureDoesNotMatch"),
    ("changed query", "SignatureDoesNotMatch"),
    ("changed signed header", "SignatureDoesNotMatch"),
    ("wrong secret", "SignatureDoesNotMatch"),
    ("unknown key", "unknown access key"),
    ("stale date", "more than 5 minutes from now"),
    ("unexpected token", "X-Amz-Security-Token sent"),
    ("hashed body", "x-amz-content-sha256 is not the empty body's hash"),
])
async def test_header_form_refusals(plain: WsVerifier, case: str, reason: str) -> None:
    v, url = plain, plain.url + "/ws?stage=prod"
    signed = header_signed(v, "/ws?stage=prod", headers={"X-Tenant": "a"})
    headers: dict[str, str] | None = signed
    if case == "no signature":
        headers = None
    elif case == "changed path":
        url = v.url + "/other?stage=prod"
    elif case == "changed query":
        url = v.url + "/ws?stage=dev"
    elif case == "changed signed header":
        headers = {**signed, "X-Tenant": "b"}
    elif case == "wrong secret":
        headers = header_signed(v, "/ws?stage=prod", headers={"X-Tenant": "a"}, secret="not-the-secret")
    elif case == "unknown key":
        headers = {**signed, "Authorization": signed["Authorization"].replace(KEY, "AKIDOTHER")}
    elif case == "stale date":
        headers = header_signed(v, "/ws?stage=prod", at=_stale())
    elif case == "unexpected token":
        headers = header_signed(v, "/ws?stage=prod", token=TOKEN)
    elif case == "hashed body":
        headers = header_signed(v, "/ws?stage=prod", headers={"X-Amz-Content-SHA256": "ab" * 32})
    assert reason in await refused(v, url, headers)


# --- the query form (presigned URLs) ---------------------------------------------------------------------------

async def test_query_form_is_accepted(with_token: WsVerifier) -> None:
    v = with_token
    # AWS IoT: signed without the token, the token appended afterwards.
    await accepted(v, presigned(v, "/mqtt", append_token=TOKEN))
    record = v.handshakes[-1]
    assert (record["form"], record["service"], record["signed_headers"]) == ("query", "iotdevicegateway", ["host"])
    assert record["path"].startswith("/mqtt?X-Amz-Algorithm=AWS4-HMAC-SHA256&")
    # Any other service: the token is a signed query parameter like the rest.
    await accepted(v, presigned(v, "/ws?stage=prod", service="execute-api", token=TOKEN))
    # S3's signing names: UNSIGNED-PAYLOAD (botocore's S3SigV4QueryAuth).
    await accepted(v, presigned(v, "/bucket/key", service="s3", token=TOKEN, auth=S3SigV4QueryAuth))
    assert v.handshakes[-1]["service"] == "s3"


async def test_query_form_without_a_session_token(plain: WsVerifier) -> None:
    await accepted(plain, presigned(plain, "/mqtt"))
    assert "X-Amz-Security-Token sent" in await refused(plain, presigned(plain, "/mqtt", append_token=TOKEN))


def _tamper_signature(url: str) -> str:
    head, signature = url.rsplit("X-Amz-Signature=", 1)
    return f"{head}X-Amz-Signature={'0' if signature[0] != '0' else '1'}{signature[1:]}"


@pytest.mark.parametrize(("case", "reason"), [
    ("iot token inside the canonical query", "inside the signed query; iotdevicegateway wants it appended"),
    ("iot token missing", "session token missing"),
    ("iot token wrong", "is not the session's token"),
    ("token appended for another service", "SignatureDoesNotMatch"),
    ("changed path", "SignatureDoesNotMatch"),
    ("extra parameter", "SignatureDoesNotMatch"),
    ("tampered signature", "SignatureDoesNotMatch"),
    ("wrong secret", "SignatureDoesNotMatch"),
    ("stale date", "more than 5 minutes from now"),
    ("expired", "has expired"),
    ("also an Authorization header", "both an Authorization header and a presigned query"),
])
async def test_query_form_refusals(with_token: WsVerifier, case: str, reason: str) -> None:
    v = with_token
    url, headers = presigned(v, "/mqtt", append_token=TOKEN), None
    if case == "iot token inside the canonical query":
        url = presigned(v, "/mqtt", token=TOKEN)
    elif case == "iot token missing":
        url = presigned(v, "/mqtt")
    elif case == "iot token wrong":
        url = presigned(v, "/mqtt", append_token="other-token")
    elif case == "token appended for another service":
        url = presigned(v, "/ws", service="execute-api", append_token=TOKEN)
    elif case == "changed path":
        url = url.replace("/mqtt?", "/other?")
    elif case == "extra parameter":
        url += "&stage=prod"
    elif case == "tampered signature":
        url = _tamper_signature(presigned(v, "/mqtt")) + "&X-Amz-Security-Token=" + quote(TOKEN, safe="")
    elif case == "wrong secret":
        url = presigned(v, "/mqtt", append_token=TOKEN, secret="not-the-secret")
    elif case == "stale date":
        url = presigned(v, "/mqtt", append_token=TOKEN, at=_stale())
    elif case == "expired":
        url = presigned(v, "/mqtt", append_token=TOKEN, expires=1, at=datetime.now(UTC) - timedelta(seconds=30))
    elif case == "also an Authorization header":
        headers = header_signed(v, "/mqtt", token=TOKEN)
    assert reason in await refused(v, url, headers)


# --- the echo ---------------------------------------------------------------------------------------------------

async def _open(v: WsVerifier, options: dict[str, Any], path: str = "/echo", **more: Any) -> ClientConnection:
    return await connect(v.url + path, additional_headers=header_signed(v, path), **options, **more)


async def test_echo_text_binary_and_large_messages(echo: tuple[WsVerifier, dict[str, Any]]) -> None:
    v, options = echo
    big = bytes(range(251)) * (5 * MIB // 251 + 1)
    big = big[:5 * MIB]
    async with await _open(v, options, max_size=16 * MIB) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\xffbin")
        reply = await ws.recv()
        assert isinstance(reply, bytes) and reply == b"\x00\xffbin"
        await ws.send(big)
        assert await ws.recv() == big
        await ws.send(f"send:{5 * MIB}")
        sent = await ws.recv()
        assert isinstance(sent, bytes) and len(sent) == 5 * MIB
        assert sent == (bytes(range(256)) * (5 * MIB // 256))[:5 * MIB]
        await ws.send("send:300")
        assert await ws.recv() == (bytes(range(256)) * 2)[:300]
    await wait_for(lambda: len(v.sessions) == 1)
    assert v.sessions[-1] == {"path": "/echo", "messages": 5, "bytes": len("héllo".encode()) + 5 + 5 * MIB
                              + len(f"send:{5 * MIB}") + len("send:300"),
                              "close_code": 1000, "close_reason": "", "clean": True}


async def test_close_codes_both_ways(echo: tuple[WsVerifier, dict[str, Any]]) -> None:
    v, options = echo
    ws = await _open(v, options)
    await ws.send("close:4001:going away now")
    with pytest.raises(ConnectionClosed):
        await ws.recv()
    assert ws.close_code == 4001 and ws.close_reason == "going away now"
    await wait_for(lambda: len(v.sessions) == 1)
    # The client answers the server's close with the same code and reason.
    assert v.sessions[-1] == {"path": "/echo", "messages": 1, "bytes": len("close:4001:going away now"),
                              "close_code": 4001, "close_reason": "going away now", "clean": True}

    ws = await _open(v, options, "/echo2")
    await ws.send("x")
    await ws.recv()
    await ws.close(4002, "client says bye")
    await wait_for(lambda: len(v.sessions) == 2)
    assert v.sessions[-1] == {"path": "/echo2", "messages": 1, "bytes": 1, "close_code": 4002,
                              "close_reason": "client says bye", "clean": True}


async def test_a_dropped_connection_is_not_clean(echo: tuple[WsVerifier, dict[str, Any]]) -> None:
    v, options = echo
    ws = await _open(v, options)
    await ws.send(b"abc")
    assert await ws.recv() == b"abc"
    ws.transport.abort()  # no close frame: the TCP connection just goes
    await wait_for(lambda: len(v.sessions) == 1)
    assert v.sessions[-1] == {"path": "/echo", "messages": 1, "bytes": 3, "close_code": None,
                              "close_reason": None, "clean": False}


async def test_max_size_is_the_servers_limit() -> None:
    with start_ws_verifier(KEY, SECRET, max_size=1024) as v:
        ws = await _open(v, {})
        await ws.send(b"x" * 1024)
        assert await ws.recv() == b"x" * 1024
        await ws.send(b"x" * 1025)
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1009  # message too big
        await wait_for(lambda: len(v.sessions) == 1)
        # websockets fails the connection (close frame, then EOF) and reads nothing more: the client's answering
        # close frame never counts, the too-big message neither.
        assert v.sessions[-1] == {"path": "/echo", "messages": 1, "bytes": 1024, "close_code": None,
                                  "close_reason": None, "clean": False}


async def test_stopping_closes_the_listener() -> None:
    with start_ws_verifier(KEY, SECRET) as v:
        url = v.url
    with pytest.raises(OSError):
        await connect(url, additional_headers=header_signed(v, "/"), open_timeout=2)


def test_only_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"), start_ws_verifier(KEY, SECRET, host="0.0.0.0"):
        pass
