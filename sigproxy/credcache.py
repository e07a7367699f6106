"""The credential cache in front of every expiring source: refresh ahead of expiry, one fetch at a time.

Windows before expiry (each capped at a fraction of the credentials' lifetime, so short-lived credentials
are not refreshed on every request):

* advisory (default 15 min): requests keep the current credentials; one background refresh starts.
* mandatory (default 5 min): requests wait for the single refresh in flight; if it fails while the
  credentials are still valid they are used, and the failure is logged once per streak.
* expired or none: requests wait for the refresh; when it fails they get the STS error
  (:class:`~sigproxy.errors.CredentialsUnavailable`). Expired credentials are never handed out.

After a failure the next attempt waits a jittered exponential back-off, so a dead STS is not hammered;
requests arriving meanwhile with no valid credentials fail fast with the last error.

Entries live in two LRUs: one per connection (and its effective parameters), and a separate one for
per-end-user entries (``user_header`` connections), so a stream of distinct user ids can neither grow
memory without bound nor push the connections' own entries out. An evicted user simply fetches again.
Both are sized from the configuration (:meth:`CredentialCache.configure`, at start and at every reload):
room for every configured connection twice over, so no configured connection is ever evicted -- each is
fetched once and then only refreshed ahead of expiry, however large the fleet (issue 12: a fixed 4,096 made
a fleet of 5,000 fetch on every pass) -- and ``[proxy] credential_cache_users`` end users.

Must not: know where credentials come from (it calls the ``fetch`` it is given), or log secret fields.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cachetools import LRUCache

from .errors import CredentialsUnavailable
from .signing import Credentials
from .tasks import TaskSet

__all__ = ["CacheStats", "CredentialCache", "EntryState"]

logger = logging.getLogger(__name__)

DEFAULT_ADVISORY = timedelta(minutes=15)
DEFAULT_MANDATORY = timedelta(minutes=5)
# Back-off after failed fetches: 1 s doubling to 5 min, each delay jittered to 50-100 %.
_BACKOFF_BASE = 1.0
_BACKOFF_CAP = 300.0
_MAX_KEYS = 4096
_MAX_USER_KEYS = 4096

EntryState = Literal["up", "down", "unknown"]
"""What the cache knows of one key's credentials, without fetching (:meth:`CredentialCache.state`)."""


@dataclass
class CacheStats:
    """Counters for metrics and tests."""

    hits: int = 0
    misses: int = 0
    fetches: int = 0
    failures: int = 0


class CacheKey(tuple[Hashable, ...]):
    """A cache key: the tuple of its parts (equal to it, hashed as it is), its hash computed once.

    A connection's key holds its frozen credentials configuration, whose generated ``__hash__`` hashes every
    field at each call, and cachetools' LRU hashes a key three times a hit: an ``assume_role`` connection's
    cache hit cost 11.6 µs, against 0.9 µs for static keys that skip the cache (issue 15,
    ``bench/credential_hit.py``; 3.4 µs now)."""

    _hash: int

    def __new__(cls, parts: Iterable[Hashable]) -> CacheKey:
        key = super().__new__(cls, parts)
        key._hash = tuple.__hash__(key)
        return key

    def __hash__(self) -> int:
        return self._hash


@dataclass
class _Entry:
    creds: Credentials | None = None
    fetched_at: datetime | None = None
    windows: tuple[datetime, datetime] | None = None
    """(advisory start, mandatory start) of ``creds``' refresh (:meth:`CredentialCache._windows`), ``None``
    when they do not expire; set with them."""
    task: asyncio.Task[None] | None = None
    failures: int = 0
    retry_at: datetime | None = None
    last_error: CredentialsUnavailable | None = None


