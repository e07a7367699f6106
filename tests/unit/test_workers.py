"""The pieces of ``workers = N`` on their own: the ``workers`` key, the channel (a real socketpair), a worker's
copies of the broker's credentials (one ask per key, asked again at the broker's refresh time, failures held
for the broker's back-off), the fingerprint, and summing metrics across processes."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sigproxy.authlimit import AuthFailures
from sigproxy.config import loads
from sigproxy.errors import ConfigError, CredentialsUnavailable, TooManyAuthFailures
from sigproxy.metrics import Metrics
from sigproxy.tasks import TaskSet
from sigproxy.workers.client import BrokerClient
from sigproxy.workers.cpus import available_cpus
from sigproxy.workers.wire import Message, Peer, fingerprint

CONN = """
[connections.base]
hosts = ["*.amazonaws.com"]
[connections.base.credentials]
source = "static"
access_key_id = "AKIDBASE"
secret_access_key = "base-secret"

[connections.acme]
hosts = ["*.amazonaws.com"]
[connections.acme.credentials]
source = "assume_role"
role_arn = "arn:aws:iam::111122223333:role/acme"
base = "base"
"""


def test_workers_key() -> None:
    """Absent: ``None`` (one per usable CPU, resolved by ``sigproxy run``); 1 and more are taken; 0, negatives
    and non-integers are refused naming ``proxy.workers``; ``--workers`` overrides the file."""
    assert loads(CONN, env={}).proxy.workers is None
    assert loads("[proxy]\nworkers = 3\n" + CONN, env={}).proxy.workers == 3
    assert loads("[proxy]\nworkers = 3\n" + CONN, env={}, workers=1).proxy.workers == 1
    for value in ("0", "-2", '"2"', "1.5", "true"):
        with pytest.raises(ConfigError) as info:
            loads(f"[proxy]\nworkers = {value}\n" + CONN, env={})
        assert info.value.path == "proxy.workers"


@pytest.mark.parametrize(("files", "expected"), [
    ({}, None),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "50000 100000\n"}, 1),  # a 500m container limit: one worker
    ({"cpu.max": "150000 100000\n"}, 1),
    ({"cpu.max": "100000000 100000\n"}, None),  # a limit above the CPUs there are changes nothing
    ({"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu.cfs_quota_us": "100000\n", "cpu.cfs_period_us": "100000\n"}, 1),
    ({"cpu.max": "garbage"}, None),
])
def test_available_cpus(tmp_path: Path, files: dict[str, str], expected: int | None) -> None:
    """The CPUs the process may run on, capped by its cgroup's CPU limit (v2 or v1), at least 1."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    cpus = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == (cpus if expected is None else min(cpus, expected))
    assert available_cpus() >= 1


def test_fingerprint_follows_the_role_chain_and_secrets() -> None:
    """Equal settings, equal digests; a changed base secret (down the chain) or another key changes them."""
    key = os.urandom(32)
    one = loads(CONN, env={}).connections
    same = loads(CONN, env={}).connections
    other_secret = loads(CONN.replace("base-secret", "base-secret-2"), env={}).connections
    assert fingerprint(key, one, "acme") == fingerprint(key, same, "acme")
    assert fingerprint(key, one, "acme") != fingerprint(key, other_secret, "acme")
    assert fingerprint(key, one, "acme") != fingerprint(os.urandom(32), one, "acme")
    assert "base-secret" not in fingerprint(key, one, "base")


def test_auth_failures_are_passed_on_once() -> None:
    """A failure seen here is passed on (the supervisor tells the siblings); one seen elsewhere counts here and is
    not passed on again, so ``auth_failures`` counts the group's failures per address."""
    failures = AuthFailures(3, 60.0)
    told: list[str] = []
    failures.on_record = told.append
    failures.record("192.0.2.1")
    failures.record("192.0.2.1", elsewhere=True)
    failures.record("192.0.2.1", elsewhere=True)
    assert told == ["192.0.2.1"]
    with pytest.raises(TooManyAuthFailures):
        failures.check("192.0.2.1")


