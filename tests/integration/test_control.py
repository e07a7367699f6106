"""sigproxy.control over a real store (SQLite file and PostgreSQL): the registry the proxy serves from, one
namespace with the file, the change feed between replicas, and what a write hands the proxy."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sigproxy.config import Config, loads
from sigproxy.connection import SECRET_SHOWN, connection_json
from sigproxy.control import Control
from sigproxy.errors import ConfigError, Conflict, InvalidField, NotFound
from sigproxy.store import generate_key

pytestmark = pytest.mark.asyncio

FILE = """
[proxy]
state_dir = "STATE"
[store]
url = "URL"
encryption_keys = ["KEY"]
[connections.filed]
hosts = ["*.amazonaws.com"]
[connections.filed.credentials]
source = "static"
access_key_id = "AKIDFILE"
secret_access_key = "file-secret"
"""
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def static(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "region": "eu-west-1", "hosts": ["*.amazonaws.com"], **extra,
            "credentials": {"source": "static", "access_key_id": "AKIDSTORE", "secret_access_key": SECRET}}


class Replica:
    """One Control the way `sigproxy run` wires it: what it hands the proxy is recorded."""

    def __init__(self, config: Config, control: Control) -> None:
        self.config = config
        self.control = control
        self.applied: list[tuple[Config, set[str]]] = []

    @property
    def active(self) -> set[str]:
        return set(self.applied[-1][0].connections)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres").new_database())


@pytest.fixture
async def replicas(store_url: str, tmp_path: Path) -> AsyncIterator[Callable[[], Any]]:
    key = generate_key()
    made: list[tuple[Replica, asyncio.Task[None] | None]] = []

    async def make(*, watch: bool = False, file: str = FILE) -> Replica:
        from sigproxy.control import open_store

        text = file.replace("STATE", str(tmp_path)).replace("URL", store_url).replace("KEY", key)
        config = loads(text)
        store = await open_store(config)
        replica = Replica(config, None)  # type: ignore[arg-type]
        control = Control(config, store, on_apply=lambda c, changed: replica.applied.append((c, changed)))
        replica.control = control
        await control.load()
        task = None
        if watch:
            assert store is not None
            task = asyncio.get_running_loop().create_task(
                store.watch(control.refresh, interval=0.5, since=control.revision))
        made.append((replica, task))
        return replica

    yield make
    for replica, task in made:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if replica.control.store is not None:
            await replica.control.store.close()


async def test_create_get_page_delete(replicas: Callable[..., Any]) -> None:
    a = await replicas()
    assert a.active == {"filed"}
    conn = await a.control.create(static("acme"), actor="test")
    assert conn.origin == "store" and conn.state == "active"
    assert a.active == {"filed", "acme"} and a.applied[-1][1] == {"acme"}
    shown = connection_json(a.control.get("acme"))
    assert shown["credentials"]["secret_access_key"] == SECRET_SHOWN
    for i in range(5):
        await a.control.create(static(f"tenant-{i}"), actor="test")
    page = a.control.page(prefix="tenant-", limit=2)
    assert [c.name for c in page.connections] == ["tenant-0", "tenant-1"] and page.next_cursor
    names = [c.name for c in page.connections]
    while page.next_cursor:
        page = a.control.page(prefix="tenant-", limit=2, cursor=page.next_cursor)
        names += [c.name for c in page.connections]
    assert names == [f"tenant-{i}" for i in range(5)]
    assert [c.name for c in a.control.page(limit=100).connections][:2] == ["acme", "filed"]
    await a.control.delete("acme", actor="test")
    assert "acme" not in a.active and a.applied[-1][1] == {"acme"}
    with pytest.raises(NotFound):
        a.control.get("acme")


async def test_one_namespace(replicas: Callable[..., Any]) -> None:
    """A name in the file can't be created, changed or deleted through the store; a reload that brings a file
    connection named like a store one is refused."""
    a = await replicas()
    with pytest.raises(Conflict) as info:
        await a.control.create(static("filed"), actor="test")
    assert info.value.field == "name" and "config file" in info.value.message
    for op in (a.control.patch("filed", {"region": "us-east-1"}, actor="t"), a.control.delete("filed", actor="t")):
        with pytest.raises(Conflict) as info:
            await op
        assert info.value.code == "read_only"
    await a.control.create(static("acme"), actor="test")
    with pytest.raises(Conflict):
        await a.control.create(static("acme"), actor="test")
    clash = a.config.connections | {"acme": a.config.connections["filed"]}
    with pytest.raises(ConfigError) as cerr:
        a.control.set_config(Config(proxy=a.config.proxy, connections=clash, store=a.config.store))
    assert cerr.value.path == "connections.acme"


async def test_validation_names_fields(replicas: Callable[..., Any]) -> None:
    a = await replicas()
    cases = [
        ({"hosts": ["*.amazonaws.com"], "credentials": {"source": "static"}}, "name"),
        ({"name": "bad name!", "hosts": ["*"], "credentials": {"source": "static"}}, None),
        ({"name": "x", "credentials": {"source": "static", "access_key_id": "A", "secret_access_key": "s"}},
         "hosts"),
        ({"name": "x", "hosts": ["*.amazonaws.com"], "credentials": {"source": "chain"}}, "credentials.source"),
        ({"name": "x", "hosts": ["*.amazonaws.com"], "region": 5,
          "credentials": {"source": "static", "access_key_id": "A", "secret_access_key": "s"}}, "region"),
        ({"name": "x", "hosts": ["*.amazonaws.com"], "origin": "file",
          "credentials": {"source": "static", "access_key_id": "A", "secret_access_key": "s"}}, "origin"),
        ({"name": "x", "hosts": ["*.amazonaws.com"], "colour": "red",
          "credentials": {"source": "static", "access_key_id": "A", "secret_access_key": "s"}}, "colour"),
        ({"name": "x", "hosts": ["*.amazonaws.com"], "credentials": {
            "source": "assume_role", "role_arn": "arn:aws:iam::1:role/x"}}, "credentials.role_arn"),
        ({"name": "x", "hosts": ["*.amazonaws.com"], "credentials": {
            "source": "assume_role", "role_arn": "arn:aws:iam::111122223333:role/x", "base": "nope"}},
         "credentials.base"),
    ]
    for body, field in cases:
        with pytest.raises(InvalidField) as info:
            await a.control.create(body, actor="test")
        if field is not None:
            assert info.value.field == field, (body, info.value.message)
        assert info.value.message


async def test_pending_and_masked_secrets(replicas: Callable[..., Any]) -> None:
    a = await replicas()
    pending = await a.control.create({"name": "cust", "hosts": ["*.amazonaws.com"],
                                      "credentials": {"source": "assume_role"}}, actor="test")
    assert pending.state == "pending" and pending.credentials.external_id
    assert "cust" not in a.active
    assert [c.name for c in a.control.page(state="pending").connections] == ["cust"]
    seeded = await a.control.create({"name": "seeded", "hosts": ["*.amazonaws.com"],
                                     "credentials": {"source": "assume_role", "external_id": "nango-ext-1"}},
                                    actor="test")
    assert seeded.credentials.external_id == "nango-ext-1"
    await a.control.create(static("acme"), actor="test")
    # A client that read the object and sends it back with "***" keeps the secret.
    conn, result = await a.control.patch("acme", {"region": "us-west-2",
                                                  "credentials": {"secret_access_key": SECRET_SHOWN}}, actor="t")
    assert result is None and conn.region == "us-west-2"
    assert conn.credentials.secret_access_key is not None
    assert conn.credentials.secret_access_key.reveal() == SECRET
    # null removes a key (RFC 7396); nested objects merge.
    conn, _ = await a.control.patch("acme", {"region": None}, actor="t")
    assert conn.region is None and conn.credentials.access_key_id == "AKIDSTORE"


async def test_role_chain_base_in_use(replicas: Callable[..., Any]) -> None:
    a = await replicas()
    await a.control.create(static("base"), actor="test")
    await a.control.create({"name": "child", "hosts": ["*.amazonaws.com"], "credentials": {
        "source": "assume_role", "role_arn": "arn:aws:iam::111122223333:role/x", "base": "base"}}, actor="t")
    with pytest.raises(Conflict) as info:
        await a.control.delete("base", actor="test")
    assert info.value.code == "in_use" and "child" in info.value.message


async def test_feed_between_replicas(replicas: Callable[..., Any]) -> None:
    """A write through one replica is in the other's registry within 2 s; a delete too, with its name in the
    changed set (its cached credentials are dropped)."""
    a = await replicas()
    b = await replicas(watch=True)

    async def until(check: Callable[[], bool]) -> float:
        started = time.monotonic()
        while not check():
            assert time.monotonic() - started < 2.0, "not seen within 2 s"
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    await a.control.create(static("acme"), actor="a")
    await until(lambda: "acme" in b.active)
    await a.control.patch("acme", {"region": "ap-south-1"}, actor="a")
    await until(lambda: b.control.get("acme").region == "ap-south-1")
    assert b.applied[-1][1] == {"acme"}
    await a.control.delete("acme", actor="a")
    await until(lambda: "acme" not in b.active)
    assert b.applied[-1][1] == {"acme"}
    # The writer applied its own writes at once; the feed bringing them back changes nothing more.
    applied = len(a.applied)
    await a.control.refresh()
    assert len(a.applied) == applied


async def test_store_off(tmp_path: Path) -> None:
    config = loads(FILE.replace('url = "URL"', 'url = ""').replace('encryption_keys = ["KEY"]', "")
                   .replace("STATE", str(tmp_path)))
    applied: list[Config] = []
    control = Control(config, None, on_apply=lambda c, _: applied.append(c))
    await control.load()
    assert set(applied[-1].connections) == {"filed"}
    with pytest.raises(Conflict) as info:
        await control.create(static("acme"), actor="test")
    assert info.value.code == "store_off"

