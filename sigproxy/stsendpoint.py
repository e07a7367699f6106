"""The ``sts_endpoint`` credential source: a custom HTTPS endpoint that answers credentials as JSON (the contract
in DESIGN.md: POST ``{"role_arn", "external_id", "region", "service"[, "user"]}``, answer
``{"accessKeyId", "secretAccessKey"[, "sessionToken"][, "expiresAt"|"expires_at"|"expiration"]}``, flat or
under ``"credentials"``).

Owns: calling that endpoint and reading its answer. Failures are :class:`~sigproxy.errors.CredentialsUnavailable`
(:class:`~sigproxy.errors.CredentialsTemporarilyUnavailable` for an unreachable endpoint, a 5xx or a 429).
Must not: log the answer or a secret header.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from .config import ConnectionConfig
from .errors import CredentialsTemporarilyUnavailable, CredentialsUnavailable
from .signing import Credentials

if TYPE_CHECKING:
    from .credentials import Providers

__all__ = ["StsEndpoint", "parse_sts_endpoint_answer"]

# An answer without an expiry is taken to last this long (DESIGN.md contract).
_DEFAULT_LIFETIME = timedelta(hours=1)
_STS_ENDPOINT_SECONDS = 30
_EXPIRY_NAMES = ("expiresAt", "expires_at", "expiration")


def _expiry(value: object, what: str) -> datetime:
    if isinstance(value, bool):
        raise CredentialsUnavailable(f"{what}: expiry is not a time")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):  # NaN, infinities, years outside 1-9999
            raise CredentialsUnavailable(f"{what}: expiry {value!r} is not a time") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise CredentialsUnavailable(f"{what}: expiry {value[:40]!r} is not ISO-8601 or Unix seconds") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise CredentialsUnavailable(f"{what}: expiry is not a time")


def parse_sts_endpoint_answer(data: object, now: datetime, what: str = "STS endpoint") -> Credentials:
    """Credentials from a custom STS endpoint's JSON answer (flat or under ``credentials``).

    Raises :class:`CredentialsUnavailable` naming what is missing; never echoes the answer.
    """
    if isinstance(data, Mapping) and isinstance(data.get("credentials"), Mapping):
        data = data["credentials"]
    if not isinstance(data, Mapping):
        raise CredentialsUnavailable(f"{what}: the answer is not a JSON object")
    missing = [k for k in ("accessKeyId", "secretAccessKey") if not isinstance(data.get(k), str) or not data[k]]
    if missing:
        raise CredentialsUnavailable(f"{what}: the answer has no {' and no '.join(missing)}")
    token = data.get("sessionToken")
    if token is not None and not isinstance(token, str):
        raise CredentialsUnavailable(f"{what}: sessionToken is not a string")
    expiry_value = next((data[k] for k in _EXPIRY_NAMES if data.get(k) is not None), None)
    expires = now + _DEFAULT_LIFETIME if expiry_value is None else _expiry(expiry_value, what)
    if expires <= now:
        raise CredentialsUnavailable(f"{what}: the credentials it returned have already expired")
    return Credentials(data["accessKeyId"], data["secretAccessKey"], token or None, expires)


class StsEndpoint:
    """The source of a connection whose ``credentials.source`` is ``sts_endpoint``; ``providers`` lends its
    HTTP session."""

    def __init__(self, conn: ConnectionConfig, providers: Providers) -> None:
        self._conn = conn
        self._providers = providers

    async def fetch(self, user: str | None = None) -> Credentials:
        import aiohttp  # noqa: PLC0415 - only for this credential source (the session is Providers.http's)

        c = self._conn.credentials
        name = self._conn.name
        what = f"connection {name!r}: STS endpoint"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if c.auth == "api_key" and c.api_key is not None:
            headers[c.api_key_header] = c.api_key.reveal()
        elif c.password is not None:
            pair = f"{c.username}:{c.password.reveal()}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        body = {"role_arn": c.role_arn, "external_id": c.external_id, "region": self._conn.region,
                "service": self._conn.service}
        if user is not None and self._conn.user_header:
            body["user"] = user
        timeout = aiohttp.ClientTimeout(total=_STS_ENDPOINT_SECONDS)
        try:
            async with self._providers.http().post(str(c.url), json=body, headers=headers,
                                                   timeout=timeout, allow_redirects=False) as resp:
                if resp.status != 200:
                    hint = " (check api_key / username and password)" if resp.status in (401, 403) else ""
                    raise CredentialsUnavailable.from_sts(f"{what} answered HTTP {resp.status}{hint}", sts_code=None,
                                                          transient=resp.status >= 500 or resp.status == 429)
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CredentialsTemporarilyUnavailable(f"{what} unreachable: {type(exc).__name__}: {exc}") from exc
        try:
            data = json.loads(raw)
        except ValueError:
            raise CredentialsUnavailable(f"{what}: the answer is not JSON") from None
        return parse_sts_endpoint_answer(data, datetime.now(UTC), what)