def test_metrics_sum_across_processes() -> None:
    """A snapshot added to another process's metrics sums counters and histogram buckets."""
    a, b, total = Metrics(), Metrics(), Metrics()
    a.record("acme", "s3", "200", 0.002, bytes_down=10)
    b.record("acme", "s3", "200", 0.5, bytes_down=5)
    b.record("other", "sqs", "502", 0.01)
    total.add(a.snapshot())
    total.add(b.snapshot())
    assert total.requests.values == {("acme", "s3", "200"): 2.0, ("other", "sqs", "502"): 1.0}
    assert total.bytes_down.values == {("acme",): 15.0}
    counts, seconds = total.latency.series[("acme",)]
    assert sum(counts) == 2 and seconds[0] == pytest.approx(0.502)
    with pytest.raises(ValueError, match="labels"):
        Metrics(connection_label=False).add(a.snapshot())


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@asynccontextmanager
async def channel(answer: Callable[[Message], Awaitable[Any]], clock: Clock) -> AsyncIterator[BrokerClient]:
    """A :class:`BrokerClient` on one end of a real socketpair, ``answer`` serving the other end."""
    left, right = socket.socketpair()

    async def nothing(_: Message) -> Any:
        raise AssertionError("the broker asks nothing here")

    r1, w1 = await asyncio.open_unix_connection(sock=left)
    r2, w2 = await asyncio.open_unix_connection(sock=right)
    worker = Peer(r1, w1, handler=nothing, on_notice=lambda _: None)
    broker = Peer(r2, w2, handler=answer, on_notice=lambda _: None)
    tasks = TaskSet()
    tasks.spawn(worker.run(), name="worker-end")
    tasks.spawn(broker.run(), name="broker-end")
    client = BrokerClient(worker, b"k" * 32, clock=clock)
    try:
        yield client
    finally:
        await client.close()
        await tasks.cancel_all()


async def test_one_ask_per_key_and_again_at_the_refresh_time() -> None:
    """100 concurrent cold lookups are one ask; the copy is used without asking until the broker's advisory
    window, then used while one background ask runs; past the mandatory window lookups wait for the broker."""
    clock = Clock()
    asks: list[Message] = []
    gate = asyncio.Event()

    async def answer(message: Message) -> Any:
        asks.append(message)
        await gate.wait()
        expires = clock.now + timedelta(hours=1)
        return {"credentials": {"access_key_id": f"ASIA{len(asks)}", "secret_access_key": "s",
                                "session_token": "t", "expires_at": expires.timestamp()},
                "refresh_at": (expires - timedelta(minutes=15)).timestamp(),
                "mandatory_at": (expires - timedelta(minutes=5)).timestamp()}

    async with channel(answer, clock) as client:
        lookups = asyncio.gather(*(client.get("acme", "fp", None) for _ in range(100)))
        await asyncio.sleep(0.05)
        gate.set()
        results = await lookups
        assert len(asks) == 1 and asks[0]["name"] == "acme" and asks[0]["fingerprint"] == "fp"
        assert {creds.access_key_id for creds, _ in results} == {"ASIA1"}
        assert client.stats.misses == 100
        clock.now += timedelta(minutes=40)
        assert (await client.get("acme", "fp", None))[1] is True and len(asks) == 1
        clock.now += timedelta(minutes=6)  # inside the advisory window: the copy, and one ask behind it
        creds, hit = await client.get("acme", "fp", None)
        assert (creds.access_key_id, hit) == ("ASIA1", True)
        await asyncio.sleep(0.05)
        assert len(asks) == 2
        assert (await client.get("acme", "fp", None))[0].access_key_id == "ASIA2"
        await client.get("acme", "other-fp", "alice")  # another key: another ask
        assert len(asks) == 3 and asks[2]["user"] == "alice"


async def test_a_failure_is_held_for_the_broker_back_off() -> None:
    """The broker's error comes back as the same typed error, and is answered locally until its retry time."""
    clock = Clock()
    asks: list[Message] = []

    async def answer(message: Message) -> Any:
        asks.append(message)
        return {"failed": {"type": "credentials_unavailable", "message": "connection 'acme': STS AssumeRole failed: "
                           "AccessDenied: nope", "sts_code": "AccessDenied", "sts_message": "nope"},
                "retry_at": (clock.now + timedelta(seconds=30)).timestamp()}

    async with channel(answer, clock) as client:
        for _ in range(5):
            with pytest.raises(CredentialsUnavailable) as info:
                await client.get("acme", "fp", None)
            assert info.value.sts_code == "AccessDenied" and "AssumeRole failed" in info.value.message
        assert len(asks) == 1
        clock.now += timedelta(seconds=31)
        with pytest.raises(CredentialsUnavailable):
            await client.get("acme", "fp", None)
        assert len(asks) == 2
