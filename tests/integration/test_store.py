"""The connection store against real databases: SQLite (a file) and PostgreSQL (the session's cluster).

No mocks: every test opens :class:`Store` on a fresh database, and the secrecy tests read that database raw.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from sigproxy.store import (
    Keyring,
    NameTaken,
    NotStored,
    SchemaMismatch,
    StaleRevision,
    Store,
    UnreadableRow,
    current,
    generate_key,
    head,
    redacted,
    upgrade,
)
from sigproxy.store.database import create_engine
from sigproxy.store.models import ConnectionRow
from sigproxy.tasks import TaskSet
from tests.servers.postgres import Postgres

SECRET_PATHS = (("token",), ("client_secret",), ("credentials", "secret_access_key"),
                ("credentials", "session_token"), ("credentials", "api_key"), ("credentials", "password"))


def table(region: str = "eu-west-1", secret: str | None = None, **extra: Any) -> dict[str, Any]:
    creds: dict[str, Any] = {"source": "static", "access_key_id": "AKIDEXAMPLE"}
    if secret is not None:
        creds["secret_access_key"] = secret
    return {"region": region, "hosts": ["*.amazonaws.com"], "credentials": creds, **extra}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.new_database()


@pytest.fixture
def key() -> str:
    return generate_key()


@pytest.fixture
async def store(db_url: str, key: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url, Keyring.from_strings([key]), secret_paths=SECRET_PATHS)
    try:
        yield s
    finally:
        await s.close()


async def test_crud(store: Store) -> None:
    assert await store.get("acme") is None
    assert await store.revision() == 0
    created = await store.create("acme", "pending", table(secret="s3cr3t"), actor="alice")
    assert created.revision == 1 and created.state == "pending"
    assert created.created_at.tzinfo is not None
    got = await store.get("acme")
    assert got is not None
    assert got.table == table(secret="s3cr3t")
    assert (got.name, got.state, got.revision) == ("acme", "pending", 1)
    assert got.created_at == created.created_at
    assert "s3cr3t" not in repr(got)

    replaced = await store.replace("acme", "active", table("us-east-1", secret="n3w"), actor="bob")
    assert replaced.revision == 2 and replaced.created_at == created.created_at
    assert replaced.updated_at >= created.updated_at
    got = await store.get("acme")
    assert got is not None and got.state == "active" and got.table == table("us-east-1", secret="n3w")

    same = await store.replace("acme", "active", table("us-east-1", secret="n3w"), actor="bob")
    assert same.revision == 2 and await store.revision() == 2  # nothing changed: no new revision

    await store.delete("acme", actor="carol")
    assert await store.get("acme") is None
    assert await store.revision() == 3
    with pytest.raises(NotStored):
        await store.delete("acme", actor="carol")
    with pytest.raises(NotStored):
        await store.replace("acme", "active", table(), actor="carol")
    with pytest.raises(NotStored):
        await store.replace("ghost", "active", table(), actor="carol")


async def test_bad_arguments(store: Store) -> None:
    with pytest.raises(ValueError, match="state"):
        await store.create("acme", "enabled", table(), actor="a")
    with pytest.raises(ValueError, match="name"):
        await store.create("x" * 65, "active", table(), actor="a")
    with pytest.raises(ValueError, match="JSON"):
        await store.create("acme", "active", {"when": object()}, actor="a")
    with pytest.raises(ValueError, match="limit"):
        await store.page(limit=0)
    assert await store.revision() == 0


async def test_name_taken_and_tombstone_recreate(store: Store) -> None:
    await store.create("acme", "active", table(secret="one"), actor="a")
    with pytest.raises(NameTaken, match="acme"):
        await store.create("acme", "active", table(), actor="a")
    await store.delete("acme", actor="a")
    again = await store.create("acme", "pending", table("ap-south-1", secret="two"), actor="a")
    assert again.revision == 3
    got = await store.get("acme")
    assert got is not None and got.state == "pending" and got.table == table("ap-south-1", secret="two")


async def test_stale_revision(store: Store) -> None:
    first = await store.create("acme", "active", table(), actor="a")
    await store.create("other", "active", table(), actor="a")
    ok = await store.replace("acme", "active", table("us-west-2"), actor="a", if_revision=first.revision)
    with pytest.raises(StaleRevision) as caught:
        await store.replace("acme", "active", table("us-west-1"), actor="b", if_revision=first.revision)
    assert (caught.value.expected, caught.value.current) == (first.revision, ok.revision)
    got = await store.get("acme")
    assert got is not None and got.table["region"] == "us-west-2"


async def test_paging(store: Store) -> None:
    names = ["a%b", "a_c", "aXb", "abc", "acme-1", "acme-2", "acme-3", "acmeX", "b", "Acme"]
    for i, name in enumerate(names):
        await store.create(name, "pending" if i % 2 else "active", table(), actor="a")

    async def page(**kw: Any) -> list[str]:
        return [c.name for c in await store.page(**kw)]

    assert await page() == sorted(names)  # bytewise: "Acme" first
    assert await page(prefix="acme-") == ["acme-1", "acme-2", "acme-3"]
    assert await page(prefix="acme") == ["acme-1", "acme-2", "acme-3", "acmeX"]  # case-sensitive
    assert await page(prefix="a%") == ["a%b"]  # % is not a wildcard
    assert await page(prefix="a_") == ["a_c"]  # nor _
    assert await page(prefix="zz") == []
    assert await page(state="pending") == sorted(n for i, n in enumerate(names) if i % 2)
    assert await page(prefix="acme", state="active") == ["acme-1", "acme-3"]
    first = await page(limit=3)
    second = await page(limit=3, after=first[-1])
    assert first + second == sorted(names)[:6]
    assert await page(prefix="acme", after="acme-2") == ["acme-3", "acmeX"]
    await store.delete("acme-2", actor="a")
    assert await page(prefix="acme-") == ["acme-1", "acme-3"]


async def test_changes_and_snapshot(store: Store) -> None:
    await store.create("a", "active", table(), actor="x")
    await store.create("b", "active", table(), actor="x")
    rev, rows = await store.snapshot()
    assert rev == 2 and [r.name for r in rows] == ["a", "b"]
    assert await store.changes(rev) == (2, [], [])

    await store.replace("a", "active", table("us-east-2"), actor="x")
    await store.delete("b", actor="x")
    await store.create("c", "pending", table(secret="zzz"), actor="x")
    now, upserts, deleted = await store.changes(rev)
    assert now == 5
    assert [(r.name, r.revision) for r in upserts] == [("a", 3), ("c", 5)]
    assert upserts[1].table == table(secret="zzz")
    assert deleted == ["b"]
    assert await store.changes(4) == (5, [upserts[1]], [])
    # deleted and created again: only an upsert
    await store.delete("c", actor="x")
    await store.create("c", "active", table(), actor="x")
    _, upserts, deleted = await store.changes(5)
    assert [r.name for r in upserts] == ["c"] and deleted == []
    rev, rows = await store.snapshot()
    assert rev == 7 and [r.name for r in rows] == ["a", "c"]


async def test_migrations_from_empty_and_from_0001(db_url: str, key: str) -> None:
    ring = Keyring.from_strings([key])
    engine = create_engine(db_url)
    try:
        assert await current(engine) is None
        await upgrade(engine, "0001")
        assert await current(engine) == "0001"
        blob = ring.encrypt(json.dumps({"token": "tok-old"}).encode(), b"sigproxy/connection/old")
        async with engine.begin() as conn:
            await conn.execute(insert(ConnectionRow).values(
                name="old", state="active", config={"region": "eu-north-1"}, secrets=blob, deleted=False,
                revision=1, created_at=_now(), updated_at=_now()))
            await conn.exec_driver_sql("UPDATE store_meta SET revision = 1")
    finally:
        await engine.dispose()

    with pytest.raises(SchemaMismatch, match="sigproxy store migrate") as caught:
        await Store.open(db_url, ring, secret_paths=SECRET_PATHS, migrate=False)
    assert "0001" in str(caught.value) and head() in str(caught.value)

    store = await Store.open(db_url, ring, secret_paths=SECRET_PATHS)
    try:
        old = await store.get("old")
        assert old is not None and old.table == {"region": "eu-north-1", "token": "tok-old"}
        assert await store.audit_events() == []
        await store.replace("old", "active", {"region": "eu-north-1"}, actor="migrator")
        assert [e["detail"] for e in await store.audit_events()] == [{"changed": ["token"]}]
        assert await current(store.engine) == head()
    finally:
        await store.close()
    # at head: migrate=False opens
    store = await Store.open(db_url, ring, secret_paths=SECRET_PATHS, migrate=False)
    await store.close()


async def test_migrate_false_on_empty_database(db_url: str, key: str) -> None:
    with pytest.raises(SchemaMismatch, match=r"empty database.*sigproxy store migrate"):
        await Store.open(db_url, Keyring.from_strings([key]), secret_paths=SECRET_PATHS, migrate=False)


async def test_rotate_keys(db_url: str) -> None:
    old, new = generate_key(), generate_key()
    store = await Store.open(db_url, Keyring.from_strings([old]), secret_paths=SECRET_PATHS)
    try:
        for i in range(5):
            await store.create(f"c{i}", "active", table(secret=f"secret-{i}"), actor="a")
        await store.create("plain", "active", table(), actor="a")  # no secrets, no blob
    finally:
        await store.close()

    bad = await Store.open(db_url, Keyring.from_strings([new]), secret_paths=SECRET_PATHS)
    try:
        with pytest.raises(UnreadableRow, match=r"key id [0-9a-f]{16}") as caught:
            await bad.get("c0")
        assert old not in str(caught.value) and new not in str(caught.value)
        with pytest.raises(UnreadableRow):
            await bad.rotate_keys(actor="ops")  # nothing rewritten when a key is missing
    finally:
        await bad.close()

    store = await Store.open(db_url, Keyring.from_strings([new, old]), secret_paths=SECRET_PATHS)
    try:
        await store.create("fresh", "active", table(secret="secret-fresh"), actor="a")  # new key already
        rev = await store.revision()
        assert await store.rotate_keys(actor="ops") == 5
        assert await store.revision() == rev  # content unchanged: replicas reload nothing
        assert await store.rotate_keys(actor="ops") == 0
        events = await store.audit_events(limit=2)
        assert [(e["action"], e["connection"], e["detail"]) for e in events] == [
            ("rotate-keys", None, {"rows": 0}), ("rotate-keys", None, {"rows": 5})]
    finally:
        await store.close()

    store = await Store.open(db_url, Keyring.from_strings([new]), secret_paths=SECRET_PATHS)
    try:
        _, rows = await store.snapshot()
        secrets_seen = {r.name: r.table["credentials"].get("secret_access_key") for r in rows}
        assert secrets_seen == {**{f"c{i}": f"secret-{i}" for i in range(5)}, "fresh": "secret-fresh",
                                "plain": None}
    finally:
        await store.close()


async def _raw_dump(db_url: str, tmp_path: Path) -> bytes:
    """Every value of every column of every table, as bytes; for SQLite also the raw files."""
    out: list[bytes] = []
    if db_url.startswith("sqlite"):
        path = make_url(db_url).database
        assert path is not None
        with sqlite3.connect(path) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            assert {"connections", "store_meta", "audit_events"} <= set(tables)
            for t in tables:
                for row in db.execute(f'SELECT * FROM "{t}"'):
                    out.extend(v if isinstance(v, bytes) else str(v).encode() for v in row)
        for f in Path(path).parent.glob(Path(path).name + "*"):
            out.append(f.read_bytes())
        return b"\n".join(out)
    url = make_url(db_url)
    conn = await asyncpg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                                 database=url.database)
    try:
        tables = [r[0] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
        assert {"connections", "store_meta", "audit_events"} <= set(tables)
        for t in tables:
            for row in await conn.fetch(f'SELECT * FROM "{t}"'):
                out.extend(v if isinstance(v, bytes) else str(v).encode() for v in row.values())
    finally:
        await conn.close()
    return b"\n".join(out)


async def test_no_plaintext_secret_in_the_database_logs_or_audit(
        store: Store, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    values = {name: f"PLAINTEXT-{name}-{secrets.token_hex(8)}" for name in
              ("token", "client_secret", "sak", "session", "api_key", "password", "sak2")}
    await store.create("one", "active", {"token": values["token"], "client_secret": values["client_secret"],
                                         "credentials": {"source": "static", "access_key_id": "AKID",
                                                         "secret_access_key": values["sak"],
                                                         "session_token": values["session"]}}, actor="alice")
    await store.create("two", "active", {"credentials": {"source": "sts_endpoint", "api_key": values["api_key"],
                                                         "password": values["password"]}}, actor="alice")
    await store.replace("one", "active", table(secret=values["sak2"]), actor="bob")
    await store.rotate_keys(actor="ops")
    got = await store.get("two")
    assert got is not None and got.table["credentials"]["password"] == values["password"]

    dump = await _raw_dump(db_url, tmp_path)
    assert b"AKID" in dump or b"AKIDEXAMPLE" in dump  # the dump does see plain config
    for value in values.values():
        assert value.encode() not in dump, "a secret is stored in plaintext"

    events = await store.audit_events()
    assert [e["action"] for e in events] == ["rotate-keys", "update", "create", "create"]
    assert [e["actor"] for e in events] == ["ops", "bob", "alice", "alice"]
    assert events[1]["detail"]["changed"] == ["client_secret", "credentials.access_key_id",
                                              "credentials.secret_access_key", "credentials.session_token",
                                              "hosts", "region", "token"]
    assert "credentials.password" in events[2]["detail"]["changed"]
    text = json.dumps(events, default=str) + caplog.text + repr(store) + repr(got)
    for value in values.values():
        assert value not in text
    audit_lines = [r.getMessage() for r in caplog.records if r.name == "sigproxy.audit"]
    assert len(audit_lines) == 4
    assert 'actor="bob" action=update connection="one"' in audit_lines[2]
    assert "credentials.secret_access_key" in audit_lines[2]


def test_urls_are_redacted() -> None:
    assert redacted("postgresql://u:hunter2@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert "hunter2" not in redacted("postgres://u:hunter2@db/x")


async def test_bad_urls_do_not_echo_the_password(key: str) -> None:
    with pytest.raises(ValueError, match="unsupported database") as caught:
        await Store.open("mysql://u:hunter2@db/x", Keyring.from_strings([key]), secret_paths=())
    assert "hunter2" not in str(caught.value)


async def test_postgres_url_spellings(postgres: Postgres, key: str) -> None:
    url = postgres.new_database().replace("postgresql://", "postgres://")
    store = await Store.open(url, Keyring.from_strings([key]), secret_paths=SECRET_PATHS)
    try:
        assert store.dialect == "postgresql"
        assert postgres.password not in repr(store)
    finally:
        await store.close()


async def _time_watch(writer: Store, watcher: Store, *, interval: float) -> float:
    """Seconds from a write through ``writer`` until ``watcher.watch`` reports its revision."""
    seen: asyncio.Queue[int] = asyncio.Queue()

    async def on_change(revision: int) -> None:
        seen.put_nowait(revision)

    tasks = TaskSet()
    start_rev = await watcher.revision()
    tasks.spawn(watcher.watch(on_change, interval=interval, since=start_rev), "watch")
    try:
        await asyncio.sleep(0.3)  # the watch is listening
        started = time.monotonic()
        created = await writer.create(f"w{secrets.token_hex(4)}", "active", table(), actor="a")
        while (await asyncio.wait_for(seen.get(), 5)) < created.revision:
            pass
        return time.monotonic() - started
    finally:
        await tasks.cancel_all()


async def test_watch_across_stores(db_url: str, key: str) -> None:
    ring = Keyring.from_strings([key])
    a = await Store.open(db_url, ring, secret_paths=SECRET_PATHS)
    b = await Store.open(db_url, ring, secret_paths=SECRET_PATHS, migrate=False)
    try:
        # PostgreSQL: a 30 s poll proves the notification does it; SQLite polls each second.
        interval = 30.0 if a.dialect == "postgresql" else 1.0
        elapsed = await _time_watch(a, b, interval=interval)
        assert elapsed < 2.0, f"watch took {elapsed:.3f} s"
    finally:
        await a.close()
        await b.close()


async def test_watch_survives_a_lost_postgres_connection(postgres: Postgres, key: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    url = postgres.new_database()
    ring = Keyring.from_strings([key])
    a = await Store.open(url, ring, secret_paths=SECRET_PATHS)
    b = await Store.open(url, ring, secret_paths=SECRET_PATHS)
    seen: asyncio.Queue[int] = asyncio.Queue()

    async def on_change(revision: int) -> None:
        seen.put_nowait(revision)

    tasks = TaskSet()
    tasks.spawn(b.watch(on_change, interval=0.2, since=0), "watch")
    try:
        await asyncio.sleep(0.3)
        dbname = make_url(url).database
        postgres.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}' "
                      "AND pid <> pg_backend_pid()")
        created = await a.create("after-loss", "active", table(), actor="a")
        while (await asyncio.wait_for(seen.get(), 10)) < created.revision:
            pass
    finally:
        await tasks.cancel_all()
        await a.close()
        await b.close()
    assert postgres.password not in caplog.text


def _now() -> datetime:
    return datetime.now(UTC)


async def test_concurrent_writers_get_distinct_revisions(db_url: str, key: str) -> None:
    """Writers through two stores at once (two replicas): each change gets its own revision, none is lost."""
    ring = Keyring.from_strings([key])
    a = await Store.open(db_url, ring, secret_paths=SECRET_PATHS)
    b = await Store.open(db_url, ring, secret_paths=SECRET_PATHS)
    try:
        made = await asyncio.gather(*(s.create(f"n{i:02d}", "active", table(secret=f"s{i}"), actor="a")
                                      for i, s in enumerate([a, b] * 10)))
        assert sorted(c.revision for c in made) == list(range(1, 21))
        now, upserts, _ = await b.changes(0)
        assert now == 20 and len(upserts) == 20
    finally:
        await a.close()
        await b.close()
