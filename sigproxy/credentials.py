"""Credential providers: each connection's source of AWS credentials, handing out frozen snapshots.

Owns: the ``static`` and ``chain`` sources (the standard AWS chain through aiobotocore), translating
their failures into :class:`~sigproxy.errors.CredentialsUnavailable`, and STS GetCallerIdentity for
``sigproxy check``.
Must not: sign, know about HTTP requests, or log a secret field.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any, Protocol

from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from .config import ConnectionConfig
from .errors import CredentialsUnavailable
from .signing import Credentials

__all__ = ["CredentialProvider", "StaticProvider", "ChainProvider", "Providers", "caller_identity"]

logger = logging.getLogger(__name__)


class CredentialProvider(Protocol):
    async def get(self) -> Credentials:
        """Current credentials. Raises :class:`CredentialsUnavailable`."""
        ...


class StaticProvider:
    """Keys from the config (resolved from ``${env:...}``/``${file:...}`` at load time)."""

    __slots__ = ("_creds",)

    def __init__(self, creds: Credentials) -> None:
        self._creds = creds

    async def get(self) -> Credentials:
        return self._creds


class ChainProvider:
    """The standard AWS chain via aiobotocore: env, shared files (``profile``), SSO, process, container, IMDS."""

    __slots__ = ("_lock", "_name", "_profile", "_resolved")

    def __init__(self, name: str, profile: str | None) -> None:
        self._name = name
        self._profile = profile
        self._resolved: Any = None
        self._lock = asyncio.Lock()

    async def get(self) -> Credentials:
        try:
            if self._resolved is None:
                async with self._lock:
                    if self._resolved is None:
                        self._resolved = await AioSession(profile=self._profile).get_credentials()
            if self._resolved is None:
                raise CredentialsUnavailable(
                    f"connection {self._name!r}: the AWS credential chain found no credentials"
                )
            frozen = await self._resolved.get_frozen_credentials()
        except (BotoCoreError, ClientError) as exc:
            raise CredentialsUnavailable(
                f"connection {self._name!r}: the AWS credential chain failed: {type(exc).__name__}"
            ) from exc
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token or None)


def _provider(conn: ConnectionConfig) -> CredentialProvider:
    c = conn.credentials
    if c.source == "static":
        if c.access_key_id is None or c.secret_access_key is None:
            raise ValueError(f"connection {conn.name!r}: static credentials need both keys")
        token = c.session_token.reveal() if c.session_token else None
        return StaticProvider(Credentials(c.access_key_id, c.secret_access_key.reveal(), token))
    return ChainProvider(conn.name, c.profile)


class Providers:
    """One provider per connection, built from the config."""

    __slots__ = ("_by_name",)

    def __init__(self, connections: Mapping[str, ConnectionConfig]) -> None:
        self._by_name = {name: _provider(conn) for name, conn in connections.items()}

    async def get(self, name: str) -> Credentials:
        return await self._by_name[name].get()


async def caller_identity(conn: ConnectionConfig, creds: Credentials) -> str:
    """STS GetCallerIdentity with ``creds`` (through ``sts_endpoint_url`` when set); returns the ARN.

    Raises :class:`CredentialsUnavailable` with the STS error code (never the keys).
    """
    session = AioSession()
    region = conn.region or "us-east-1"
    kwargs: dict[str, Any] = {
        "region_name": region,
        "aws_access_key_id": creds.access_key_id,
        "aws_secret_access_key": creds.secret_access_key,
        "aws_session_token": creds.session_token,
    }
    if conn.sts_endpoint_url:
        kwargs["endpoint_url"] = conn.sts_endpoint_url
    try:
        async with AsyncExitStack() as stack:
            sts = await stack.enter_async_context(session.create_client("sts", **kwargs))
            answer = await sts.get_caller_identity()
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise CredentialsUnavailable(f"STS refused: {err.get('Code', '?')}: {err.get('Message', '')}") from exc
    except BotoCoreError as exc:
        raise CredentialsUnavailable(f"STS unreachable: {exc}") from exc
    return str(answer["Arn"])
