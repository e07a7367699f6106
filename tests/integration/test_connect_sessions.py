"""Connect sessions (issue 14's backend): :class:`sigproxy.sessions.ConnectSessions` in process over a real store
(SQLite file and PostgreSQL) and a real :class:`~sigproxy.control.Control` validating against moto's STS, with an
injected clock; the ``/v1/connect-sessions`` routes of a real ``sigproxy run`` (every answer validated against
openapi.json); migration 0003 from 0002 with data; signed webhooks received by a local aiohttp server.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from sqlalchemy import insert

from sigproxy.config import loads
from sigproxy.control import Control, open_store
from sigproxy.errors import Conflict, InvalidField, NotFound, SessionGone, TooManyAttempts
from sigproxy.sessions import ConnectSessions, hash_token, verify_webhook
from sigproxy.store import Keyring, Store, current, generate_key, head, upgrade
from sigproxy.store.database import create_engine
from sigproxy.store.models import AuditEvent, ConnectionRow
from sigproxy.webhooks import SIGNATURE_HEADER, WebhookSender, sign_webhook
from tests.integration.test_admin_api import TOKEN, Api, customer_role, start, tenant
from tests.integration.test_credentials import platform
from tests.servers.moto_server import Moto

WEBHOOK_SECRET = "whsec-" + uuid.uuid4().hex
SECRET_PATHS = (("credentials", "secret_access_key"),)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Hooks:
    """A local webhook receiver: every POST's headers and raw body."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: list[int] = field(default_factory=list)  # answers to give, in order (then 200)


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    box: list[Hooks] = []

    async def receive(request: web.Request) -> web.Response:
        box[0].received.append((dict(request.headers), await request.read()))
        return web.Response(status=box[0].status.pop(0) if box[0].status else 200)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    box.append(Hooks(f"http://127.0.0.1:{port}/hook?k=v"))
    try:
        yield box[0]
    finally:
        await runner.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return str(request.getfixturevalue("postgres").new_database())


@dataclass
class World:
    sessions: ConnectSessions
    control: Control
    store: Store
    clock: Clock
    moto: Moto
    sender: WebhookSender
    db_url: str


def _config_text(moto: Moto, tmp: Path, url: str, key: str, connect: str) -> str:
    return f"""
[proxy]
state_dir = "{tmp}"
[store]
url = "{url}"
encryption_keys = ["{key}"]
[onboarding]
principal = "{moto.user_arn}"
require_role_path = "/sigproxy-assumable/"
[connect]
webhook_secret = "{WEBHOOK_SECRET}"
max_attempts = 3
{connect}
{platform(moto)}"""


@pytest.fixture
async def world(db_url: str, moto: Moto, tmp_path: Path) -> AsyncIterator[World]:
    config = loads(_config_text(moto, tmp_path, db_url, generate_key(),
                                'template_url = "https://b.s3.amazonaws.com/role.json"\n'
                                'public_url = "https://connect.example.com/"'))
    store = await open_store(config)
    assert store is not None
    control = Control(config, store, on_apply=lambda _c, _n: None)
    await control.load()
    clock = Clock()
    sender = WebhookSender(backoff=(0.05, 0.05))
    sessions = ConnectSessions(control, store, lambda: control.config, clock=clock, webhook_sender=sender)
    try:
        yield World(sessions, control, store, clock, moto, sender, db_url)
    finally:
        await sessions.close()
        await store.close()


async def pending(w: World, name: str) -> str:
    conn = await w.control.create(tenant(w.moto, name), actor="test")
    assert conn.state == "pending" and conn.credentials.external_id
    return conn.credentials.external_id


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


# ---------------------------------------------------------------------------------------------- in process


