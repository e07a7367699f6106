"""sigproxy.routing: request target, connection selection, host check, service/region, upstream headers."""

from __future__ import annotations

import base64
import hmac

import pytest

from sigproxy.config import Config, ConnectionConfig, ReverseListener, loads
from sigproxy.endpoints import parse_host
from sigproxy.errors import (
    BadProxyToken,
    BadRequest,
    HostNotAllowed,
    ProxyAuthRequired,
    UnresolvableTarget,
    UnsupportedRequest,
)
from sigproxy.headerrules import is_signed_header, upstream_headers, upstream_headers_lower
from sigproxy.routing import (
    ClientScope,
    Target,
    check_host,
    check_shape,
    parse_absolute_target,
    parse_client_key_id,
    parse_client_scope,
    presigned_by_client,
    resolve_service_region,
    select_connection,
)

TOKEN = "s3cret-proxy-token"


def _conn(name: str, extra: str = "", hosts: str = '["*.amazonaws.com", "127.0.0.1:*"]') -> str:
    return f"""
[connections.{name}]
hosts = {hosts}
{extra}
[connections.{name}.credentials]
source = "static"
access_key_id = "AKID{name.upper()}"
secret_access_key = "secret-{name}"
"""


CONFIG_TEXT = (
    '[proxy]\ndefault_connection = "main"\n'
    + _conn("main")
    + _conn("secure", f'token = "{TOKEN}"')
    + _conn("search", hosts='["*.es.amazonaws.com"]')
    + _conn("other")
    + _conn("forced", 'service = "s3"\nregion = "us-west-2"')
    + _conn("plain", 'region = "eu-central-1"')
    + _conn("bare")
    + _conn("local", hosts='["localhost:4566", "[::1]:*", "127.0.0.1:*", "*.amazonaws.com"]')
    + """
[[routes]]
host = "*.es.amazonaws.com"
connection = "search"

[[routes]]
host = "*.secure.example:*"
connection = "secure"

[[reverse]]
listen = "127.0.0.1:9200"
upstream = "http://127.0.0.1:5000"
connection = "other"

[[reverse]]
listen = "127.0.0.1:9201"
upstream = "http://127.0.0.1:5000"
"""
)


@pytest.fixture(scope="module")
def config() -> Config:
    return loads(CONFIG_TEXT, env={})


@pytest.fixture(scope="module")
def no_default(config: Config) -> Config:
    return loads(CONFIG_TEXT.replace('default_connection = "main"', ""), env={})


@pytest.fixture(scope="module")
def ignoring(config: Config) -> Config:
    return loads(CONFIG_TEXT.replace('default_connection = "main"',
                                     'default_connection = "main"\nunknown_key_id = "ignore"'), env={})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def scope(key: str, region: str = "us-west-1", service: str = "dynamodb") -> ClientScope:
    return ClientScope(key, region, service)


SQS = parse_absolute_target("https://sqs.eu-west-1.amazonaws.com/")
ES = parse_absolute_target("https://search-x.eu-west-1.es.amazonaws.com/_search")
LOCAL = parse_absolute_target("http://127.0.0.1:5000/")


def select(config: Config, target: Target = SQS, *, header: str | None = None, proxy_auth: str | None = None,
           client: ClientScope | None = None, listener: ReverseListener | None = None) -> tuple[str, str]:
    sel = select_connection(
        config, target, connection_header=header, proxy_authorization=proxy_auth, client_scope=client,
        listener=listener,
    )
    return sel.connection.name, sel.how


