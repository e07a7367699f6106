"""The supervisor's side of the credential broker: one cache, one fetch per connection for the whole group.

A worker asks for connection NAME with the fingerprint of its settings (:func:`~sigproxy.workers.wire.fingerprint`)
and an end user. The broker answers from the supervisor's own :class:`~sigproxy.credentials.Providers` -- the
same single-flight cache a single process uses, so 200 cold requests spread over every worker make one STS call
-- and says when the copy should be asked for again (the cache's advisory and mandatory window starts), or, when
no credentials can be had, the error and when the cache will try again (its back-off).

Worker and supervisor each follow config reloads and the connection store, so for a moment they may disagree on
what NAME is. The broker keeps the providers of the last few generations (a worker still on the previous file
asks with the previous fingerprint and is served as it would have been); a fingerprint it does not know makes
it catch up with the store once and look again; still unknown, it refuses clearly rather than sign with other
settings than the worker's.

Must not: log a secret field.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

from sigproxy.credentials import Providers
from sigproxy.errors import CredentialsTemporarilyUnavailable, CredentialsUnavailable

from .wire import Message, credentials_to_json, error_to_json, fingerprint, time_to_json

__all__ = ["Broker"]

logger = logging.getLogger(__name__)

_GENERATIONS = 8


class Broker:
    """Answers workers' ``credentials`` requests from the supervisor's providers."""

    def __init__(self, key: bytes, *, catch_up: Callable[[], Awaitable[None]] | None = None) -> None:
        """``key``: the group's fingerprint key; ``catch_up``: bring the supervisor's registry up to date with the
        store (called when a worker names settings the broker does not know)."""
        self.key = key
        self._catch_up = catch_up
        self._generations: deque[tuple[Providers, dict[str, str]]] = deque(maxlen=_GENERATIONS)

    def remember(self, providers: Providers) -> None:
        """The providers the supervisor serves from now on (after a reload or a store change)."""
        if not self._generations or self._generations[0][0] is not providers:
            self._generations.appendleft((providers, {}))

    def _find(self, name: str, print_: str) -> Providers | None:
        for providers, prints in self._generations:
            known = prints.get(name)
            if known is None:
                if name not in providers.connections:
                    continue
                known = prints[name] = fingerprint(self.key, providers.connections, name)
            if known == print_:
                return providers
        return None

    async def answer(self, message: Message) -> Message:
        """The answer to one ``credentials`` request: ``{"credentials", "refresh_at", "mandatory_at"}`` or
        ``{"failed", "retry_at"}`` (times in Unix seconds)."""
        name, print_, user = str(message["name"]), str(message["fingerprint"]), message.get("user")
        user = None if user is None else str(user)
        providers = self._find(name, print_)
        if providers is None and self._catch_up is not None:
            await self._catch_up()
            providers = self._find(name, print_)
        if providers is None:
            exc = CredentialsTemporarilyUnavailable(
                f"connection {name!r}: this worker's settings of the connection differ from the supervisor's (a "
                "reload or a connection store change is under way); retry")
            logger.warning("credentials for connection %r refused to a worker: its settings differ from the "
                           "supervisor's", name)
            return {"failed": error_to_json(exc), "retry_at": None}
        try:
            creds, _ = await providers.get(name, user=user)
        except CredentialsUnavailable as exc:
            return {"failed": error_to_json(exc), "retry_at": time_to_json(providers.retry_at(name, user=user))}
        advisory, mandatory = providers.timing(name, user=user)
        return {"credentials": credentials_to_json(creds), "refresh_at": time_to_json(advisory),
                "mandatory_at": time_to_json(mandatory)}