async def test_create_open_and_the_token_is_stored_hashed(world: World) -> None:
    w = world
    external_id = await pending(w, "acme")
    session, url = await w.sessions.create({"connection": "acme", "display_name": "Acme Inc.", "region": "eu-west-1"},
                                           actor="api 127.0.0.1", base_url="http://127.0.0.1:9901")
    token = token_of(url)
    assert url == f"https://connect.example.com/connect/{token}"  # public_url, trailing / dropped
    assert len(token) >= 43 and len(session.id) >= 22
    assert session.state == "open" and session.attempts == 0 and session.region == "eu-west-1"
    assert session.expires_at - session.created_at == timedelta(seconds=1800)
    assert token not in json.dumps(session.to_json())
    page = await w.sessions.open(token)
    assert page.external_id == external_id and page.external_ids == [external_id]
    assert page.principal == w.moto.user_arn and page.role_path == "/sigproxy-assumable/"
    assert page.role_name == "sigproxy-acme"
    assert page.trust_policy["Statement"][0]["Condition"] == {"StringEquals": {"sts:ExternalId": external_id}}
    assert json.loads(page.trust_policy_json) == page.trust_policy
    assert json.loads(page.cloudformation_json) == page.cloudformation_template
    assert any("--path /sigproxy-assumable/" in c for c in page.aws_cli_commands)
    assert page.product_name == "sigproxy" and page.has_logo is False and page.max_attempts == 3
    assert page.quick_create_url is not None
    quick = urlsplit(page.quick_create_url)
    assert quick.netloc == "console.aws.amazon.com" and parse_qs(quick.query) == {"region": ["eu-west-1"]}
    params = parse_qs(quick.fragment.split("?", 1)[1])
    assert params == {"templateURL": ["https://b.s3.amazonaws.com/role.json"], "stackName": ["sigproxy-acme"],
                      "param_ExternalId": [external_id], "param_RoleName": ["sigproxy-acme"]}
    # The database holds the token's hash, never the token.
    if w.db_url.startswith("sqlite"):
        path = w.db_url.removeprefix("sqlite:///")
        raw = b"".join([Path(path + suffix).read_bytes() for suffix in ("", "-wal", "-shm")  # noqa: ASYNC240
                        if Path(path + suffix).exists()])  # noqa: ASYNC240
        assert token.encode() not in raw
        with sqlite3.connect(w.db_url.removeprefix("sqlite:///")) as db:
            rows = db.execute("SELECT * FROM connect_sessions").fetchall()
        assert len(rows) == 1 and hash_token(token) in rows[0] and token not in repr(rows)
    assert (await w.store.connect_sessions.get_by_token_hash(hash_token(token))) is not None
    events = await w.store.audit_events(connection="acme")
    assert events[0]["action"] == "connect-session-create" and events[0]["detail"] == {"session": session.id}


async def test_expiry_with_an_injected_clock(world: World) -> None:
    w = world
    await pending(w, "late")
    session, url = await w.sessions.create({"connection": "late", "ttl": 60}, actor="t", base_url="http://h:1")
    assert url.startswith("https://connect.example.com/connect/")  # [connect] public_url wins over base_url
    w.clock.now += timedelta(seconds=59)
    assert (await w.sessions.open(token_of(url))).session.state == "open"
    w.clock.now += timedelta(seconds=1)
    assert (await w.sessions.get(session.id)).state == "expired"
    with pytest.raises(SessionGone) as gone:
        await w.sessions.open(token_of(url))
    assert gone.value.state == "expired" and "expired" in gone.value.message
    with pytest.raises(SessionGone):
        await w.sessions.submit(token_of(url), "arn:aws:iam::123456789012:role/x", None, client="1.2.3.4")
    # revoking an expired session is allowed (it stays unusable)
    assert (await w.sessions.revoke(session.id, actor="t")).state == "revoked"


async def test_revoke(world: World) -> None:
    w = world
    await pending(w, "rev")
    session, url = await w.sessions.create({"connection": "rev"}, actor="t", base_url="http://h:1")
    revoked = await w.sessions.revoke(session.id, actor="api alice")
    assert revoked.state == "revoked"
    assert (await w.sessions.revoke(session.id, actor="api alice")).state == "revoked"  # idempotent
    with pytest.raises(SessionGone) as gone:
        await w.sessions.open(token_of(url))
    assert gone.value.state == "revoked" and gone.value.status == 410
    with pytest.raises(NotFound):
        await w.sessions.revoke("nope-" + "x" * 20, actor="t")
    with pytest.raises(SessionGone) as unknown:
        await w.sessions.open("not-a-token-" + "y" * 30)
    assert unknown.value.state == "unknown"
    with pytest.raises(SessionGone):
        await w.sessions.open("../../etc")
    assert (await w.store.audit_events(connection="rev"))[0]["action"] == "connect-session-revoke"