class TestParseAbsoluteTarget:
    @pytest.mark.parametrize(
        ("raw", "expected", "authority"),
        [
            ("http://example.com/path?x=1", Target("http", "example.com", 80, "/path", "x=1"), "example.com"),
            ("https://Example.COM:8443/a%20b?q", Target("https", "example.com", 8443, "/a%20b", "q"),
             "example.com:8443"),
            ("HTTPS://h:443/", Target("https", "h", 443, "/", ""), "h"),
            ("http://h:8080", Target("http", "h", 8080, "/", ""), "h:8080"),
            ("http://h?x=1", Target("http", "h", 80, "/", "x=1"), "h"),
            ("http://[::1]:9000/x", Target("http", "::1", 9000, "/x", ""), "[::1]:9000"),
            ("http://[::1]/", Target("http", "::1", 80, "/", ""), "[::1]"),
            ("http://h/a/../b//c?a=1&a=2&b&c=%2F+x", Target("http", "h", 80, "/a/../b//c", "a=1&a=2&b&c=%2F+x"),
             "h"),
            ("http://h/p#frag", Target("http", "h", 80, "/p", ""), "h"),
            ("http://h/a@b?u=x@y", Target("http", "h", 80, "/a@b", "u=x@y"), "h"),
        ],
    )
    def test_good(self, raw: str, expected: Target, authority: str) -> None:
        """Scheme and host are lower-cased, path and query kept raw, default ports dropped from the authority."""
        target = parse_absolute_target(raw)
        assert target == expected
        assert target.authority == authority

    @pytest.mark.parametrize("raw", ["ftp://h/", "/relative/path", "h:443", "*", "http:/h/"])
    def test_not_absolute_form(self, raw: str) -> None:
        """Origin-form, authority-form and other schemes are refused with a hint about HTTP_PROXY."""
        with pytest.raises(BadRequest, match="HTTP_PROXY"):
            parse_absolute_target(raw)

    @pytest.mark.parametrize("raw", ["http://user:pw@h/", "http://user@h:80/x", "http://a@b@h/"])
    def test_userinfo_refused(self, raw: str) -> None:
        """User information in the target is refused."""
        with pytest.raises(BadRequest, match="user information"):
            parse_absolute_target(raw)

    @pytest.mark.parametrize(
        "raw",
        ["http://h:0/", "http://h:65536/", "http://h:abc/", "http://h:80:90/", "http://h:-1/",
         "http://h:\uff18\uff10/", "http://h:\u00b2/"],
    )
    def test_bad_port(self, raw: str) -> None:
        """Ports outside 1..65535 or not ASCII digits are a 400, never a crash."""
        with pytest.raises(BadRequest, match="bad port"):
            parse_absolute_target(raw)

    @pytest.mark.parametrize("raw", ["http:///x", "http://:80/", "http://[::1/x", "http://[::1]junk/"])
    def test_bad_host(self, raw: str) -> None:
        """A missing host or a malformed IPv6 literal is refused."""
        with pytest.raises(BadRequest):
            parse_absolute_target(raw)

    def test_again(self) -> None:
        """The same authority again (its split is kept) gives the same target under either scheme, and a bad one
        is refused every time (a refusal is never kept)."""
        for _ in range(2):
            assert parse_absolute_target("http://Bucket.Example:8080/k?a") == Target(
                "http", "bucket.example", 8080, "/k", "a")
            assert parse_absolute_target("https://h/").port == 443
            assert parse_absolute_target("http://h/").port == 80
            with pytest.raises(BadRequest, match="bad port"):
                parse_absolute_target("http://h:99999/")

    def test_long_authority(self) -> None:
        """An authority longer than any host name is split all the same (just not kept)."""
        host = "A" * 300 + ".example"
        for _ in range(2):
            assert parse_absolute_target(f"http://{host}:81/x") == Target("http", host.lower(), 81, "/x", "")


class TestParseClientScope:
    def test_header(self) -> None:
        """The credential scope of a SigV4 Authorization header is read."""
        authz = ("AWS4-HMAC-SHA256 Credential=main/20240101/eu-west-1/sqs/aws4_request, "
                 "SignedHeaders=host;x-amz-date, Signature=abc")
        assert parse_client_scope(authz, "") == ClientScope("main", "eu-west-1", "sqs")

    def test_presigned_query(self) -> None:
        """The X-Amz-Credential of a presigned URL is read (percent-decoded)."""
        query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=main%2F20240101%2Fus-east-1%2Fs3"
                 "%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Signature=abc")
        assert parse_client_scope(None, query) == ClientScope("main", "us-east-1", "s3")

    def test_header_before_query(self) -> None:
        """When both carry a scope, the header's is used."""
        authz = "AWS4-HMAC-SHA256 Credential=a/20240101/eu-west-1/sqs/aws4_request, SignedHeaders=host, Signature=x"
        query = "X-Amz-Credential=b%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
        assert parse_client_scope(authz, query) == ClientScope("a", "eu-west-1", "sqs")

    @pytest.mark.parametrize(
        ("authz", "query"),
        [
            (None, ""),
            ("", "a=1"),
            ("AWS AKIDEXAMPLE:signature", ""),
            ("AWS4-HMAC-SHA256 Credential=main/2024/eu-west-1/sqs/aws4_request", ""),
            ("AWS4-HMAC-SHA256 Credential=main/20240101/eu-west-1/aws4_request", ""),
            ("Bearer x", "X-Amz-Credential=garbage"),
        ],
    )
    def test_none(self, authz: str | None, query: str) -> None:
        """No SigV4 scope (absent, SigV2, malformed) gives None."""
        assert parse_client_scope(authz, query) is None


