"""Checking a connection at AWS: resolve its credentials, then STS GetCallerIdentity.

Two callers: ``POST /v1/connections/{name}/check`` and ``sigproxy check`` use the proxy's own credential
cache (what the proxy would sign with); onboarding validates a *candidate* connection -- a customer's role
ARN not yet stored -- with a private cache, so a failed attempt leaves no back-off behind and a customer
who fixes their trust policy can retry at once.

Owns: turning STS's refusals into a code and a message a customer can act on.
Must not: store anything, or put a secret in a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .connection import ConnectionConfig
from .credcache import CredentialCache
from .credentials import Providers, caller_identity
from .errors import CredentialsUnavailable

__all__ = ["CheckResult", "check_connection", "validate_candidate", "customer_message"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """``ok`` with the caller ``arn``, or not with STS's ``code`` (``AccessDenied``) and a ``message``."""

    ok: bool
    arn: str | None = None
    code: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, object]:
        if self.ok:
            return {"ok": True, "arn": self.arn}
        return {"ok": False, "code": self.code, "message": self.message}


def customer_message(conn: ConnectionConfig, code: str | None, sts_message: str) -> str:
    """What a customer should change when validating ``conn``'s role failed with STS error ``code``.

    Sources: STS AssumeRole errors (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html)
    and IAM's trust-policy rules for ``sts:ExternalId``.
    """
    c = conn.credentials
    role = c.role_arn or "the role"
    if code == "AccessDenied":
        hints = [f"sigproxy may not assume {role}: check that the role exists, that its trust policy allows the "
                 "platform's principal to call sts:AssumeRole"]
        if c.external_id:
            hints.append(f"with the ExternalId {c.external_id} exactly (condition sts:ExternalId)")
        if conn.require_role_path:
            hints.append(f"and that the role's path is {conn.require_role_path}")
        return ", ".join(hints) + f". AWS said: {sts_message}"
    if code in ("NoSuchEntity", "NotFound", "ValidationError"):
        return f"the role ARN {role} is not valid or the role does not exist: copy it from the IAM console " \
               f"or the CloudFormation stack's outputs. AWS said: {sts_message}"
    if code == "RegionDisabledException":
        return f"STS is not activated in this region for the customer's account: use another region or " \
               f"activate it in IAM account settings. AWS said: {sts_message}"
    return f"AWS refused the role: {sts_message}" if sts_message else "AWS refused the role"


def _result(conn: ConnectionConfig, exc: CredentialsUnavailable) -> CheckResult:
    code = exc.sts_code or "CredentialsUnavailable"
    sts_message = exc.sts_message if exc.sts_message is not None else exc.message
    return CheckResult(ok=False, code=code, message=customer_message(conn, exc.sts_code, sts_message))


async def check_connection(providers: Providers, conn: ConnectionConfig) -> CheckResult:
    """Resolve ``conn``'s credentials through ``providers`` (its cache), then GetCallerIdentity.

    Never raises for an AWS refusal: it is in the result.
    """
    try:
        creds, _ = await providers.get(conn.name)
        arn = await caller_identity(conn, creds)
    except CredentialsUnavailable as exc:
        return _result(conn, exc)
    return CheckResult(ok=True, arn=arn)


async def validate_candidate(candidate: ConnectionConfig, connections: Mapping[str, ConnectionConfig]
                             ) -> CheckResult:
    """AssumeRole (with the candidate's ExternalId) and GetCallerIdentity for a connection not yet in use,
    with a private cache; ``connections`` supplies its role-chain base when that is another connection."""
    # Expected refusals (a customer's trust policy not ready yet) are the answer, not a warning in the log.
    cache = CredentialCache(log_failures=False)
    try:
        async with Providers({**connections, candidate.name: candidate}, cache) as providers:
            return await check_connection(providers, candidate)
    finally:
        await cache.close()
