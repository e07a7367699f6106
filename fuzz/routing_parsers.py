"""Request-target parsers: absolute URIs (:func:`sigproxy.routing.parse_absolute_target`), CONNECT heads
(``sigproxy.intake.connect._parse_connect``) and the client's credential scope and key id
(:func:`sigproxy.routing.parse_client_scope`, :func:`~sigproxy.routing.parse_client_key_id`).

Properties: a :class:`~sigproxy.routing.Target` with a non-empty lower-case host, a port in 1-65535 and a
path starting with ``/`` (which re-parses to itself from its authority) or :class:`~sigproxy.errors.BadRequest`;
a CONNECT head gives host and port under the same rules or BadRequest; the client scope and key id parsers
never raise, and whatever has a scope has a key id.
"""

# ruff: noqa: PT018
# (properties are plain asserts that name the broken invariant; they run outside pytest too)

from __future__ import annotations

import inspect
from typing import Any

from hypothesis import strategies as st

from fuzz.engine import Target
from sigproxy.config import ProxyConfig
from sigproxy.errors import BadRequest
from sigproxy.intake import connect
from sigproxy.routing import ClientScope, parse_absolute_target, parse_client_key_id, parse_client_scope

_odd = st.sampled_from(["", " ", "\t", "\x00", "\r", "\n", "\r\n", "%", "%00", "%2F", "%3A", "@", ":", "::", "[",
                        "]", "#", "?", "/", "\\", "é", "\u0660", "\uff10", "\u2028", "..", "*"])
_hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "s3.amazonaws.com", "S3.US-EAST-1.AMAZONAWS.COM", "[::1]",
                     "[::ffff:127.0.0.1]", "[fe80::1%25eth0]", "[v1.x]", "[]", "[::1", "::1]", "0x7f.1",
                     "2130706433", "bucket.s3.amazonaws.com.", "xn--nxasmq6b.com", "例え.jp", "a..b", ".", ""]),
    st.text(max_size=15),
    st.lists(_odd | st.text("abc.-", max_size=3), max_size=5).map("".join),
)
_ports = st.one_of(
    st.sampled_from(["", ":", ":0", ":1", ":80", ":443", ":65535", ":65536", ":99999", ":-1", ":+1", ": 80",
                     ":80 ", ":0x50", ":\u0660", ":\uff18\uff10", ":1e3", ":80:80", ":00000000080"]),
    st.integers(0, 10**6).map(lambda p: f":{p}"),
    st.integers(1, 6000).map(lambda n: ":" + "9" * n),
    st.text(max_size=6).map(lambda t: ":" + t),
)
_userinfo = st.sampled_from(["", "", "", "u@", "u:p@", "@", "a@b@", "%40@"])
_paths = st.one_of(st.sampled_from(["", "/", "/a/b", "?x=1", "/?", "/#f", "#", "/%zz", "//x", "/a b"]),
                   st.text(max_size=20).map(lambda t: "/" + t))


@st.composite
def absolute_targets(draw: Any) -> str:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(max_size=60))
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "HtTpS", "ftp", "", "http:", "http:/", "h\u0131ttp"]))
    sep = draw(st.sampled_from(["://", "://", "://", ":/", ":", "///", ":///"]))
    return scheme + sep + draw(_userinfo) + draw(_hosts) + draw(_ports) + draw(_paths)


def check_absolute_target(raw: str) -> str:
    try:
        t = parse_absolute_target(raw)
    except BadRequest as exc:
        return "BadRequest: " + exc.message.split(":")[0][:40]
    assert t.host and t.host == t.host.lower(), t
    assert 0 < t.port < 65536, t
    assert t.scheme in ("http", "https")
    assert t.path.startswith("/"), t
    again = parse_absolute_target(f"{t.scheme}://{t.authority}{t.path}" + (f"?{t.query}" if t.query else ""))
    assert again == t, (again, t)
    return "Target"


# ----------------------------------------------------------------------------- CONNECT

PROXY = ProxyConfig(state_dir=None)  # type: ignore[arg-type]
_takes_proxy = len(inspect.signature(connect._parse_connect).parameters) > 1


def parse_connect(head: bytes) -> Any:
    return connect._parse_connect(head, PROXY) if _takes_proxy else connect._parse_connect(head)  # type: ignore[call-arg]


_header_lines = st.lists(
    st.one_of(
        st.sampled_from(["Host: x", "Proxy-Authorization: Basic bWFpbjp0", "proxy-authorization:", " : ",
                         "Proxy-Authorization : Basic a", "PROXY-AUTHORIZATION:\tx\t", "X: " + "a" * 9000]),
        st.text(max_size=30),
    ),
    max_size=4,
)


@st.composite
def connect_heads(draw: Any) -> bytes:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=200))
    method = draw(st.sampled_from(["CONNECT", "CONNECT", "connect", "CONNECT ", "CONNECT\t"]))
    host = draw(_hosts)
    port = draw(_ports)
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.", "HTTP/2", "", "HTTP/1.1 x"]))
    sp = draw(st.sampled_from([" ", " ", "  ", "\t"]))
    line = f"{method}{sp}{host}{port}{sp}{version}"
    text = "\r\n".join([line, *draw(_header_lines)])
    return text.encode("utf-8", "surrogatepass")


def check_connect(head: bytes) -> str:
    try:
        c = parse_connect(head)
    except BadRequest as exc:
        return "BadRequest: " + exc.message.split(":")[0].split(" got")[0][:40]
    assert c.host and c.host == c.host.lower(), c
    assert 0 < c.port < 65536, c
    return "ConnectHead"


# ----------------------------------------------------------------------------- client scope

_auth = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.text(max_size=20).map(lambda k: f"AWS {k}:c2ln"),  # SigV2
    st.builds(
        lambda alg, key, date, region, service, tail: f"{alg} Credential={key}/{date}/{region}/{service}/{tail}",
        st.sampled_from(["AWS4-HMAC-SHA256", "AWS4-HMAC-SHA256X", "AWS4-ECDSA-P256-SHA256", ""]),
        st.text(max_size=10), st.sampled_from(["20240101", "2024010", "\u0660" * 8, "202401011"]),
        st.text(max_size=10), st.text(max_size=10),
        st.sampled_from(["aws4_request", "aws4_request, SignedHeaders=host, Signature=00", "x"]),
    ),
)
_query = st.one_of(
    st.text(max_size=60),
    st.lists(st.tuples(st.sampled_from(["X-Amz-Credential", "x-amz-credential", "X-Amz-Credential%3D", "a",
                                        "AWSAccessKeyId"]),
                       st.text(max_size=40)), max_size=3)
    .map(lambda kv: "&".join(f"{k}={v}" for k, v in kv)),
    st.text(max_size=20).map(lambda k: f"X-Amz-Credential={k}%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"),
)


def check_client_scope(value: tuple[str | None, str]) -> str:
    scope = parse_client_scope(*value)
    assert scope is None or isinstance(scope, ClientScope)
    key_id = parse_client_key_id(*value)
    assert key_id is None or isinstance(key_id, str)
    # Fail closed: whatever carries a scope (region/service from the client's signature) also carries a key
    # id for connection selection -- a typo can't pass as "unsigned" and fall to the default connection.
    assert scope is None or key_id is not None, (scope, key_id)
    return "None" if scope is None else "ClientScope"


TARGETS = [
    Target("absolute_target", absolute_targets(), check_absolute_target),
    Target("connect_head", connect_heads(), check_connect, describe=lambda head: head),
    Target("client_scope", st.tuples(_auth, _query), check_client_scope),
]
