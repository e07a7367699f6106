"""The SSRF guard, with real sockets on 127.0.0.1: the pool (:class:`~sigproxy.forwarding.Upstream`) in this
process against counting servers, and the real ``sigproxy run`` process against moto.

A counting server counts accepted TCP connections, so "never connected" is what the kernel saw, not a guess.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import boto3
import pytest
from aiohttp import web
from botocore.exceptions import ClientError

from sigproxy.egress import EgressResolver
from sigproxy.errors import AddressNotAllowed, UpstreamError
from sigproxy.forwarding import Upstream
from tests.conftest import Proxy, moto_config
from tests.integration.test_behaviour import error_of
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.moto_server import Moto

MOTO_HOSTS = 'hosts = ["127.0.0.1:*", "localhost:*"]'


class Counting:
    """An HTTP/1.1 server answering 200 with its label to anything; counts connections and requests."""

    def __init__(self, label: str, *, close: bool = False) -> None:
        self.label = label
        self.close = close
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                body = self.label.encode()
                conn = b"close" if self.close else b"keep-alive"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s"
                             % (len(body), conn, body))
                await writer.drain()
                if self.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(server: Counting, host: str, port: int = 0) -> AsyncIterator[int]:
    srv = await asyncio.start_server(server.handle, host, port)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


class Script:
    """A name lookup answering from a script (one answer per call, the last repeats); counts its calls."""

    def __init__(self, *answers: str) -> None:
        self.answers = answers
        self.calls = 0

    async def __call__(self, host: str, family: int) -> list[tuple[int, str]]:
        self.calls += 1
        answer = self.answers[min(self.calls, len(self.answers)) - 1]
        return [(socket.AF_INET, answer)]


def upstream(resolver: EgressResolver | None = None, connect_timeout: float = 2.0) -> Upstream:
    return Upstream(connect_timeout=connect_timeout, read_timeout=5, limit=10, resolver=resolver)


async def get(up: Upstream, url: str, *hosts: str) -> tuple[int, bytes]:
    resp = await up.send("GET", url, [], None, explicit_hosts=hosts, connection="t")
    async with resp:
        return resp.status, await resp.read()


class TestPool:
    async def test_rebinding_public_then_loopback(self) -> None:
        """The lookup answers a public address first and 127.0.0.1 next: the request connects (or tries to) to
        the public answer it checked -- one lookup -- and nothing ever reaches the loopback server; the next
        lookup's loopback answer is refused before any connection."""
        loopback = Counting("loopback")
        async with serving(loopback, "127.0.0.1") as port:
            lookup = Script("93.184.215.14", "127.0.0.1")
            async with upstream(EgressResolver(lookup=lookup, cache_ttl=0), connect_timeout=1) as up:
                with pytest.raises(UpstreamError):  # unreachable here, or silent for a second: either way not us
                    await get(up, f"http://rebind.test:{port}/", "*.test:*")
                assert lookup.calls == 1
                assert loopback.connections == 0
                with pytest.raises(AddressNotAllowed, match=re.escape("rebind.test resolves to 127.0.0.1, a loopback")):
                    await get(up, f"http://rebind.test:{port}/", "*.test:*")
                assert lookup.calls == 2
        assert loopback.connections == 0

    async def test_rebinding_connection_goes_to_the_checked_answer(self) -> None:
        """Same port on 127.0.0.2 (named by an IP-literal entry) and 127.0.0.1 (named by nobody). The first
        lookup says 127.0.0.2, every later one 127.0.0.1: the request is served by 127.0.0.2 -- the answer that
        was checked -- and the next connection (the first closed) is refused, 127.0.0.1 never contacted."""
        permitted, forbidden = Counting("127.0.0.2", close=True), Counting("127.0.0.1")
        async with serving(permitted, "127.0.0.2") as port, serving(forbidden, "127.0.0.1", port):
            lookup = Script("127.0.0.2", "127.0.0.1")
            async with upstream(EgressResolver(lookup=lookup, cache_ttl=0)) as up:
                hosts = ("127.0.0.2:*", "*.test:*")
                assert await get(up, f"http://rebind.test:{port}/", *hosts) == (200, b"127.0.0.2")
                assert lookup.calls == 1
                with pytest.raises(AddressNotAllowed, match=re.escape("resolves to 127.0.0.1")):
                    await get(up, f"http://rebind.test:{port}/", *hosts)
                assert lookup.calls == 2
        assert (permitted.connections, forbidden.connections) == (1, 0)

    async def test_literal_refused_before_connecting(self) -> None:
        """aiohttp never resolves an IP literal; the guard checks it before the pool is asked for anything."""
        server = Counting("x")
        async with serving(server, "127.0.0.1") as port, upstream() as up:
            with pytest.raises(AddressNotAllowed, match=re.escape("127.0.0.1 is a loopback address")):
                await get(up, f"http://127.0.0.1:{port}/", "127.*:*")
            with pytest.raises(AddressNotAllowed, match=re.escape("carries 127.0.0.1")):
                await get(up, f"http://[::ffff:127.0.0.1]:{port}/", "[::ffff:*]:*")
            assert await get(up, f"http://127.0.0.1:{port}/", f"127.0.0.1:{port}") == (200, b"x")
        assert server.connections == 1

    async def test_kept_alive_connection_not_reused_by_a_connection_that_named_nothing(self) -> None:
        """One connection names localhost and leaves a keep-alive connection in the pool; another connection
        whose glob only matches localhost is refused, though the pool has a connection to hand out."""
        server = Counting("kept")
        async with serving(server, "127.0.0.1") as port, upstream() as up:
            url = f"http://localhost:{port}/"
            assert await get(up, url, f"localhost:{port}") == (200, b"kept")
            with pytest.raises(AddressNotAllowed, match=re.escape("localhost resolves to 127.0.0.1")):
                await get(up, url, "local*:*")
            assert await get(up, url, f"localhost:{port}") == (200, b"kept")
        assert server.requests == 2


