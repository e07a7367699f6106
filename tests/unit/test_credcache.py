"""The credential cache with an injected clock and a scripted source: windows, single flight, failures,
back-off. No sleeping: time moves only when a test moves it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from cachetools import LRUCache

from sigproxy.config import Config, CredentialsConfig, loads
from sigproxy.credcache import CacheKey, CredentialCache
from sigproxy.credentials import Providers
from sigproxy.errors import CredentialsUnavailable
from sigproxy.signing import Credentials

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Source:
    """A credential source whose answers the test scripts; it can be held open with ``gate``."""

    def __init__(self, clock: Clock, lifetime: timedelta = HOUR) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.fail: str | None = None
        self.gate: asyncio.Event | None = None

    async def fetch(self) -> Credentials:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise CredentialsUnavailable.from_sts(f"STS AssumeRole failed: {self.fail}: nope", sts_code=self.fail)
        return Credentials(f"AKID{self.calls}", "secret", "token", self.clock() + self.lifetime)


class AsProvider:
    """A scripted :class:`Source` in place of STS behind :class:`Providers` (a provider's ``fetch(user)``)."""

    def __init__(self, source: Source) -> None:
        self.source = source

    async def fetch(self, user: str | None = None) -> Credentials:
        return await self.source.fetch()


TENANT = ('[connections.t0]\nhosts = ["*.amazonaws.com"]\nuser_header = true\n'
          '[connections.t0.credentials]\nsource = "assume_role"\nrole_arn = "arn:aws:iam::111122223333:role/t0"\n')


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def cache(clock: Clock) -> CredentialCache:
    c = CredentialCache(clock=clock, jitter=lambda: 1.0)
    yield c  # type: ignore[misc]
    await c.close()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_first_get_fetches_then_hits(cache: CredentialCache, clock: Clock) -> None:
    """A cold key waits for one fetch; later gets are hits with the same snapshot."""
    src = Source(clock)
    creds, hit = await cache.get("k", src.fetch, "k")
    assert (creds.access_key_id, hit) == ("AKID1", False)
    again, hit = await cache.get("k", src.fetch, "k")
    assert again is creds and hit
    assert src.calls == 1


async def test_cold_cache_single_flight(cache: CredentialCache, clock: Clock) -> None:
    """200 concurrent requests on a cold cache make exactly one fetch and all get its result."""
    src = Source(clock)
    src.gate = asyncio.Event()
    waiting = [asyncio.ensure_future(cache.get("k", src.fetch, "k")) for _ in range(200)]
    await settle()
    src.gate.set()
    results = await asyncio.gather(*waiting)
    assert src.calls == 1
    assert {c.access_key_id for c, _ in results} == {"AKID1"}


async def test_advisory_refresh_does_not_delay(cache: CredentialCache, clock: Clock) -> None:
    """In the advisory window requests get the current credentials at once while one refresh runs behind."""
    src = Source(clock)
    await cache.get("k", src.fetch, "k")
    clock.advance(HOUR - timedelta(minutes=10))  # 10 min left: advisory, not mandatory
    src.gate = asyncio.Event()  # the refresh will hang until released
    for _ in range(50):
        creds, hit = await asyncio.wait_for(cache.get("k", src.fetch, "k"), timeout=1)
        assert creds.access_key_id == "AKID1" and hit
    assert src.calls == 2  # one background refresh, not fifty
    src.gate.set()
    await settle()
    creds, _ = await cache.get("k", src.fetch, "k")
    assert creds.access_key_id == "AKID2"


async def test_mandatory_window_waits_for_refresh(cache: CredentialCache, clock: Clock) -> None:
    """In the mandatory window requests wait for the refresh and get the new credentials."""
    src = Source(clock)
    await cache.get("k", src.fetch, "k")
    clock.advance(HOUR - timedelta(minutes=2))
    src.gate = asyncio.Event()
    pending = asyncio.ensure_future(cache.get("k", src.fetch, "k"))
    await settle()
    assert not pending.done()
    src.gate.set()
    creds, hit = await pending
    assert creds.access_key_id == "AKID2" and not hit


async def test_refresh_failure_keeps_serving_valid(cache: CredentialCache, clock: Clock,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """STS down while the credentials are valid: every request still succeeds; the streak is logged once."""
    src = Source(clock)
    await cache.get("k", src.fetch, "k")
    src.fail = "ServiceUnavailable"
    clock.advance(HOUR - timedelta(minutes=4))  # mandatory window, still valid
    for _ in range(20):
        creds, _ = await cache.get("k", src.fetch, "k")
        assert creds.access_key_id == "AKID1"
        clock.advance(timedelta(seconds=5))
    assert cache.stats.failures >= 1
    assert sum("credential refresh for k failed" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize(("sts_code", "status", "aws_code"), [
    ("AccessDenied", 403, "SigproxyCredentialsUnavailable"),  # a retry can't fix it: SDKs must not retry
    ("Throttling", 503, "SigproxyCredentialsTemporarilyUnavailable"),  # a later attempt may pass: retried
])
async def test_expired_and_sts_failing(cache: CredentialCache, clock: Clock, sts_code: str, status: int,
                                       aws_code: str) -> None:
    """No valid credentials and STS failing: CredentialsUnavailable carrying STS's code; never expired ones.
    STS's code decides the status: permanent 403, transient 503."""
    src = Source(clock)
    await cache.get("k", src.fetch, "k")
    src.fail = sts_code
    clock.advance(HOUR + timedelta(seconds=1))
    with pytest.raises(CredentialsUnavailable) as err:
        await cache.get("k", src.fetch, "k")
    assert err.value.sts_code == sts_code
    assert (err.value.status, err.value.code, err.value.aws_code) == (status, "credentials_unavailable", aws_code)


async def test_backoff_spaces_out_fetches(cache: CredentialCache, clock: Clock) -> None:
    """After failures the next fetch waits a doubling back-off; requests meanwhile fail fast, no fetch."""
    src = Source(clock)
    src.fail = "Throttling"
    delays = []
    for _ in range(5):
        with pytest.raises(CredentialsUnavailable):
            await cache.get("k", src.fetch, "k")
        calls = src.calls
        for _ in range(10):  # while backing off: no new fetch
            with pytest.raises(CredentialsUnavailable):
                await cache.get("k", src.fetch, "k")
        assert src.calls == calls
        retry_at = cache.retry_at("k")
        assert retry_at is not None
        delays.append((retry_at - clock()).total_seconds())
        clock.now = retry_at
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    src.fail = None
    creds, _ = await cache.get("k", src.fetch, "k")
    assert creds.access_key_id.startswith("AKID")
    assert cache.retry_at("k") is None


async def test_backoff_is_jittered(clock: Clock) -> None:
    """The back-off delay is jittered between half and all of the nominal value."""
    cache = CredentialCache(clock=clock, jitter=lambda: 0.0)
    src = Source(clock)
    src.fail = "Throttling"
    with pytest.raises(CredentialsUnavailable):
        await cache.get("k", src.fetch, "k")
    retry_at = cache.retry_at("k")
    assert retry_at is not None
    assert (retry_at - clock()).total_seconds() == 0.5
    await cache.close()


async def test_short_lived_credentials_not_refreshed_every_request(cache: CredentialCache, clock: Clock) -> None:
    """Credentials living less than the advisory window are refreshed at half their life, not on every get."""
    src = Source(clock, lifetime=timedelta(minutes=10))
    await cache.get("k", src.fetch, "k")
    for _ in range(10):
        await cache.get("k", src.fetch, "k")
    assert src.calls == 1
    clock.advance(timedelta(minutes=6))
    await cache.get("k", src.fetch, "k")
    await settle()
    assert src.calls == 2


async def test_keys_are_independent_and_bounded(clock: Clock) -> None:
    """Different keys have different credentials; the key space is bounded (LRU)."""
    cache = CredentialCache(clock=clock, max_keys=2)
    a, b, c = Source(clock), Source(clock), Source(clock)
    await cache.get("a", a.fetch, "a")
    await cache.get("b", b.fetch, "b")
    await cache.get("c", c.fetch, "c")
    await cache.get("a", a.fetch, "a")  # evicted: fetched again
    assert (a.calls, b.calls, c.calls) == (2, 1, 1)
    await cache.close()


async def test_static_credentials_never_expire(cache: CredentialCache, clock: Clock) -> None:
    """Credentials without an expiry are fetched once and kept."""
    calls = 0

    async def fetch() -> Credentials:
        nonlocal calls
        calls += 1
        return Credentials("AKIDSTATIC", "s")

    for _ in range(3):
        await cache.get("s", fetch, "s")
        clock.advance(timedelta(days=30))
    assert calls == 1


def test_windows_must_nest() -> None:
    """A mandatory window longer than the advisory one is refused."""
    with pytest.raises(ValueError, match="mandatory"):
        CredentialCache(advisory=timedelta(minutes=1), mandatory=timedelta(minutes=5))


# ------------------------------------------------------------------ sized from the configuration (issue 12, part 8)


def fleet(n: int, proxy: str = "") -> Config:
    """A config of ``n`` assume_role connections (nothing is fetched by loading or sizing it)."""
    return loads(f"[proxy]\n{proxy}\n" + "".join(
        f'[connections.t{i}]\nhosts = ["*.amazonaws.com"]\n[connections.t{i}.credentials]\n'
        f'source = "assume_role"\nrole_arn = "arn:aws:iam::111122223333:role/t{i}"\n' for i in range(n)), env={})


async def test_a_fleet_larger_than_the_old_bound_fetches_once_per_connection(clock: Clock) -> None:
    """5,000 connections (the old fixed bound was 4,096) cycled twice through a cache sized from their
    config -- as the proxy sizes it, through Providers -- make exactly one fetch per connection: every
    configured connection stays cached until refresh-ahead. (With the old bound: 10,000 fetches.)"""
    config = fleet(5000)
    cache = CredentialCache(clock=clock)
    Providers(config.connections, cache=cache, cached_users=config.proxy.credential_cache_users)
    fetches: dict[str, int] = {}

    def source(name: str) -> Callable[[], Awaitable[Credentials]]:
        async def fetch() -> Credentials:
            fetches[name] = fetches.get(name, 0) + 1
            return Credentials(f"ASIA{name}", "secret", "token", clock() + HOUR)

        return fetch

    for _ in range(2):
        for name in config.connections:
            creds, _ = await cache.get(("connection", name), source(name), name)
            assert creds.access_key_id == f"ASIA{name}"
        clock.advance(timedelta(minutes=10))  # still outside the advisory window: no refresh
    assert len(fetches) == 5000 and set(fetches.values()) == {1}
    assert cache.stats.fetches == 5000
    assert cache.stats.hits == 5000
    await cache.close()


def test_capacity_follows_the_config(clock: Clock) -> None:
    """Room for every connection twice over (a reload's changed ones) and the default chain; end users as
    configured by [proxy] credential_cache_users (default 4,096); a reload with another config resizes."""
    cache = CredentialCache(clock=clock)
    Providers(fleet(3).connections, cache=cache, cached_users=fleet(3).proxy.credential_cache_users)
    assert cache.capacity == (7, 4096)
    bigger = fleet(5000, proxy="credential_cache_users = 20000")
    Providers(bigger.connections, cache=cache, cached_users=bigger.proxy.credential_cache_users)
    assert cache.capacity == (10001, 20000)


async def test_resizing_keeps_entries_and_recency(clock: Clock) -> None:
    """Growing keeps every entry (no refetch); shrinking evicts the least recently used first."""
    cache = CredentialCache(clock=clock, max_keys=4)
    sources = {k: Source(clock) for k in "abcd"}
    for k in "abcd":
        await cache.get(k, sources[k].fetch, k)
    await cache.get("a", sources["a"].fetch, "a")  # recency now: b, c, d, a
    cache.configure(connections=5, users=1)  # room for 11
    assert (cache.size(), cache.capacity) == (4, (11, 1))
    cache.configure(connections=1, users=1)  # room for 3: b, the least recently used, goes
    for k in "cdab":
        await cache.get(k, sources[k].fetch, k)
    assert [sources[k].calls for k in "abcd"] == [1, 2, 1, 1]
    await cache.close()


async def test_state_never_fetches(cache: CredentialCache, clock: Clock) -> None:
    """state(): unknown before any fetch, up while valid credentials are held, down once they are gone and
    the last fetch failed; reading it never fetches."""
    src = Source(clock, lifetime=timedelta(minutes=20))
    assert cache.state("k") == "unknown"
    await cache.get("k", src.fetch, "k")
    assert cache.state("k") == "up"
    src.fail = "AccessDenied"
    clock.advance(timedelta(minutes=21))
    assert cache.state("k") == "unknown"  # expired, no fetch since: not known to be failing
    with pytest.raises(CredentialsUnavailable):
        await cache.get("k", src.fetch, "k")
    assert cache.state("k") == "down"
    assert src.calls == 2


async def test_forget_drops_a_connections_entries(cache: CredentialCache, clock: Clock) -> None:
    """A connection deleted or changed at runtime keeps no credentials: its own entry and its end users' go,
    other connections' stay; the next request fetches again."""
    src, other = Source(clock), Source(clock)
    await cache.get(("acme", "cfg"), src.fetch, "acme")
    await cache.get(("acme", "cfg", "alice"), src.fetch, "acme alice", per_user=True)
    await cache.get(("beta", "cfg"), other.fetch, "beta")
    assert cache.forget({"acme"}) == 2
    assert cache.state(("acme", "cfg")) == "unknown" and cache.state(("beta", "cfg")) == "up"
    _, hit = await cache.get(("acme", "cfg"), src.fetch, "acme")
    assert not hit and src.calls == 3
    assert cache.forget({"nobody"}) == 0


class Counted:
    """A key part that counts how often it is hashed."""

    def __init__(self) -> None:
        self.hashes = 0

    def __hash__(self) -> int:
        self.hashes += 1
        return 7


def test_a_cache_key_is_its_tuple_hashed_once() -> None:
    """A CacheKey equals the tuple of its parts and hashes as it does, so keys made either way find the same
    entry; its parts are hashed when it is made, never again (cachetools' LRU hashes a key three times a hit)."""
    part = Counted()
    key = CacheKey(("acme", part))
    assert part.hashes == 1
    entries: LRUCache[object, int] = LRUCache(maxsize=4)
    entries[key] = 1
    for _ in range(3):
        assert entries.get(key) == 1 and key in entries
    assert part.hashes == 1
    assert key == ("acme", part) and hash(key) == hash(("acme", part)) and entries[("acme", part)] == 1
    assert isinstance(key, tuple) and key[0] == "acme"  # forget() reads the connection's name there


async def test_a_cache_hit_hashes_no_configuration(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hit on an assume_role connection's credentials, its own or an end user's, hashes none of its
    frozen configuration (each hash walks every field; three of them made most of an 11.6 us hit before,
    issue 15); forget() still finds both kinds of entry by the connection's name."""
    cache = CredentialCache(clock=clock)
    providers = Providers(loads(TENANT, env={}).connections, cache=cache)
    source = Source(clock)
    providers._by_name["t0"] = AsProvider(source)
    await providers.get("t0")
    await providers.get("t0", user="alice")
    hashes = 0
    real_hash = CredentialsConfig.__hash__

    def counting(self: CredentialsConfig) -> int:
        nonlocal hashes
        hashes += 1
        return real_hash(self)

    monkeypatch.setattr(CredentialsConfig, "__hash__", counting)
    for _ in range(3):
        assert (await providers.get("t0"))[1] and (await providers.get("t0", user="alice"))[1]
    assert hashes == 0 and source.calls == 2
    assert cache.forget({"t0"}) == 2
    await cache.close()


async def test_fresh_answers_only_what_get_would_hand_out_at_once(cache: CredentialCache, clock: Clock) -> None:
    """fresh() is get()'s hit without its coroutine: the credentials while they are before their advisory
    window (counted as hits), ``None`` before any fetch, from the advisory window on (get() then starts the
    refresh) and for expired ones; it never fetches. Per-user entries are looked up in their own LRU."""
    src = Source(clock)
    assert cache.fresh("k") is None and cache.fresh("k", per_user=True) is None
    creds, _ = await cache.get("k", src.fetch, "k")
    hits = cache.stats.hits
    assert cache.fresh("k") is creds and cache.stats.hits == hits + 1
    assert cache.fresh("k", per_user=True) is None  # the connection's entry is not an end user's
    clock.advance(HOUR - timedelta(minutes=16))  # 16 min left: before the 15 min advisory window
    assert cache.fresh("k") is creds
    clock.advance(timedelta(minutes=2))  # 14 min left: advisory
    assert cache.fresh("k") is None and src.calls == 1
    assert (await cache.get("k", src.fetch, "k"))[1]  # a hit, and get() starts the refresh
    await settle()
    assert src.calls == 2
    assert cache.fresh("k") is not creds and cache.fresh("k") is not None  # the refreshed ones
    clock.advance(2 * HOUR)
    assert cache.fresh("k") is None  # expired
    user = await cache.get(("k", "alice"), src.fetch, "k alice", per_user=True)
    assert cache.fresh(("k", "alice"), per_user=True) is user[0] and cache.fresh(("k", "alice")) is None


async def test_ready_is_a_hit_in_one_call(clock: Clock) -> None:
    """Providers.ready: static keys and their identity at once; an expiring connection's (its own or an end
    user's) only once fetched and before the advisory window, with the identity get() + identity() give;
    otherwise None, and the request awaits get()."""
    config = loads('[connections.keys]\nhosts = ["*.amazonaws.com"]\n[connections.keys.credentials]\n'
                   'source = "static"\naccess_key_id = "AKIDSTATIC"\nsecret_access_key = "s"\n' + TENANT +
                   '[connections.t1]\nhosts = ["*.amazonaws.com"]\n[connections.t1.credentials]\n'
                   'source = "assume_role"\nrole_arn = "arn:aws:iam::111122223333:role/t1"\n', env={})
    cache = CredentialCache(clock=clock)
    providers = Providers(config.connections, cache=cache)
    source = Source(clock)
    providers._by_name["t0"] = providers._by_name["t1"] = AsProvider(source)
    ready = providers.ready("keys")
    assert ready is not None and ready[0].access_key_id == "AKIDSTATIC"
    assert ready[1] is providers.identity("keys")
    assert providers.ready("t1") is None and providers.ready("t0", user="alice") is None and source.calls == 0
    t1, _ = await providers.get("t1")
    alice, _ = await providers.get("t0", user="alice")
    assert providers.ready("t1") == (t1, providers.identity("t1"))
    ready = providers.ready("t0", user="alice")
    assert ready is not None and ready[0] is alice
    assert ready[1] == providers.identity("t0", user="alice") and ready[1].session_name is not None
    assert "alice" in ready[1].session_name
    assert providers.ready("t0", user="bob") is None  # not fetched for bob yet
    clock.advance(HOUR - timedelta(minutes=10))  # advisory: get() must see it, to start the refresh
    assert providers.ready("t1") is None and providers.ready("t0", user="alice") is None
    assert source.calls == 2
    await cache.close()