async def test_wrong_role_then_right_role_then_token_spent_and_webhook(world: World, hooks: Hooks) -> None:
    """AccessDenied (attempt 1, still open), a malformed ARN (no attempt), then the role made from the page's
    trust policy: completed, identity, connection active, token spent, a signed webhook received."""
    w = world
    await pending(w, "shop")
    hooks.status[:] = [500]  # the first delivery fails: retried
    session, url = await w.sessions.create({"connection": "shop", "webhook_url": hooks.url}, actor="t",
                                           base_url="http://h:1")
    token = token_of(url)
    page = await w.sessions.open(token)
    wrong = json.loads(page.trust_policy_json)
    wrong["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] = "someone-elses-id"
    wrong_arn = customer_role(w.moto, wrong, "/sigproxy-assumable/")
    out = await w.sessions.submit(token, wrong_arn, "", client="203.0.113.9")
    assert (out.ok, out.code, out.field) == (False, "AccessDenied", None)
    assert out.message and page.external_id in out.message
    now = await w.sessions.get(session.id)
    assert (now.state, now.attempts, now.last_error) == ("open", 1, "AccessDenied")
    assert w.control.get("shop").state == "pending"

    bad = await w.sessions.submit(token, "arn:aws:s3:::bucket", None, client=None)
    assert (bad.ok, bad.field, bad.code) == (False, "role_arn", "invalid_field")
    bad = await w.sessions.submit(token, wrong_arn, "mars-1", client=None)
    assert (bad.ok, bad.field) == (False, "region")
    assert (await w.sessions.get(session.id)).attempts == 1  # no STS call, nothing counted

    right = customer_role(w.moto, page.trust_policy, page.role_path or "/")
    out = await w.sessions.submit(token, f"  {right}\n", "us-west-2", client="203.0.113.9")
    assert out.ok, out
    role_name = right.rsplit("/", 1)[1]
    assert out.identity_arn == f"arn:aws:sts::{w.moto.account_id}:assumed-role/{role_name}/sigproxy-shop"
    done = await w.sessions.get(session.id)
    assert (done.state, done.identity_arn, done.attempts, done.last_error) == ("completed", out.identity_arn, 2, None)
    assert done.completed_at is not None
    conn = w.control.get("shop")
    assert (conn.state, conn.credentials.role_arn, conn.region) == ("active", right, "us-west-2")
    with pytest.raises(SessionGone) as gone:
        await w.sessions.open(token)
    assert gone.value.state == "completed"
    with pytest.raises(SessionGone):
        await w.sessions.submit(token, right, None, client=None)
    with pytest.raises(Conflict) as completed:
        await w.sessions.revoke(session.id, actor="t")
    assert completed.value.code == "session_completed"
    actors = [e["actor"] for e in await w.store.audit_events(connection="shop")]
    assert f"connect-session {session.id} 203.0.113.9" in actors

    await w.sender.wait(10)
    assert len(hooks.received) == 2  # a 500, then delivered
    (h1, b1), (h2, b2) = hooks.received
    assert b1 == b2 and h1["X-Sigproxy-Delivery"] == h2["X-Sigproxy-Delivery"]
    assert verify_webhook(WEBHOOK_SECRET, h2[SIGNATURE_HEADER], b2)
    body = json.loads(b2)
    assert body["type"] == "connect_session.completed"
    assert body["session"]["id"] == session.id and body["session"]["state"] == "completed"
    assert body["connection"]["name"] == "shop" and body["connection"]["state"] == "active"
    assert token not in b2.decode() and WEBHOOK_SECRET not in b2.decode()
    # tampered body, wrong secret, stale timestamp, garbage: refused
    assert not verify_webhook(WEBHOOK_SECRET, h2[SIGNATURE_HEADER], b2.replace(b"completed", b"revoked"))
    assert not verify_webhook("another-secret-0123456789", h2[SIGNATURE_HEADER], b2)
    old = sign_webhook(WEBHOOK_SECRET, b2, timestamp=int(time.time()) - 301)
    assert not verify_webhook(WEBHOOK_SECRET, old, b2)
    assert verify_webhook(WEBHOOK_SECRET, old, b2, tolerance=600)
    for header in (None, "", "t=abc,v1=00", "v1=00", f"t={int(time.time())}", "garbage"):
        assert not verify_webhook(WEBHOOK_SECRET, header, b2)


async def test_max_attempts(world: World) -> None:
    w = world
    await pending(w, "tries")
    session, url = await w.sessions.create({"connection": "tries"}, actor="t", base_url="http://h:1")
    wrong = json.loads((await w.sessions.open(token_of(url))).trust_policy_json)
    wrong["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] = "someone-elses-id"
    arn = customer_role(w.moto, wrong, "/sigproxy-assumable/")
    outcomes = await asyncio.gather(*(w.sessions.submit(token_of(url), arn, None, client=None) for _ in range(3)))
    assert [o.ok for o in outcomes] == [False] * 3
    with pytest.raises(TooManyAttempts) as caught:
        await w.sessions.submit(token_of(url), arn, None, client=None)
    assert caught.value.status == 429 and "3 times" in caught.value.message
    assert (await w.sessions.get(session.id)).attempts == 3  # counted up to the limit, not past it
    assert (await w.sessions.open(token_of(url))).session.state == "open"  # the page still shows


async def test_reconnect_reuses_the_stored_external_id(world: World) -> None:
    w = world
    external_id = await pending(w, "again")
    _, url = await w.sessions.create({"connection": "again"}, actor="t", base_url="http://h:1")
    page = await w.sessions.open(token_of(url))
    role = customer_role(w.moto, page.trust_policy, "/sigproxy-assumable/")
    assert (await w.sessions.submit(token_of(url), role, None, client=None)).ok
    # reconnect: a new session for the active connection shows the same ExternalId
    _, url = await w.sessions.create({"connection": "again", "external_id": external_id}, actor="t",
                                     base_url="http://h:1")
    page = await w.sessions.open(token_of(url))
    assert page.external_id == external_id and page.session.connection == "again"
    with pytest.raises(Conflict) as other:
        await w.sessions.create({"connection": "again", "external_id": "another-id"}, actor="t", base_url="x")
    assert (other.value.code, other.value.field) == ("external_id_mismatch", "external_id")
    new_role = customer_role(w.moto, page.trust_policy, "/sigproxy-assumable/")
    assert (await w.sessions.submit(token_of(url), new_role, None, client=None)).ok
    conn = w.control.get("again")
    assert (conn.credentials.role_arn, conn.credentials.external_id) == (new_role, external_id)


async def test_seeded_external_id_on_a_pending_connection(world: World) -> None:
    w = world
    await pending(w, "seeded")
    session, url = await w.sessions.create({"connection": "seeded", "external_id": "nango-seed-1",
                                            "role_arn": "arn:aws:iam::123456789012:role/x"}, actor="t", base_url="b")
    assert w.control.get("seeded").credentials.external_id == "nango-seed-1"
    assert session.role_arn == "arn:aws:iam::123456789012:role/x"
    assert (await w.sessions.open(token_of(url))).external_id == "nango-seed-1"


@pytest.mark.parametrize(("body", "field"), [
    ({}, "connection"), ({"connection": 3}, "connection"), ({"connection": "x", "colour": "red"}, "colour"),
    ({"connection": "fields", "ttl": 59}, "ttl"), ({"connection": "fields", "ttl": 86401}, "ttl"),
    ({"connection": "fields", "ttl": True}, "ttl"), ({"connection": "fields", "ttl": "60"}, "ttl"),
    ({"connection": "fields", "role_arn": "arn:aws:iam::1:user/x"}, "role_arn"),
    ({"connection": "fields", "region": "Europe"}, "region"),
    ({"connection": "fields", "external_id": "x"}, "external_id"),
    ({"connection": "fields", "display_name": "a\nb"}, "display_name"),
    ({"connection": "fields", "webhook_url": "ftp://h/x"}, "webhook_url"),
    ({"connection": "fields", "webhook_url": "http://[::1/x"}, "webhook_url"),
    ({"connection": "fields", "webhook_url": "http://h:65536/x"}, "webhook_url"),
])
async def test_field_errors(world: World, body: dict[str, Any], field: str) -> None:
    if body.get("connection") == "fields" and "fields" not in world.control.connections():
        await pending(world, "fields")
    with pytest.raises(InvalidField) as caught:
        await world.sessions.create(body, actor="t", base_url="b")
    assert caught.value.field == field


async def test_wrong_connections(world: World) -> None:
    w = world
    with pytest.raises(NotFound) as missing:
        await w.sessions.create({"connection": "ghost"}, actor="t", base_url="b")
    assert missing.value.field == "connection"
    with pytest.raises(Conflict) as filed:
        await w.sessions.create({"connection": "platform"}, actor="t", base_url="b")
    assert filed.value.code == "read_only"
    await w.control.create({"name": "keys", "hosts": ["*.amazonaws.com"], "credentials": {
        "source": "static", "access_key_id": "AKID", "secret_access_key": "s"}}, actor="t")
    with pytest.raises(Conflict) as static:
        await w.sessions.create({"connection": "keys"}, actor="t", base_url="b")
    assert static.value.code == "not_assume_role"


async def test_webhook_needs_the_secret(moto: Moto, tmp_path: Path) -> None:
    config = loads(_config_text(moto, tmp_path, f"sqlite:///{tmp_path}/s.db", generate_key(), "")
                   .replace(f'webhook_secret = "{WEBHOOK_SECRET}"', ""))
    store = await open_store(config)
    assert store is not None
    control = Control(config, store, on_apply=lambda _c, _n: None)
    await control.load()
    sessions = ConnectSessions(control, store, lambda: control.config)
    try:
        await control.create(tenant(moto, "hooked"), actor="t")
        with pytest.raises(InvalidField) as caught:
            await sessions.create({"connection": "hooked", "webhook_url": "http://127.0.0.1:1/x"}, actor="t",
                                  base_url="http://127.0.0.1:9")
        assert caught.value.field == "webhook_url" and "webhook_secret" in caught.value.message
        _, url = await sessions.create({"connection": "hooked"}, actor="t", base_url="http://127.0.0.1:9")
        assert url.startswith("http://127.0.0.1:9/connect/")  # no public_url: the admin listener's address
    finally:
        await sessions.close()
        await store.close()


async def test_webhook_gives_up_after_three_attempts(hooks: Hooks, caplog: pytest.LogCaptureFixture) -> None:
    sender = WebhookSender(backoff=(0.01, 0.01))
    hooks.status[:] = [503, 503, 503, 503]
    sender.send(hooks.url, WEBHOOK_SECRET, {"type": "x"})
    await sender.wait(10)
    assert len(hooks.received) == 3
    assert "giving up" in caplog.text and WEBHOOK_SECRET not in caplog.text and "k=v" not in caplog.text
    await sender.close()


async def test_migration_0003_from_0002_with_data(db_url: str) -> None:
    key = generate_key()
    engine = create_engine(db_url)
    now = datetime.now(UTC)
    try:
        await upgrade(engine, "0002")
        async with engine.begin() as conn:
            await conn.execute(insert(ConnectionRow).values(
                name="old", state="pending", config={"region": "eu-north-1"}, secrets=None, deleted=False,
                revision=1, created_at=now, updated_at=now))
            await conn.execute(insert(AuditEvent).values(at=now, actor="a", action="create", connection="old",
                                                         detail={"changed": ["region"]}))
            await conn.exec_driver_sql("UPDATE store_meta SET revision = 1")
    finally:
        await engine.dispose()
    store = await Store.open(db_url, Keyring.from_strings([key]), secret_paths=SECRET_PATHS)
    try:
        assert await current(store.engine) == head() == "0003"
        old = await store.get("old")
        assert old is not None and old.table == {"region": "eu-north-1"}
        assert [e["actor"] for e in await store.audit_events()] == ["a"]
        rec = await store.connect_sessions.create(
            id="s" * 22, token_hash="0" * 64, connection="old", display_name=None, seed={}, webhook_url=None,
            created_at=now, expires_at=now + timedelta(minutes=5), created_by="t")
        assert (rec.state, rec.attempts) == ("open", 0)
        assert await store.connect_sessions.record_attempt(rec.id, limit=2) == 1
        assert await store.connect_sessions.record_attempt(rec.id, limit=2) == 2
        assert await store.connect_sessions.record_attempt(rec.id, limit=2) is None
        assert await store.connect_sessions.complete(rec.id, identity_arn="arn:x", at=now)
        assert not await store.connect_sessions.complete(rec.id, identity_arn="arn:y", at=now)
        assert await store.revision() == 1  # sessions do not move the connections' change feed
    finally:
        await store.close()


# ---------------------------------------------------------------------------------------------- a real process


@pytest.fixture(scope="module")
def api(moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("connect-api")
    proxy = start(tmp, f"""
[proxy]
auth_failures = 1000
[admin]
token = "{TOKEN}"
[onboarding]
principal = "{moto.user_arn}"
require_role_path = "/sigproxy-assumable/"
[connect]
webhook_secret = "{WEBHOOK_SECRET}"
{platform(moto)}""")
    try:
        yield Api(proxy, moto)
    finally:
        proxy.stop()


def test_api_create_get_revoke(api: Api) -> None:
    assert api.call("POST", "/v1/connections", tenant(api.moto, "web")).status == 201
    r = api.call("POST", "/v1/connect-sessions", {"connection": "web", "display_name": "Web Co", "ttl": 600,
                                                  "webhook_url": "http://127.0.0.1:1/hook"})
    assert r.status == 201, r.body
    sid, url = r.body["id"], r.body["url"]
    assert r.headers["Location"] == f"/v1/connect-sessions/{sid}"
    assert url.startswith(api.url + "/connect/") and len(token_of(url)) >= 43  # the admin listener's address
    got = api.call("GET", f"/v1/connect-sessions/{sid}")
    assert got.status == 200
    assert {k: got.body[k] for k in ("id", "state", "connection", "display_name", "attempts", "last_error",
                                     "identity_arn", "completed_at")} == {
        "id": sid, "state": "open", "connection": "web", "display_name": "Web Co", "attempts": 0,
        "last_error": None, "identity_arn": None, "completed_at": None}
    assert got.body["expires_at"] == r.body["expires_at"]
    created = datetime.fromisoformat(got.body["created_at"])
    assert datetime.fromisoformat(got.body["expires_at"]) - created == timedelta(seconds=600)
    d = api.call("DELETE", f"/v1/connect-sessions/{sid}")
    assert (d.status, d.body["state"]) == (200, "revoked")
    assert api.call("GET", f"/v1/connect-sessions/{sid}").body["state"] == "revoked"
    assert token_of(url) not in "".join(api.seen[2:])  # the token shows only in the 201's url
    # the raw database holds the hash only
    db = Path(api.proxy.config).parent / "state" / "store.db"
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT token_hash FROM connect_sessions WHERE id = ?", (sid,)).fetchone()
    assert stored == hash_token(token_of(url))


def test_api_refusals(api: Api) -> None:
    r = api.call("GET", "/v1/connect-sessions/" + "n" * 22)
    assert (r.status, r.error["field"]) == (404, "id")
    r = api.call("POST", "/v1/connect-sessions", {"connection": "ghost"})
    assert (r.status, r.error["field"]) == (404, "connection")
    r = api.call("POST", "/v1/connect-sessions", {"connection": "platform"})
    assert (r.status, r.error["code"]) == (409, "read_only")
    r = api.call("POST", "/v1/connect-sessions", {"connection": "platform", "ttl": 5})
    assert (r.status, r.error["field"]) == (422, "ttl")
    r = api.call("POST", "/v1/connect-sessions", [1], token=TOKEN)
    assert r.status == 400
    assert api.call("POST", "/v1/connect-sessions", {"connection": "x"}, token=None).status == 401
    assert api.call("DELETE", "/v1/connect-sessions/" + "n" * 22).status == 404


def test_api_template(api: Api) -> None:
    r = api.call("GET", "/v1/connect-template")
    assert r.status == 200
    assert set(r.body["Parameters"]) == {"ExternalId", "RoleName", "ManagedPolicyArns"}
    role = r.body["Resources"]["Role"]["Properties"]
    assert role["Path"] == "/sigproxy-assumable/"
    statement = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"AWS": api.moto.user_arn}
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