def _moto_port(moto: Moto) -> int:
    return int(moto.endpoint.rsplit(":", 1)[1])


def _config(moto: Moto, hosts: str, proxy: str = "") -> str:
    text = moto_config(moto, connection='service = "s3"', proxy=proxy)
    assert MOTO_HOSTS in text
    return text.replace(MOTO_HOSTS, f"hosts = {hosts}")


def _object_exists(moto: Moto, key: str) -> bool:
    client = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                          aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)
    try:
        client.head_object(Bucket=moto.bucket, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise
    return True


class TestThroughSigproxy:
    @pytest.mark.parametrize(("hosts", "host"), [('["local*:*"]', "localhost"), ('["127.*:*"]', "127.0.0.1")])
    def test_glob_does_not_reach_moto(self, moto: Moto, sigproxy_factory: Callable[..., Proxy],
                                      hosts: str, host: str) -> None:
        """A glob matching the target is enough to sign for it, never to reach a loopback address: 403 and the
        PutObject never arrives at moto."""
        proxy = sigproxy_factory(_config(moto, hosts))
        key = f"ssrf/glob-{host}.txt"
        r = curl(proxy, "-X", "PUT", "--data-binary", "payload",
                 f"http://{host}:{_moto_port(moto)}/{moto.bucket}/{key}")
        assert status_of(r) == 403, r
        err = error_of(r)
        assert err["code"] == "address_not_allowed"
        assert "loopback" in err["message"] and "name it explicitly in connection main's hosts" in err["message"]
        assert not _object_exists(moto, key)

    def test_private_networks_admit_a_glob(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """private_networks names the networks instead of the hosts (VPC endpoints with private DNS): a glob
        target resolving into them is reached and accepted by moto; outside them it stays refused."""
        port = _moto_port(moto)
        text = _config(moto, '["local*:*"]')
        inside = sigproxy_factory(text.replace('service = "s3"', 'service = "s3"\nprivate_networks = ["127.0.0.0/8"]'))
        r = curl(inside, f"http://localhost:{port}/")
        assert status_of(r) == 200, r
        outside = sigproxy_factory(text.replace('service = "s3"', 'service = "s3"\nprivate_networks = ["10.0.0.0/8"]'))
        r = curl(outside, f"http://localhost:{port}/")
        assert status_of(r) == 403 and error_of(r)["code"] == "address_not_allowed", r
        assert "private_networks" in error_of(r)["message"]

    def test_exact_name_reaches_moto(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """The operator named localhost:PORT: signed, sent, and accepted by moto's signature check."""
        port = _moto_port(moto)
        proxy = sigproxy_factory(_config(moto, f'["localhost:{port}"]'))
        r = curl(proxy, f"http://localhost:{port}/")
        assert status_of(r) == 200, r
        assert f"<Name>{moto.bucket}</Name>" in r.stdout
        put = curl(proxy, "-X", "PUT", "--data-binary", "payload", f"http://localhost:{port}/{moto.bucket}/ssrf/named")
        assert status_of(put) == 200, put
        assert _object_exists(moto, "ssrf/named")

    @pytest.mark.parametrize(("hosts", "url", "cls"), [
        ('["169.254.*"]', "http://169.254.169.254/latest/meta-data/", "link-local"),
        ('["[fd00:ec2::*]"]', "http://[fd00:ec2::254]/latest/meta-data/", "link-local"),
        ('["[64:ff9b::*]"]', "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", "link-local"),
        ('["0.0.0.*"]', "http://0.0.0.0/", "unspecified"),
    ])
    def test_metadata_service_refused_without_connecting(self, moto: Moto, sigproxy_factory: Callable[..., Proxy],
                                                          hosts: str, url: str, cls: str) -> None:
        """Answered 403 at once: a connection attempt would have ended in 502 (no route) or waited out the
        30 s connect_timeout (504)."""
        proxy = sigproxy_factory(_config(moto, hosts, proxy="connect_timeout = 30"))
        started = time.monotonic()
        r = curl(proxy, "-g", url)
        assert status_of(r) == 403, r
        assert time.monotonic() - started < 10
        err = error_of(r)
        assert err["code"] == "address_not_allowed"
        assert f"a {cls} address" in err["message"]


async def test_redirect_is_passed_back_not_followed(moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    """An upstream 302 goes back to the client as is; its Location is never visited."""
    landing = Counting("landing")
    async with serving(landing, "127.0.0.1") as landing_port:
        location = f"http://127.0.0.1:{landing_port}/landing"

        async def redirect(request: web.Request) -> web.Response:
            return web.Response(status=302, headers={"Location": location})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", redirect)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            proxy = sigproxy_factory(_config(moto, '["127.0.0.1:*"]'))
            r: subprocess.CompletedProcess[str] = await asyncio.to_thread(
                curl, proxy, "-D", "-", f"http://127.0.0.1:{port}/start")
        finally:
            await runner.cleanup()
    assert status_of(r) == 302, r
    assert f"location: {location}" in r.stdout.lower()
    assert landing.connections == 0
