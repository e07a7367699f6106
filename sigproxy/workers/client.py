"""A worker's side of the credential broker: copies of the group's credentials, asked for once per key.

The supervisor's cache (:mod:`sigproxy.credcache`) decides when credentials are refreshed; a worker keeps the
copy it was handed and asks again only when the broker says so:

* before the copy's *refresh time* (the broker's advisory window start, at least a second away): the copy is
  used, no message is sent;
* after it, while the copy may still be used (before the broker's mandatory window, or at least a second more
  when the broker itself is serving credentials inside that window after a failed refresh): the copy is used and
  one background ask goes out;
* otherwise requests wait for the one ask in flight for that key (a cold burst of 200 requests in one worker is
  one message; the broker coalesces the workers into one fetch).

A failed ask is remembered until the broker's back-off ends (its ``retry_at``): requests meanwhile fail at
once with the same :class:`~sigproxy.errors.CredentialsUnavailable`, as in one process.

Must not: fetch credentials itself, or log a secret field.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cachetools import LRUCache

from sigproxy.connection import ConnectionConfig
from sigproxy.errors import CredentialsTemporarilyUnavailable, CredentialsUnavailable
from sigproxy.signing import Credentials
from sigproxy.tasks import TaskSet

from .wire import Peer, credentials_from_json, error_from_json, fingerprint, time_from_json

__all__ = ["BrokerClient", "ClientStats"]

logger = logging.getLogger(__name__)

# Never ask the broker about one key more than about once per this long (a broker still refreshing, or serving
# credentials inside its mandatory window after a failed refresh, would otherwise be asked on every request).
_MIN_GAP = timedelta(seconds=1)
_MIN_KEYS = 4096

Key = tuple[str, str, str | None]


@dataclass
class ClientStats:
    """Lookups answered from the copies (``hits``) and lookups that waited for the broker (``misses``)."""

    hits: int = 0
    misses: int = 0
    asks: int = 0


@dataclass
class _Copy:
    creds: Credentials | None = None
    refresh_at: datetime | None = None
    use_until: datetime | None = None
    error: CredentialsUnavailable | None = None
    retry_at: datetime | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class BrokerClient:
    """Credentials from the supervisor over ``peer``; a :class:`~sigproxy.brokered.CredentialBroker`."""

    def __init__(self, peer: Peer, key: bytes, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._peer = peer
        self._key = key
        self._clock = clock
        self._copies: LRUCache[Key, _Copy] = LRUCache(maxsize=_MIN_KEYS)
        self._tasks = TaskSet()
        self.stats = ClientStats()

    def configure(self, *, connections: int, users: int) -> None:
        """Room for every connection twice over plus ``users`` end users (as the broker's own cache)."""
        size = max(_MIN_KEYS, 2 * connections + 1 + users)
        if size != self._copies.maxsize:
            resized: LRUCache[Key, _Copy] = LRUCache(maxsize=size)
            resized.update(self._copies)
            self._copies = resized

    def fingerprint(self, connections: Mapping[str, ConnectionConfig], name: str) -> str:
        return fingerprint(self._key, connections, name)

    def forget(self, names: set[str]) -> None:
        """Drop the copies of the connections in ``names`` (changed or deleted)."""
        for key in [k for k in self._copies if k[0] in names]:
            del self._copies[key]

    async def close(self) -> None:
        await self._tasks.cancel_all()

    async def get(self, name: str, fingerprint: str, user: str | None) -> tuple[Credentials, bool]:
        """Credentials of connection ``name`` (as its settings' ``fingerprint`` says) for end user ``user``, and
        whether they came without waiting. Raises :class:`CredentialsUnavailable`."""
        key = (name, fingerprint, user)
        copy = self._copies.get(key)
        if copy is None:
            copy = self._copies[key] = _Copy()
        now = self._clock()
        creds = copy.creds
        if creds is not None and (creds.expires_at is None or now < creds.expires_at):
            if copy.refresh_at is None or now < copy.refresh_at:
                self.stats.hits += 1
                return creds, True
            if copy.use_until is not None and now < copy.use_until:
                self._ask(copy, key)
                self.stats.hits += 1
                return creds, True
        elif copy.error is not None and copy.retry_at is not None and now < copy.retry_at \
                and (copy.task is None or copy.task.done()):
            raise copy.error
        self.stats.misses += 1
        await asyncio.shield(self._ask(copy, key))
        creds = copy.creds
        if creds is not None and (creds.expires_at is None or self._clock() < creds.expires_at):
            return creds, False
        raise copy.error or CredentialsUnavailable(f"connection {name!r}: no credentials from the supervisor")

    def _ask(self, copy: _Copy, key: Key) -> asyncio.Task[None]:
        if copy.task is None or copy.task.done():
            copy.task = self._tasks.spawn(self._asked(copy, key), name=f"broker:{key[0]}")
        return copy.task

    async def _asked(self, copy: _Copy, key: Key) -> None:
        name, print_, user = key
        self.stats.asks += 1
        try:
            answer = await self._peer.request("credentials", name=name, fingerprint=print_, user=user)
        except (ConnectionError, RuntimeError, CredentialsUnavailable) as exc:
            logger.error("credentials for connection %r: the supervisor did not answer (%s)", name,
                         type(exc).__name__)
            copy.error = CredentialsTemporarilyUnavailable(f"connection {name!r}: the supervisor did not answer")
            copy.retry_at = self._clock() + _MIN_GAP
            return
        now = self._clock()
        if "failed" in answer:
            error = error_from_json(answer["failed"])
            copy.error = error if isinstance(error, CredentialsUnavailable) else CredentialsUnavailable(str(error))
            copy.retry_at = time_from_json(answer.get("retry_at")) or now + _MIN_GAP
            return
        creds = credentials_from_json(answer["credentials"])
        advisory, mandatory = time_from_json(answer.get("refresh_at")), time_from_json(answer.get("mandatory_at"))
        if creds.expires_at is None or advisory is None or mandatory is None:
            copy.refresh_at = copy.use_until = None
        else:
            copy.use_until = max(mandatory, min(now + _MIN_GAP, creds.expires_at))
            copy.refresh_at = min(max(advisory, now + _MIN_GAP), copy.use_until)
        copy.creds, copy.error, copy.retry_at = creds, None, None
