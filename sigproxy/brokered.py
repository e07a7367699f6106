"""Credentials a worker of ``workers = N`` asks of the group's broker instead of fetching them itself.

The supervisor of a group owns the one credential cache (single-flight, refresh ahead of expiry); each worker's
:class:`~sigproxy.credentials.Providers` hands every expiring connection to a :class:`CredentialBroker`
(:mod:`sigproxy.workers.client`), which keeps copies until the broker says to ask again.
Must not: fetch credentials, or log a secret field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .connection import ConnectionConfig
from .signing import Credentials

__all__ = ["Brokered", "CredentialBroker"]


class CredentialBroker(Protocol):
    """Where a worker of ``workers = N`` gets expiring credentials: the supervisor's one cache for the group
    (:mod:`sigproxy.workers`). A connection is named with a fingerprint of its settings, so a worker and the
    broker never disagree silently about what the connection is."""

    def fingerprint(self, connections: Mapping[str, ConnectionConfig], name: str) -> str:
        """A digest of connection ``name``'s credential settings and its role chain's."""
        ...

    async def get(self, name: str, fingerprint: str, user: str | None) -> tuple[Credentials, bool]:
        """Credentials and whether they came without waiting. Raises :class:`CredentialsUnavailable`."""
        ...


class Brokered:
    """A connection whose credentials come from the group's broker (static ones never do)."""

    __slots__ = ("_broker", "_fingerprint", "_name")

    def __init__(self, name: str, fingerprint: str, broker: CredentialBroker) -> None:
        self._name, self._fingerprint, self._broker = name, fingerprint, broker

    async def fetch(self, user: str | None = None) -> Credentials:
        return (await self.get(user))[0]

    async def get(self, user: str | None) -> tuple[Credentials, bool]:
        return await self._broker.get(self._name, self._fingerprint, user)