class TestParseClientKeyId:
    @pytest.mark.parametrize(
        ("authz", "query", "key_id"),
        [
            ("AWS4-HMAC-SHA256 Credential=mian/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, "
             "Signature=ab", "", "mian"),
            ("AWS4-HMAC-SHA256 Credential=mian/2024/broken", "", "mian"),  # a malformed scope still names it
            ("AWS4-ECDSA-P256-SHA256 Credential=mian/20240101/s3/aws4_request", "", "mian"),
            ("AWS4-HMAC-SHA256 Credential=/20240101/us-east-1/s3/aws4_request", "", ""),
            ("AWS mian:c2lnbmF0dXJl", "", "mian"),  # SigV2
            (None, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=mian%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
                   "&X-Amz-Signature=ab", "mian"),
            (None, "x-amz-credential=mian%2F2024", "mian"),
            (None, "AWSAccessKeyId=mian&Expires=1700000000&Signature=abc", "mian"),  # SigV2 presigned
            ("AWS4-HMAC-SHA256 Credential=a/20240101/eu-west-1/sqs/aws4_request", "X-Amz-Credential=b%2Fx", "a"),
            (None, "", None),
            ("Bearer abc", "a=1&b=2", None),
            ("AWS4-HMAC-SHA256 garbage", "", None),
        ],
    )
    def test_forms(self, authz: str | None, query: str, key_id: str | None) -> None:
        """Every signature form an AWS client sends names its key id; the header wins over the query."""
        assert parse_client_key_id(authz, query) == key_id