class CredentialCache:
    """Bounded cache of credential snapshots keyed by connection and effective parameters."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        advisory: timedelta = DEFAULT_ADVISORY,
        mandatory: timedelta = DEFAULT_MANDATORY,
        max_keys: int = _MAX_KEYS,
        max_user_keys: int = _MAX_USER_KEYS,
        jitter: Callable[[], float] = random.random,
        on_fetch: Callable[[float], None] = lambda _seconds: None,
        log_failures: bool = True,
    ) -> None:
        """``log_failures=False``: a failed fetch is not logged as a warning (a private cache whose caller
        reports the outcome itself, such as onboarding validation)."""
        if mandatory > advisory:
            raise ValueError("the mandatory refresh window must not be longer than the advisory one")
        self._clock = clock
        self._advisory = advisory
        self._mandatory = mandatory
        self._entries: LRUCache[Hashable, _Entry] = LRUCache(maxsize=max_keys)
        self._user_entries: LRUCache[Hashable, _Entry] = LRUCache(maxsize=max_user_keys)
        self._jitter = jitter
        self._tasks = TaskSet()
        self._on_fetch = on_fetch
        self._log_failures = log_failures
        self.stats = CacheStats()

    async def close(self) -> None:
        await self._tasks.cancel_all()

    def configure(self, *, connections: int, users: int) -> None:
        """Size the LRUs for a configuration of ``connections`` connections and ``users`` cached end users.

        The connection LRU holds ``2 * connections + 1`` entries: every configured connection, as many entries
        of connections a reload changed or removed (requests in flight may still use them), and the default
        AWS chain. Entries are kept in recency order; when a size shrinks, the least recently used go first.
        """
        if connections < 0 or users < 1:
            raise ValueError("connections must be >= 0 and users >= 1")
        self._entries = _resized(self._entries, 2 * connections + 1)
        self._user_entries = _resized(self._user_entries, users)

    @property
    def capacity(self) -> tuple[int, int]:
        """(connection entries, end-user entries) the LRUs hold at most."""
        return int(self._entries.maxsize), int(self._user_entries.maxsize)

    def state(self, key: Hashable) -> EntryState:
        """``"up"`` while ``key`` holds valid credentials, ``"down"`` when it holds none and its last fetch
        failed, ``"unknown"`` before any fetch finished. Never fetches (metrics and health read it)."""
        entry = self._entries.get(key)
        if entry is None:
            return "unknown"
        creds = entry.creds
        if creds is not None and (creds.expires_at is None or self._clock() < creds.expires_at):
            return "up"
        return "down" if entry.last_error is not None else "unknown"

    def _windows(self, entry: _Entry, expires_at: datetime) -> tuple[datetime, datetime]:
        """(advisory start, mandatory start) for credentials expiring at ``expires_at``."""
        lifetime = expires_at - (entry.fetched_at or expires_at)
        advisory = min(self._advisory, lifetime / 2)
        mandatory = min(self._mandatory, lifetime / 4)
        return expires_at - advisory, expires_at - mandatory

    def fresh(self, key: Hashable, *, per_user: bool = False) -> Credentials | None:
        """``key``'s credentials when :meth:`get` would hand them out at once without starting a refresh (they do
        not expire, or their advisory window has not begun), counted as a hit; otherwise ``None`` (ask
        :meth:`get`). Never fetches, never waits: the hot path's one call on a hit (issue 15)."""
        entry = (self._user_entries if per_user else self._entries).get(key)
        if entry is None or entry.creds is None:
            return None
        windows = entry.windows
        if windows is not None and self._clock() >= windows[0]:
            return None
        self.stats.hits += 1
        return entry.creds

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[Credentials]], label: str, *,
                  per_user: bool = False) -> tuple[Credentials, bool]:
        """Credentials for ``key`` and whether they came from the cache without waiting.

        ``per_user``: the key is one end user's (kept in the separate, bounded per-user LRU).
        Raises :class:`CredentialsUnavailable` when no valid credentials can be had.
        """
        entries = self._user_entries if per_user else self._entries
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = _Entry()
        now = self._clock()
        creds = entry.creds
        if creds is not None:
            if entry.windows is None:  # they do not expire
                self.stats.hits += 1
                return creds, True
            advisory_at, mandatory_at = entry.windows
            if now < advisory_at:
                self.stats.hits += 1
                return creds, True
            if now < mandatory_at:
                self._start(entry, fetch, label, now)
                self.stats.hits += 1
                return creds, True
        self.stats.misses += 1
        task = self._start(entry, fetch, label, now)
        if task is not None:
            await asyncio.shield(task)
        creds = entry.creds
        if creds is not None and (creds.expires_at is None or self._clock() < creds.expires_at):
            return creds, False
        if entry.last_error is not None:
            raise entry.last_error
        raise CredentialsUnavailable(f"{label}: no credentials")  # pragma: no cover - a fetch sets one

    def _start(self, entry: _Entry, fetch: Callable[[], Awaitable[Credentials]], label: str,
               now: datetime) -> asyncio.Task[None] | None:
        """The refresh in flight, a new one, or ``None`` while backing off after failures."""
        if entry.task is not None and not entry.task.done():
            return entry.task
        if entry.retry_at is not None and now < entry.retry_at:
            return None
        entry.task = self._tasks.spawn(self._refresh(entry, fetch, label), name=f"credentials:{label}")
        return entry.task

    async def _refresh(self, entry: _Entry, fetch: Callable[[], Awaitable[Credentials]], label: str) -> None:
        self.stats.fetches += 1
        started = time.monotonic()
        try:
            creds = await fetch()
        except CredentialsUnavailable as exc:
            self._failed(entry, exc, label)
            return
        except Exception as exc:  # a provider bug must not kill the cache; it is reported
            logger.exception("credential source for %s raised unexpectedly", label)
            self._failed(entry, CredentialsUnavailable(f"{label}: {type(exc).__name__}"), label)
            return
        finally:
            self._on_fetch(time.monotonic() - started)
        if entry.failures:
            logger.warning("credentials for %s refreshed after %d failed attempt(s)", label, entry.failures)
        entry.creds = creds
        entry.fetched_at = self._clock()
        entry.windows = None if creds.expires_at is None else self._windows(entry, creds.expires_at)
        entry.failures = 0
        entry.retry_at = None
        entry.last_error = None

    def _failed(self, entry: _Entry, exc: CredentialsUnavailable, label: str) -> None:
        self.stats.failures += 1
        entry.failures += 1
        entry.last_error = exc
        delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (entry.failures - 1)) * (0.5 + self._jitter() / 2)
        entry.retry_at = self._clock() + timedelta(seconds=delay)
        if entry.failures == 1 and self._log_failures:
            valid = entry.creds is not None and (
                entry.creds.expires_at is None or self._clock() < entry.creds.expires_at
            )
            logger.warning("credential refresh for %s failed (%s); %s; retrying with back-off", label,
                           exc.message, "still serving the current credentials" if valid else "no valid credentials")

    def forget(self, names: set[str]) -> int:
        """Drop every entry (its own and its end users') of the connections in ``names``: a connection deleted
        or changed at runtime keeps no credentials (keys are tuples whose first item is the connection's name).
        Requests in flight keep the snapshot they hold; a refresh in flight finishes into a dropped entry.
        Returns how many entries were dropped."""
        dropped = 0
        for entries in (self._entries, self._user_entries):
            stale = [k for k in entries if isinstance(k, tuple) and k and k[0] in names]
            for key in stale:
                del entries[key]
            dropped += len(stale)
        return dropped

    def windows(self, key: Hashable, *, per_user: bool = False) -> tuple[datetime, datetime] | None:
        """(advisory start, mandatory start) of the credentials ``key`` holds now, or ``None`` when they do not
        expire or there are none: when a holder of a copy (a worker of ``workers = N``) should ask again."""
        entry = (self._user_entries if per_user else self._entries).get(key)
        return None if entry is None or entry.creds is None else entry.windows

    def retry_at(self, key: Hashable) -> datetime | None:
        """When the next fetch for ``key`` may start (back-off), for tests and diagnostics."""
        entry = self._entries.get(key) or self._user_entries.get(key)
        return None if entry is None else entry.retry_at

    def size(self) -> int:
        """Entries held (connections and users), for tests and diagnostics."""
        return len(self._entries) + len(self._user_entries)


def _resized(cache: LRUCache[Hashable, _Entry], maxsize: int) -> LRUCache[Hashable, _Entry]:
    """``cache`` with room for ``maxsize`` entries, its entries moved over in recency order."""
    if cache.maxsize == maxsize:
        return cache
    resized: LRUCache[Hashable, _Entry] = LRUCache(maxsize=maxsize)
    moved = []
    while cache:
        moved.append(cache.popitem())  # least recently used first
    for key, entry in moved:  # the most recently used end up most recent (and survive a shrink)
        resized[key] = entry
    return resized
