"""The upstream side: one pooled aiohttp ``ClientSession`` that sends signed requests exactly as signed.

Owns: connection pooling, timeouts, TLS to the upstream, and translating aiohttp's errors into
:mod:`sigproxy.errors` at this one boundary.
Must not: sign, choose routes, follow redirects, decompress, or retry non-idempotent requests.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .errors import ConfigError, UpstreamError, UpstreamTimeout

__all__ = ["Upstream", "upstream_tls_context"]

# aiohttp adds these on its own unless told not to; a signed request must carry only what was signed.
_SKIP_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


@contextmanager
def _map_errors(host: str) -> Iterator[None]:
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"upstream {host} timed out") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamError(f"cannot connect to upstream {host}: {exc.os_error.strerror or exc}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamError(f"upstream {host} failed: {type(exc).__name__}: {exc}") from exc


def upstream_tls_context(extra_ca_file: Path | None) -> ssl.SSLContext:
    """Client TLS for upstreams: the system store plus ``extra_ca_file``; ALPN offers http/1.1 only.

    Raises :class:`~sigproxy.errors.ConfigError` when the extra CA file can't be loaded.
    """
    ctx = ssl.create_default_context()
    if extra_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(extra_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("proxy.upstream_ca_file", f"cannot load {str(extra_ca_file)!r}: {exc}") from exc
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Upstream:
    """Owner of the upstream connection pool; an async context manager."""

    __slots__ = ("_connect_timeout", "_insecure", "_limit", "_read_timeout", "_session", "_ssl")

    def __init__(self, *, connect_timeout: float, read_timeout: float, limit: int,
                 extra_ca_file: Path | None = None) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._limit = limit
        self._ssl = upstream_tls_context(extra_ca_file)
        self._insecure = ssl.create_default_context()
        self._insecure.check_hostname = False
        self._insecure.verify_mode = ssl.CERT_NONE
        self._insecure.set_alpn_protocols(["http/1.1"])
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Upstream:
        connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, ssl=self._ssl,
                                         enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout,
                                          sock_read=self._read_timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, method: str, url: str, headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None, *,
        verify_tls: bool = True,
    ) -> aiohttp.ClientResponse:
        """Send one request (``url`` already percent-encoded, sent as is) and return once the response
        headers are in. The caller reads the body with :meth:`iter_body` and must release the response
        (``async with response:``)."""
        if self._session is None:
            raise RuntimeError("Upstream is not open")
        target = URL(url, encoded=True)
        with _map_errors(target.host or "?"):
            return await self._session.request(
                method,
                target,
                headers=CIMultiDict(headers),
                data=body,
                allow_redirects=False,
                compress=None,
                proxy=None,
                ssl=self._insecure if not verify_tls and target.scheme == "https" else True,
            )

    @staticmethod
    async def read_small(response: aiohttp.ClientResponse) -> bytes:
        """A whole (small, known-length) response body; errors mapped."""
        with _map_errors(response.url.host or "?"):
            return await response.read()

    @staticmethod
    async def iter_body(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The response body as it arrives; errors mapped."""
        with _map_errors(response.url.host or "?"):
            async for chunk in response.content.iter_any():
                yield chunk