class TestSelectConnection:
    def test_header(self, config: Config) -> None:
        """X-Sigproxy-Connection selects by name (surrounding spaces ignored)."""
        assert select(config, header=" other ") == ("other", "header")

    def test_proxy_auth(self, config: Config) -> None:
        """Proxy-Authorization Basic NAME:TOKEN selects by name."""
        assert select(config, proxy_auth=basic("other", "")) == ("other", "proxy-auth")

    def test_proxy_auth_scheme_case_insensitive(self, config: Config) -> None:
        """The Basic scheme name is case-insensitive."""
        value = basic("other", "x").replace("Basic", "bAsIc")
        assert select(config, proxy_auth=value) == ("other", "proxy-auth")

    def test_client_key(self, config: Config) -> None:
        """The client's own access key id naming a connection selects it."""
        assert select(config, client=scope("other")) == ("other", "client-key")

    @pytest.mark.parametrize("target", [SQS, ES], ids=["default", "route"])
    def test_client_key_not_a_connection_is_refused(self, config: Config, target: Target) -> None:
        """An access key id that names no connection is a 407, not a fall-through to the route or the default
        (issue 12: `mian` signed as the default connection)."""
        with pytest.raises(ProxyAuthRequired) as info:
            select(config, target, client=scope("mian"))
        assert type(info.value) is ProxyAuthRequired
        assert "'mian' names no connection (closest: 'main')" in info.value.message
        assert 'unknown_key_id = "ignore"' in info.value.message

    def test_client_key_not_a_connection_on_a_listener_is_refused(self, config: Config) -> None:
        """A reverse listener's connection doesn't catch a key id that names none either."""
        with pytest.raises(ProxyAuthRequired, match="'AKIAIOSFODNN7EXAMPLE' names no connection"):
            select(config, listener=config.reverse[0], client=scope("AKIAIOSFODNN7EXAMPLE"))

    def test_unknown_key_id_ignore_falls_through(self, ignoring: Config) -> None:
        """With unknown_key_id = "ignore" (opt-in, for clients with real AWS keys) the next rule applies:
        listener, route, default."""
        real = scope("AKIAIOSFODNN7EXAMPLE")
        assert select(ignoring, client=real) == ("main", "default")
        assert select(ignoring, ES, client=real) == ("search", "route")
        assert select(ignoring, listener=ignoring.reverse[0], client=real) == ("other", "listener")
        assert select(ignoring, client=scope("other")) == ("other", "client-key")

    def test_unknown_key_id_ignore_keeps_names_strict(self, ignoring: Config) -> None:
        """"ignore" covers key ids only: a header or proxy user naming no connection is still a 407."""
        with pytest.raises(ProxyAuthRequired, match="closest: 'main'"):
            select(ignoring, header="mian")
        with pytest.raises(ProxyAuthRequired, match="closest: 'main'"):
            select(ignoring, proxy_auth=basic("mian", "x"))

    def test_client_key_id_beats_scope(self, config: Config) -> None:
        """The key id read leniently (client_key_id) is the one that selects; the scope is for region/service."""
        sel = select_connection(config, SQS, connection_header=None, proxy_authorization=None,
                                client_scope=None, client_key_id="other")
        assert (sel.connection.name, sel.how) == ("other", "client-key")
        with pytest.raises(ProxyAuthRequired, match="''"):
            select_connection(config, SQS, connection_header=None, proxy_authorization=None, client_scope=None,
                              client_key_id="")

    @pytest.mark.parametrize(
        ("given", "closest"),
        [("mian", "'main'"), ("MAIN", "'main'"), ("secrue", "'secure'"),
         ("serach", "'search'"), ("AKIAIOSFODNN7EXAMPLE", "no connection has a similar name")],
    )
    @pytest.mark.parametrize("way", ["header", "proxy_auth", "client"])
    def test_every_way_names_the_closest(self, config: Config, way: str, given: str, closest: str) -> None:
        """Every way of naming a connection fails closed on a name that matches none, naming the closest
        names (difflib) and never a token."""
        kwargs: dict[str, object] = {
            "header": {"header": given}, "proxy_auth": {"proxy_auth": basic(given, TOKEN)},
            "client": {"client": scope(given)}}[way]
        with pytest.raises(ProxyAuthRequired) as info:
            select(config, **kwargs)  # type: ignore[arg-type]
        assert (info.value.status, info.value.code) == (407, "no_connection")
        assert closest in info.value.message
        assert TOKEN not in info.value.message
        shown = [name for name in config.connections if f"'{name}'" in info.value.message]
        assert len(shown) <= 3  # the closest few, never the whole list

    def test_listener(self, config: Config) -> None:
        """A reverse listener's connection applies when the request names none."""
        assert select(config, listener=config.reverse[0]) == ("other", "listener")

    def test_listener_without_connection_falls_through(self, config: Config) -> None:
        """A reverse listener without a connection leaves the choice to routes and the default."""
        assert select(config, listener=config.reverse[1]) == ("main", "default")

    def test_route(self, config: Config) -> None:
        """A [[routes]] host glob selects its connection."""
        assert select(config, ES) == ("search", "route")

    def test_default(self, config: Config) -> None:
        """default_connection is the last resort."""
        assert select(config, SQS) == ("main", "default")

    def test_precedence(self, config: Config) -> None:
        """Header > proxy-auth > client key > listener > route > default."""
        everything = {
            "header": "main",
            "proxy_auth": basic("other", ""),
            "client": scope("plain"),
            "listener": config.reverse[0],
        }
        assert select(config, ES, **everything) == ("main", "header")  # type: ignore[arg-type]
        del everything["header"]
        assert select(config, ES, **everything) == ("other", "proxy-auth")  # type: ignore[arg-type]
        del everything["proxy_auth"]
        assert select(config, ES, **everything) == ("plain", "client-key")  # type: ignore[arg-type]
        del everything["client"]
        assert select(config, ES, **everything) == ("other", "listener")  # type: ignore[arg-type]
        assert select(config, ES) == ("search", "route")
        assert select(config, SQS) == ("main", "default")

    def test_unknown_header_name(self, config: Config) -> None:
        """An unknown X-Sigproxy-Connection is a 407 naming it, not a fall-through."""
        with pytest.raises(ProxyAuthRequired, match="'nope'") as info:
            select(config, header="nope")
        assert type(info.value) is ProxyAuthRequired
        assert info.value.status == 407

    def test_unknown_proxy_auth_name(self, config: Config) -> None:
        """An unknown user in Proxy-Authorization is a 407 naming it."""
        with pytest.raises(ProxyAuthRequired, match="'nope'") as info:
            select(config, proxy_auth=basic("nope", "x"))
        assert type(info.value) is ProxyAuthRequired

    @pytest.mark.parametrize(
        "value",
        ["Bearer abc", "Basic !!!notbase64", "Basic " + base64.b64encode(b"no-colon").decode(),
         "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Basic \u00e9\u00e9", "Basic \udcc3\udca9"],
    )
    def test_malformed_proxy_auth(self, config: Config, value: str) -> None:
        """Proxy-Authorization that is not Basic NAME:TOKEN is a BadProxyToken."""
        with pytest.raises(BadProxyToken):
            select(config, proxy_auth=value)

    def test_nothing_selects(self, no_default: Config) -> None:
        """Without any rule matching: 407 no_connection, with a message listing every way to select."""
        with pytest.raises(ProxyAuthRequired) as info:
            select(no_default, SQS)
        exc = info.value
        assert type(exc) is ProxyAuthRequired
        assert (exc.status, exc.code) == (407, "no_connection")
        for hint in ("X-Sigproxy-Connection", "HTTP_PROXY=http://NAME:TOKEN@", "AWS_ACCESS_KEY_ID=NAME",
                     "[[routes]]", "default_connection"):
            assert hint in exc.message


