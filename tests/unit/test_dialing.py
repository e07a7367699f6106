"""``dial``, ``sign_host`` and ``tls_server_name`` (sigproxy/dialing.py, issue 17 item 2): the config keys and
their errors, which target is signed and where the connection goes, service and region from the signed host,
and the upstream pool against real sockets on 127.0.0.1 -- the connection goes to the dial address with the
``Host`` header as signed, an explicit dial passes the egress guard while a client-named address does not, and
kept-alive connections are shared only by requests with the same dial address and TLS name. End to end
(moto checking signatures, the AWS CLI): tests/integration/test_dial.py."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from sigproxy.config import loads
from sigproxy.dialing import Dial, Redirect
from sigproxy.errors import AddressNotAllowed, ConfigError, UpstreamError
from sigproxy.forwarding import Upstream
from sigproxy.routing import Target, parse_absolute_target, redirect_target, resolve_service_region
from tests.unit.test_h1conn import OK, answer_each, serving

CONN = """
[connections.main]
hosts = ["*.amazonaws.com"]
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "not-a-real-secret"
"""


def reverse(extra: str) -> str:
    return CONN + f'[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "https://s3.us-east-1.amazonaws.com"\n{extra}\n'


def route(extra: str, host: str = "*.s3.us-east-1.amazonaws.com") -> str:
    return CONN + f'[[routes]]\nhost = "{host}"\nconnection = "main"\n{extra}\n'


class TestConfig:
    def test_reverse_keys(self) -> None:
        cfg = loads(reverse('dial = "10.0.0.5:8443"\nsign_host = "s3.amazonaws.com:444"\n'
                            'tls_server_name = "VPCE.example.com"'))
        assert cfg.reverse[0].redirect == Redirect(dial=("10.0.0.5", 8443), sign_host=("s3.amazonaws.com", 444),
                                                   tls_server_name="vpce.example.com")
        assert not cfg.redirecting_routes

    def test_defaults_and_forms(self) -> None:
        assert loads(reverse("")).reverse[0].redirect is None
        cfg = loads(reverse('dial = "[fd00::5]"'))
        assert cfg.reverse[0].redirect == Redirect(dial=("fd00::5", None))
        cfg = loads(route('dial = "bucket.vpce-0abc.s3.us-east-1.vpce.amazonaws.com"'))
        assert cfg.routes[0].redirect == Redirect(dial=("bucket.vpce-0abc.s3.us-east-1.vpce.amazonaws.com", None))
        assert cfg.redirecting_routes
        assert not loads(route("")).redirecting_routes

    @pytest.mark.parametrize(("line", "key", "message"), [
        ('dial = "https://10.0.0.5"', "dial", "not a URL"),
        ('dial = "10.0.0.5/x"', "dial", "not a URL"),
        ('dial = "*.example.com"', "dial", "not a glob"),
        ('dial = "10.0.0.5:0"', "dial", "bad port"),
        ('dial = "10.0.0.5:70000"', "dial", "bad port"),
        ('dial = "10.0.0.5:"', "dial", "bad port"),
        ('dial = "fd00::5"', "dial", "expected a host name or IP address"),
        ('dial = "bad_host:80"', "dial", "expected a host name or IP address"),
        ('dial = ""', "dial", "is empty"),
        ("dial = 443", "dial", "expected a string"),
        ('sign_host = "s3 .amazonaws.com"', "sign_host", "expected a host name"),
        ('tls_server_name = "name:443"', "tls_server_name", "expected a host name"),
    ])
    def test_bad_values_name_the_key(self, line: str, key: str, message: str) -> None:
        for text, where in ((reverse(line), f"reverse[0].{key}"), (route(line), f"routes[0].{key}")):
            with pytest.raises(ConfigError, match=message) as info:
                loads(text)
            assert info.value.path == where

    def test_misspelt_key_is_unknown_with_a_suggestion(self) -> None:
        with pytest.raises(ConfigError, match=r"unknown key; did you mean 'dial'\?") as info:
            loads(reverse('dail = "10.0.0.5"'))
        assert info.value.path == "reverse[0].dail"
        with pytest.raises(ConfigError, match=r"did you mean 'sign_host'\?"):
            loads(route('signhost = "s3.amazonaws.com"'))


class TestRedirect:
    target = Target("https", "b.s3.us-east-1.amazonaws.com", 443, "/k", "")

    def test_dial_only_keeps_the_target(self) -> None:
        out, dial = Redirect(dial=("10.0.0.5", None)).apply(self.target)
        assert out == self.target
        assert dial == Dial("10.0.0.5", None, "10.0.0.5", explicit=True)

    def test_sign_host_alone_dials_where_the_request_was_going(self) -> None:
        out, dial = Redirect(sign_host=("s3.amazonaws.com", None)).apply(self.target)
        assert (out.host, out.port, out.authority, out.path) == ("s3.amazonaws.com", 443, "s3.amazonaws.com", "/k")
        assert dial == Dial("b.s3.us-east-1.amazonaws.com", 443, "b.s3.us-east-1.amazonaws.com", explicit=False)
        out, _ = Redirect(sign_host=("s3.amazonaws.com", 8443)).apply(self.target)
        assert out.authority == "s3.amazonaws.com:8443"

    def test_tls_server_name(self) -> None:
        _, dial = Redirect(dial=("10.0.0.5", 443), tls_server_name="vpce.example.com").apply(self.target)
        assert dial == Dial("10.0.0.5", 443, "vpce.example.com", explicit=True)
        assert str(dial) == "10.0.0.5:443"

    def test_listener_and_first_matching_route(self) -> None:
        cfg = loads(route('dial = "10.0.0.5"') + '[[routes]]\nhost = "*.amazonaws.com"\nconnection = "main"\n'
                    + '[[routes]]\nhost = "storage.internal"\nconnection = "main"\n'
                    'sign_host = "s3.eu-west-1.amazonaws.com"\n'
                    + '[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "http://storage.internal"\n')
        _, dial = redirect_target(cfg, self.target, None)
        assert dial is not None and dial.host == "10.0.0.5"
        other = Target("https", "sts.amazonaws.com", 443, "/", "")
        assert redirect_target(cfg, other, None) == (other, None)  # the first match has no redirect
        # A reverse listener takes its own settings, never the routes'.
        listener_target = parse_absolute_target("http://storage.internal/b")
        assert redirect_target(cfg, listener_target, cfg.reverse[0]) == (listener_target, None)

    def test_service_and_region_come_from_the_signed_host(self) -> None:
        cfg = loads(CONN + '[[routes]]\nhost = "storage.internal"\nconnection = "main"\n'
                    'sign_host = "s3.eu-west-1.amazonaws.com"\n')
        client = parse_absolute_target("http://storage.internal/b/k")
        signed, _ = redirect_target(cfg, client, None)
        conn = cfg.connections["main"]
        assert resolve_service_region(conn, signed, service_header=None, region_header=None,
                                      client_scope=None) == ("s3", "eu-west-1")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(ca: trustme.CA, names: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)

    def sni(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        names.append(name or "")
    ctx.sni_callback = sni  # type: ignore[assignment]
    return ctx


SIGNED_URL = "https://s3.us-east-1.amazonaws.com/b/k"
HOST = [("Host", "s3.us-east-1.amazonaws.com")]


class TestPool:
    async def test_connects_to_the_dial_address_with_the_host_as_given(self) -> None:
        async with serving(answer_each(OK)) as (server, port), Upstream(connect_timeout=2, read_timeout=5,
                                                                        limit=4) as up:
            dial = Dial("127.0.0.1", port, "127.0.0.1", explicit=True)
            # No hosts name 127.0.0.1: the operator's dial is what permits it.
            resp = await up.send("GET", "http://s3.us-east-1.amazonaws.com/b/k", HOST, None, connection="t",
                                 dial=dial)
            async with resp:
                assert (resp.status, await resp.read()) == (200, b"ok")
        assert server.heads == [b"GET /b/k HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com\r\n\r\n"]

    async def test_a_dial_the_operator_did_not_write_is_guarded(self) -> None:
        async with serving(answer_each(OK)) as (server, port), Upstream(connect_timeout=2, read_timeout=5,
                                                                        limit=4) as up:
            # sign_host without dial: the client-named address is checked as ever.
            dial = Dial("127.0.0.1", port, "127.0.0.1", explicit=False)
            with pytest.raises(AddressNotAllowed, match=r"127\.0\.0\.1 is a loopback address"):
                await up.send("GET", "http://s3.us-east-1.amazonaws.com/", HOST, None, connection="t", dial=dial)
            # The explicit dial opens a connection; a client-steered request to the same address can't reuse it.
            explicit = Dial("127.0.0.1", port, "127.0.0.1", explicit=True)
            async with await up.send("GET", "http://s3.us-east-1.amazonaws.com/", HOST, None, connection="t",
                                     dial=explicit) as resp:
                await resp.read()
            with pytest.raises(AddressNotAllowed):
                await up.send("GET", "http://s3.us-east-1.amazonaws.com/", HOST, None, connection="t", dial=dial)
        assert server.connections == 1

    async def test_tls_name_follows_the_dial_unless_overridden_and_keys_the_pool(self, ca: trustme.CA) -> None:
        names: list[str] = []
        async with serving(answer_each(OK), tls=tls_server(ca, names)) as (server, port):
            with ca.cert_pem.tempfile() as cafile:
                async with Upstream(connect_timeout=2, read_timeout=5, limit=8, extra_ca_file=Path(cafile)) as up:
                    async def get(tls_name: str) -> None:
                        dial = Dial("127.0.0.1", port, tls_name, explicit=True)
                        async with await up.send("GET", SIGNED_URL, HOST, None, connection="t", dial=dial) as resp:
                            assert (resp.status, await resp.read()) == (200, b"ok")

                    await get("127.0.0.1")  # the certificate names the dialled address: verified, no SNI sent
                    await get("localhost")  # another TLS name: a connection of its own
                    await get("localhost")  # same dial and name: kept alive and reused
                    await get("127.0.0.1")
                    assert server.connections == 2
                    # The signed host is not what TLS checks: this certificate doesn't name it.
                    with pytest.raises(UpstreamError, match="CERTIFICATE_VERIFY_FAILED"):
                        await get("s3.us-east-1.amazonaws.com")
        assert names == ["", "localhost", "s3.us-east-1.amazonaws.com"]
