"""The credential lookup every signed request makes, on a cache hit, per kind of connection (issue 15).

    .venv/bin/python bench/credential_hit.py [--calls 100000] [--repeats 5]

What :meth:`sigproxy.handler.Handler._handle` asks of :class:`sigproxy.credentials.Providers` per request --
``ready(name, user=...)``, which answers a hit in one call (``await get(...)`` then ``identity(...)`` when it
can't) -- once the credentials are cached, for:

- ``static``: static keys (never cached: the provider answers);
- ``assume_role``: an ``assume_role`` connection with an ExternalId (the SaaS case), its credentials cached;
- ``per_user``: the same with ``user_header = true``, one end user's credentials cached.

bench/small_get.py's connection has static keys, so its rows never show the cache. STS is not called: each
expiring connection's provider is replaced by one answering made-up credentials valid for an hour, fetched
once before the timing. Times are CPU time of this process (``time.process_time``), microseconds per
request: the lowest of ``--repeats`` runs; ``x static`` is each row over the static row of the same run.
Never run by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

from sigproxy.config import loads
from sigproxy.credentials import Providers
from sigproxy.signing import Credentials

_ROLE = """
[connections.{name}]
hosts = ["*.amazonaws.com"]
region = "us-east-1"
{extra}
[connections.{name}.credentials]
source = "assume_role"
role_arn = "arn:aws:iam::111122223333:role/tenant"
external_id = "tenant-external-id-0001"
"""
CONFIG = """
[connections.static]
hosts = ["*.amazonaws.com"]
[connections.static.credentials]
source = "static"
access_key_id = "AKIDBENCH"
secret_access_key = "bench-secret-not-real"
""" + _ROLE.format(name="assume_role", extra="") + _ROLE.format(name="per_user", extra="user_header = true") + \
    'session_name = "app-${sigproxy:user}"\n'
ROWS = {"static": None, "assume_role": None, "per_user": "alice@example.com"}


class _MadeUp:
    """A provider answering made-up credentials valid for an hour (in place of STS)."""

    async def fetch(self, user: str | None = None) -> Credentials:
        return Credentials("ASIABENCH", "made-up-secret", "made-up-token", datetime.now(UTC) + timedelta(hours=1))


async def _time(providers: Providers, name: str, user: str | None, calls: int) -> float:
    """CPU microseconds per lookup, as the handler makes it (``ready``, else ``get`` + ``identity``)."""
    started = time.process_time()
    for _ in range(calls):
        if providers.ready(name, user=user) is None:
            await providers.get(name, user=user)
            providers.identity(name, user=user)
    return (time.process_time() - started) / calls * 1e6


async def run(calls: int, repeats: int) -> dict[str, list[float]]:
    providers = Providers(loads(CONFIG, env={}).connections)
    for name in ("assume_role", "per_user"):
        providers._by_name[name] = _MadeUp()
    for name, user in ROWS.items():
        creds, _ = await providers.get(name, user=user)  # fetched once: every timed call is a hit
        assert creds.access_key_id in ("AKIDBENCH", "ASIABENCH")
    results: dict[str, list[float]] = {name: [] for name in ROWS}
    for _ in range(repeats):
        for name, user in ROWS.items():
            results[name].append(await _time(providers, name, user, calls))
    await providers.cache.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = asyncio.run(run(args.calls, args.repeats))
    static = min(results["static"])
    print(f"{args.calls} cache hits per row, lowest of {args.repeats} runs; CPU microseconds per request")
    print(f"{'':14}{'us/request':>12}{'x static':>10}")
    for name, times in results.items():
        print(f"{name:14}{min(times):12.2f}{min(times) / static:10.2f}")


if __name__ == "__main__":
    main()