class TestTokens:
    def test_right_token(self, config: Config) -> None:
        """The right token via Basic selects a token-protected connection."""
        assert select(config, proxy_auth=basic("secure", TOKEN)) == ("secure", "proxy-auth")

    def test_header_plus_right_token(self, config: Config) -> None:
        """Selecting by header works when Basic carries the same connection's token."""
        assert select(config, header="secure", proxy_auth=basic("secure", TOKEN)) == ("secure", "header")

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"proxy_auth": basic("secure", "wrong")},
            {"proxy_auth": basic("secure", "")},
            {"proxy_auth": basic("secure", TOKEN + "x")},
            {"header": "secure"},
            {"header": "secure", "proxy_auth": basic("main", TOKEN)},
            {"client": scope("secure")},
        ],
        ids=["wrong", "empty", "longer", "header-only", "token-of-other-name", "client-key"],
    )
    def test_wrong_or_missing_token(self, config: Config, kwargs: dict[str, object]) -> None:
        """A wrong or missing token for a protected connection is 407 bad_proxy_token."""
        with pytest.raises(BadProxyToken) as info:
            select(config, **kwargs)  # type: ignore[arg-type]
        assert (info.value.status, info.value.code) == (407, "bad_proxy_token")
        assert TOKEN not in info.value.message

    def test_route_to_protected_connection_needs_token(self, config: Config) -> None:
        """Reaching a protected connection through a route still needs its token."""
        target = parse_absolute_target("http://api.secure.example:8080/")
        with pytest.raises(BadProxyToken):
            select(config, target)
        assert select(config, target, proxy_auth=basic("secure", TOKEN)) == ("secure", "proxy-auth")

    def test_unprotected_ignores_password(self, config: Config) -> None:
        """A connection without a token accepts any password."""
        assert select(config, proxy_auth=basic("main", "anything")) == ("main", "proxy-auth")

    def test_constant_time_compare(self, config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
        """Tokens are compared with hmac.compare_digest on bytes."""
        calls: list[tuple[object, object]] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        select(config, proxy_auth=basic("secure", TOKEN))
        with pytest.raises(BadProxyToken):
            select(config, proxy_auth=basic("secure", "guess"))
        assert calls == [(TOKEN.encode(), TOKEN.encode()), (b"guess", TOKEN.encode())]


class TestCheckHost:
    @pytest.mark.parametrize(
        "raw",
        ["https://sqs.eu-west-1.amazonaws.com/", "https://SQS.EU-WEST-1.AMAZONAWS.COM:8443/",
         "http://localhost:4566/", "http://[::1]:9000/", "http://127.0.0.1:5000/"],
    )
    def test_allowed(self, config: Config, raw: str) -> None:
        """Host globs match any port; host:port globs match that port; IPv6 literals match bracketed globs."""
        check_host(config.connections["local"], parse_absolute_target(raw))

    @pytest.mark.parametrize(
        "raw",
        ["http://localhost:4567/", "http://localhost/", "https://amazonaws.com.evil.com/",
         "http://127.0.0.2:5000/", "https://example.com/"],
    )
    def test_refused(self, config: Config, raw: str) -> None:
        """Targets outside the connection's hosts are 403 host_not_allowed, naming connection and target."""
        target = parse_absolute_target(raw)
        with pytest.raises(HostNotAllowed) as info:
            check_host(config.connections["local"], target)
        assert (info.value.status, info.value.code) == (403, "host_not_allowed")
        assert "'local'" in info.value.message
        assert f"{target.host}:{target.port}" in info.value.message


class TestResolveServiceRegion:
    @staticmethod
    def resolve(conn: ConnectionConfig, target: Target = SQS, *, service: str | None = None,
                region: str | None = None, client: ClientScope | None = None) -> tuple[str, str]:
        return resolve_service_region(conn, target, service_header=service, region_header=region,
                                      client_scope=client)

    def test_host_only(self, config: Config) -> None:
        """With nothing else, the host name gives service and region."""
        assert self.resolve(config.connections["bare"]) == ("sqs", "eu-west-1")

    def test_service_precedence(self, config: Config) -> None:
        """Service: header > connection.service > client scope > host."""
        forced, plain = config.connections["forced"], config.connections["plain"]
        client = scope("x", service="dynamodb")
        assert self.resolve(forced, service="kms", client=client)[0] == "kms"
        assert self.resolve(forced, client=client)[0] == "s3"
        assert self.resolve(plain, client=client)[0] == "dynamodb"
        assert self.resolve(plain)[0] == "sqs"

    def test_region_precedence(self, config: Config) -> None:
        """Region: header > client scope > host > connection.region."""
        plain = config.connections["plain"]
        client = scope("x", region="us-west-1")
        assert self.resolve(plain, region="ap-south-1", client=client)[1] == "ap-south-1"
        assert self.resolve(plain, client=client)[1] == "us-west-1"
        assert self.resolve(plain)[1] == "eu-west-1"
        assert self.resolve(plain, LOCAL, service="s3")[1] == "eu-central-1"

    def test_connection_region_does_not_beat_host(self, config: Config) -> None:
        """A connection's region is only a default: a regional host name wins over it."""
        assert self.resolve(config.connections["forced"]) == ("s3", "eu-west-1")

    def test_header_values_normalised(self, config: Config) -> None:
        """Override headers are stripped and lower-cased."""
        assert self.resolve(config.connections["bare"], service=" SQS ", region="EU-West-2 ") == (
            "sqs", "eu-west-2")

    @pytest.mark.parametrize(("service", "region", "client"), [
        ("s3 x", None, None), ("\udcff", None, None), ("\u00e9", None, None), ("s3/x", None, None),
        (None, "us east", None), (None, "\udcff", None), (None, "us-east-1,", None), (None, "us-east-1\tx", None),
        (None, None, ("\udcff", "s3")), (None, None, ("us-east-1", "s\u00e9")),
    ])
    def test_what_a_client_chose_must_be_a_name(self, config: Config, service: str | None, region: str | None,
                                               client: tuple[str, str] | None) -> None:
        """A service or region a client chose (override header, its own credential scope) goes into the
        signature's scope and key: one that is not an AWS name is a 400, never a 500 where it could not be
        hashed (a tester's find: X-Sigproxy-Region with a byte that is not UTF-8)."""
        scoped = scope("x", region=client[0], service=client[1]) if client else None
        with pytest.raises(UnresolvableTarget) as info:
            self.resolve(config.connections["bare"], service=service, region=region, client=scoped)
        assert info.value.status == 400

    @pytest.mark.parametrize("region", ["us-east-1", "*", "us-*,eu-west-1", "ap-southeast-2,*"])
    def test_region_sets_and_names_pass(self, config: Config, region: str) -> None:
        assert self.resolve(config.connections["bare"], region=region)[1] == region

    def test_unresolvable_service(self, config: Config) -> None:
        """No service anywhere: 400 unresolvable_target naming the connection setting and the header."""
        with pytest.raises(UnresolvableTarget) as info:
            self.resolve(config.connections["plain"], LOCAL)
        exc = info.value
        assert (exc.status, exc.code) == (400, "unresolvable_target")
        assert "set service on connection 'plain'" in exc.message
        assert "X-Sigproxy-Service" in exc.message

    def test_unresolvable_region(self, config: Config) -> None:
        """No region anywhere: 400 naming the connection's region setting and X-Sigproxy-Region."""
        with pytest.raises(UnresolvableTarget) as info:
            self.resolve(config.connections["bare"], LOCAL, service="s3")
        assert "set region on connection 'bare'" in info.value.message
        assert "X-Sigproxy-Region" in info.value.message


class TestUpstreamHeaders:
    DROPPED = [
        ("Connection", "keep-alive, X-Custom-Hop"),
        ("X-Custom-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic eDp5"),
        ("Proxy-Anything", "x"),
        ("X-Sigproxy-Connection", "main"),
        ("x-sigproxy-service", "s3"),
        ("X-Sigproxy-Region", "eu-west-1"),
        ("Authorization", "AWS4-HMAC-SHA256 Credential=..."),
        ("X-Amz-Date", "20240101T000000Z"),
        ("x-amz-security-token", "token"),
        ("Expect", "100-continue"),
        ("Host", "example.com"),
        ("Content-Length", "5"),
    ]
    KEPT = [
        ("Content-Type", "application/json"),
        ("X-Amz-Target", "DynamoDB_20120810.ListTables"),
        ("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD"),
        ("X-Amz-Meta-A", "1"),
        ("X-Amz-Meta-A", "2"),
        ("User-Agent", "curl/8"),
        ("Accept", "*/*"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("Content-MD5", "abc=="),
        ("Range", "bytes=0-1"),
    ]

    def test_strips_and_keeps(self) -> None:
        """Hop-by-hop, Connection-named, Proxy-*, X-Sigproxy-* and the client's auth go; the rest stays in
        order, with its case and repeats."""
        mixed = [h for pair in zip(self.DROPPED, self.KEPT * 2, strict=False) for h in pair]
        assert upstream_headers(mixed) == [h for h in mixed if h in self.KEPT]
        assert upstream_headers(self.KEPT) == self.KEPT

    def test_connection_tokens_case_insensitive(self) -> None:
        """Headers named in Connection are dropped whatever their case, even across several Connection headers."""
        headers = [("connection", "X-A"), ("Connection", " x-b ,close"), ("x-a", "1"), ("X-B", "2"),
                   ("X-C", "3")]
        assert upstream_headers(headers) == [("X-C", "3")]

    def test_empty(self) -> None:
        """No headers in, none out."""
        assert upstream_headers([]) == []


    def test_lower(self) -> None:
        """upstream_headers_lower keeps what upstream_headers keeps, with each lower-case name, and gives the
        lower-case names of every header given (the removed ones too), in order."""
        mixed = [h for pair in zip(self.DROPPED, self.KEPT * 2, strict=False) for h in pair]
        kept, names = upstream_headers_lower(iter(mixed))
        assert [(k, v) for k, v, _ in kept] == upstream_headers(mixed)
        assert all(low == k.lower() for k, _, low in kept)
        assert names == [k.lower() for k, _ in mixed]


class TestPresignedByClient:
    @pytest.mark.parametrize(
        "query",
        ["X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%2Fb&X-Amz-Signature=00", "x-amz-signature=1",
         "X-AMZ-CREDENTIAL=a", "a=1&X-Amz-Credential", "Signature=s&AWSAccessKeyId=k", "awsaccesskeyid=k&SIGNATURE=s",
         "Expires=1&Signature=s&AWSAccessKeyId=k&x=y"],
    )
    def test_presigned(self, query: str) -> None:
        """SigV4's signature or credential (any case, with or without a value), or SigV2's signature with its
        key id."""
        assert presigned_by_client(query)

    @pytest.mark.parametrize(
        "query",
        ["", "prefix=a&list-type=2", "Signature=s", "AWSAccessKeyId=k", "x-amz-signatures=1", "credential=x",
         "a=X-Amz-Signature", "X-Amz-Date=20250101T000000Z&X-Amz-Expires=60", "sign\u0130ature=1"],
    )
    def test_not_presigned(self, query: str) -> None:
        """No signature of the client's own: names that only look like one, or appear as a value, don't count."""
        assert not presigned_by_client(query)


class TestIsSignedHeader:
    @pytest.mark.parametrize(
        "name", ["host", "Host", "content-type", "Content-MD5", "x-amz-date", "X-Amz-Content-SHA256",
                 "x-amz-meta-anything", "X-Amz-Target"],
    )
    def test_signed(self, name: str) -> None:
        """host, content-type, content-md5 and every x-amz-* header are signed (case-insensitive)."""
        assert is_signed_header(name)

    @pytest.mark.parametrize(
        "name", ["user-agent", "expect", "x-forwarded-for", "content-length", "accept", "range",
                 "authorization", "connection", "x-amzn-trace-id", "transfer-encoding"],
    )
    def test_not_signed(self, name: str) -> None:
        """Other headers (user-agent, expect, x-forwarded-*, hop-by-hop, ...) are not signed."""
        assert not is_signed_header(name)


@pytest.mark.parametrize(("service", "url"), [
    ("s3", "http://127.0.0.1:9000/b--use1-az4--x-s3/k"),
    ("s3", "http://127.0.0.1:9000/b--use1-az4--x-s3%2Fk"),  # the bucket S3 decodes: b--use1-az4--x-s3
    ("s3", "http://127.0.0.1:9000/b--use1-az4--x-s3%2fk"),
    ("s3", "http://127.0.0.1:9000/b--use1-az4--x-%73%33/k"),  # the suffix itself encoded
    ("s3express", "https://b--use1-az4--x-s3.s3express-use1-az4.us-east-1.amazonaws.com/k"),
    ("s3-outposts", "http://127.0.0.1:9000/b--use1-az4--x-s3/k"),
])
def test_s3_express_buckets_refused(service: str, url: str) -> None:
    """An S3 Express directory bucket (session auth, not signed by sigproxy) is refused for every S3 signing
    name, found in the path as S3 decodes it (an encoded slash does not hide it)."""
    with pytest.raises(UnsupportedRequest, match="S3 Express"):
        check_shape(parse_absolute_target(url), {}, service)


def test_s3_express_zonal_endpoint_resolves_to_s3express_and_is_refused() -> None:
    """The zonal host (``<bucket>.s3express-<az>.<region>``) resolves to the signing name s3express, whose
    requests are refused, instead of to a made-up name (``s3express-use1-az4``) signed without S3's rules."""
    target = parse_absolute_target("https://b--use1-az4--x-s3.s3express-use1-az4.us-east-1.amazonaws.com/k")
    service = parse_host(target.host).service
    assert service == "s3express"
    with pytest.raises(UnsupportedRequest, match="S3 Express"):
        check_shape(target, {}, service)


def test_x_s3_suffix_outside_s3_is_not_a_bucket() -> None:
    """Outside S3's signing names the path is not a bucket."""
    check_shape(parse_absolute_target("http://127.0.0.1:9000/b--use1-az4--x-s3/k"), {}, "execute-api")


def test_pending_connection_named_in_407() -> None:
    """A request naming a store connection still onboarding is told so (not 'names no connection')."""
    import dataclasses

    from sigproxy.errors import ProxyAuthRequired
    from sigproxy.routing import parse_absolute_target, select_connection

    config = dataclasses.replace(loads(
        '[connections.main]\nhosts = ["*.amazonaws.com"]\n[connections.main.credentials]\nsource = "static"\n'
        'access_key_id = "A"\nsecret_access_key = "s"\n'), pending=frozenset({"acme"}))
    target = parse_absolute_target("https://s3.amazonaws.com/")
    with pytest.raises(ProxyAuthRequired) as info:
        select_connection(config, target, connection_header="acme", proxy_authorization=None, client_scope=None)
    assert "pending onboarding" in info.value.message


def test_closest_names_bounded_for_fleets() -> None:
    """Past 2,000 connections an unknown name gets no difflib suggestions (a cheap 407 stays cheap)."""
    from sigproxy.routing import closest_names

    assert "closest: 'tenant-00001'" in closest_names("tenant-0001", [f"tenant-{i:05d}" for i in range(10)])
    assert closest_names("x", {f"tenant-{i:05d}": 1 for i in range(5000)}) == " (none of the 5000 connections)"
