"""Credential sources: each connection's way to AWS credentials, handed out as frozen snapshots.

Sources: ``static`` (config), ``chain`` (the standard AWS chain via aiobotocore), ``assume_role`` (STS
AssumeRole with ExternalId, session policy, tags, source identity; base credentials from the chain or
another connection: role chaining), ``web_identity`` (STS AssumeRoleWithWebIdentity with a token file read
at every refresh) and ``sts_endpoint`` (a custom HTTPS endpoint, contract in DESIGN.md). Every expiring
source sits behind the one :class:`~sigproxy.credcache.CredentialCache`.

Per end user (``[connections.NAME] user_header = true``, the id from ``X-Sigproxy-User``): ``${sigproxy:user}``
in ``session_name`` (default: the id itself), ``source_identity``, ``policy`` and tag values is replaced by
the id mapped into each field's STS rule (:mod:`sigproxy.users`: legal ids unchanged, others a readable
stand-in plus a hash), so CloudTrail names the end user and a session policy can scope each user down to
their own resources; IAM's own variables (``${aws:username}``) are sent untouched. Each user's credentials
are cached apart, keyed on the exact id (in the cache's bounded per-user LRU). The ``sts_endpoint``
contract gains ``"user": ID``, the exact id, in the POSTed JSON (absent without a user). Without a user --
readiness checks, ``sigproxy check``, and a ``user_header`` connection used as another connection's
role-chain ``base`` (base credentials are always fetched without a user) -- the templates are rendered with
the stand-in id :data:`NO_USER`.

Owns: talking to STS (and the custom endpoint), translating their failures into
:class:`~sigproxy.errors.CredentialsUnavailable` carrying the STS error code and message.
Must not: sign, know about proxied requests, or log a secret field or a response body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cachetools import LRUCache

from .brokered import Brokered as _Brokered
from .brokered import CredentialBroker
from .config import ConnectionConfig
from .credcache import CacheKey, CredentialCache, EntryState
from .errors import CredentialsUnavailable
from .signing import Credentials
from .stsendpoint import StsEndpoint
from .users import ROLE_SESSION, TAG_VALUE, Field, render, render_policy

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "NO_USER",
    "CredentialProvider",
    "StsLimits",
    "Identity",
    "Providers",
    "caller_identity",
    "sts_endpoint_for",
]

logger = logging.getLogger(__name__)

NO_USER = "sigproxy"
"""The id ``${sigproxy:user}`` stands for when a ``user_header`` connection is used without an end user."""


@dataclass(frozen=True, slots=True)
class StsLimits:
    """How long one STS call may take: ``timeout`` seconds to connect and to read, in ``attempts`` tries in all
    (botocore's ``standard`` retry mode). Without it botocore's defaults hold (60 s each, legacy retries: up to
    5 tries with back-off), which suit the proxy's refreshes; ``sigproxy check`` wants an answer in seconds."""

    timeout: float
    attempts: int = 2


def _client_config(limits: StsLimits | None, *, unsigned: bool = False) -> Any:
    """The aiobotocore client config for STS calls (``None``: the defaults)."""
    if limits is None and not unsigned:
        return None
    from aiobotocore.config import AioConfig  # noqa: PLC0415
    from botocore import UNSIGNED  # noqa: PLC0415

    kwargs: dict[str, Any] = {"signature_version": UNSIGNED} if unsigned else {}
    if limits is not None:
        kwargs.update(connect_timeout=limits.timeout, read_timeout=limits.timeout,
                      retries={"total_max_attempts": limits.attempts, "mode": "standard"})
    return AioConfig(**kwargs)


class CredentialProvider(Protocol):
    async def fetch(self, user: str | None = None) -> Credentials:
        """Fresh credentials (for end user ``user`` where the source is per user).

        Raises :class:`CredentialsUnavailable`.
        """
        ...


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection acts as at AWS, for the access log: the role and the rendered session name and source
    identity (``None`` where the source has none)."""

    role_arn: str | None = None
    session_name: str | None = None
    source_identity: str | None = None


_NO_ROLE = Identity()  # static keys and the default chain act as themselves: one shared answer


def _effective_user(conn: ConnectionConfig, user: str | None) -> str | None:
    """The id templates are rendered with: ``user``, :data:`NO_USER` without one, ``None`` unless per user."""
    if not conn.user_header:
        return None
    return NO_USER if user is None else user


def _render(text: str | None, user: str | None, field: Field = ROLE_SESSION) -> str | None:
    return text if text is None or user is None else render(text, user, field)


def _identity(conn: ConnectionConfig, user: str | None) -> Identity:
    """The rendered identity for effective ``user`` (always legal for STS: see :mod:`sigproxy.users`)."""
    c = conn.credentials
    if c.source in ("static", "chain"):
        return _NO_ROLE
    if c.source == "sts_endpoint":
        return Identity(role_arn=c.role_arn)
    return Identity(role_arn=c.role_arn, session_name=_render(c.session_name, user),
                    source_identity=_render(c.source_identity, user) if c.source == "assume_role" else None)


def sts_endpoint_for(region: str) -> str:
    """The regional STS endpoint of ``region``'s partition."""
    if region.startswith("cn-"):
        return f"https://sts.{region}.amazonaws.com.cn"
    return f"https://sts.{region}.amazonaws.com"


def _aws_session(profile: str | None = None) -> Any:
    """A new aiobotocore session. aiobotocore and botocore are imported on first use: a proxy whose connections
    all have static keys, and every command that needs no AWS call, never load them."""
    from aiobotocore.session import AioSession  # noqa: PLC0415

    return AioSession(profile=profile)


def _unreachable(exc: Exception) -> bool:
    """Whether a botocore error is a connection failure or timeout (a later attempt may get through)."""
    from botocore.exceptions import ConnectionError as BotoConnectionError  # noqa: PLC0415
    from botocore.exceptions import HTTPClientError  # noqa: PLC0415

    return isinstance(exc, BotoConnectionError | HTTPClientError)


def _aws_errors() -> tuple[type[Exception], ...]:
    """botocore's errors (imported on first use, see :func:`_aws_session`)."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    return BotoCoreError, ClientError


def _sts_error(name: str, action: str, exc: Exception) -> CredentialsUnavailable:
    from botocore.exceptions import ClientError  # noqa: PLC0415

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", "?"), err.get("Message", "")
        return CredentialsUnavailable.from_sts(f"connection {name!r}: STS {action} failed: {code}: {message}",
                                               sts_code=code, sts_message=message)
    return CredentialsUnavailable.from_sts(f"connection {name!r}: STS {action} failed: {type(exc).__name__}: {exc}",
                                           sts_code=None, transient=_unreachable(exc))


def _from_sts(answer: Mapping[str, Any]) -> Credentials:
    c = answer["Credentials"]
    expiry = c["Expiration"]
    if isinstance(expiry, datetime) and expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=UTC)
    return Credentials(c["AccessKeyId"], c["SecretAccessKey"], c.get("SessionToken"), expiry)


class _Static:
    def __init__(self, creds: Credentials) -> None:
        self.creds = creds

    async def fetch(self, user: str | None = None) -> Credentials:
        return self.creds


class _Chain:
    """The standard AWS chain via aiobotocore: env, shared files (``profile``), SSO, process, container, IMDS,
    web identity. The resolved object refreshes itself; its expiry feeds our cache."""

    def __init__(self, name: str, profile: str | None) -> None:
        self._name = name
        self._profile = profile
        self._resolved: Any = None
        self._lock = asyncio.Lock()

    async def fetch(self, user: str | None = None) -> Credentials:
        try:
            async with self._lock:
                if self._resolved is None:
                    self._resolved = await _aws_session(self._profile).get_credentials()
            if self._resolved is None:
                raise CredentialsUnavailable(
                    f"connection {self._name!r}: the AWS credential chain found none; set AWS_PROFILE, or "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, in sigproxy's environment (README: Credentials)")
            frozen = await self._resolved.get_frozen_credentials()
        except _aws_errors() as exc:
            raise CredentialsUnavailable.from_sts(
                f"connection {self._name!r}: the AWS credential chain failed: {type(exc).__name__}: {exc}",
                sts_code=None, transient=_unreachable(exc),
            ) from exc
        expiry = getattr(self._resolved, "_expiry_time", None)
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token or None,
                           expiry if isinstance(expiry, datetime) else None)


class _StsCaller:
    """Builds short-lived aiobotocore STS clients for one connection."""

    def __init__(self, session: Callable[[], Any], conn: ConnectionConfig, limits: StsLimits | None = None) -> None:
        self._session = session  # the shared aiobotocore session, made on first use
        self._limits = limits
        self.region = conn.region or "us-east-1"
        self.endpoint = conn.sts_endpoint_url or sts_endpoint_for(self.region)

    async def call(self, name: str, action: str, creds: Credentials | None, **params: Any) -> Credentials:
        kwargs: dict[str, Any] = {"region_name": self.region, "endpoint_url": self.endpoint,
                                  "config": _client_config(self._limits, unsigned=creds is None)}
        if creds is not None:
            kwargs.update(aws_access_key_id=creds.access_key_id, aws_secret_access_key=creds.secret_access_key,
                          aws_session_token=creds.session_token)
        method = "assume_role" if action == "AssumeRole" else "assume_role_with_web_identity"
        try:
            async with AsyncExitStack() as stack:
                sts = await stack.enter_async_context(self._session().create_client("sts", **kwargs))
                answer = await getattr(sts, method)(**params)
        except _aws_errors() as exc:
            raise _sts_error(name, action, exc) from exc
        return _from_sts(answer)


class _AssumeRole:
    def __init__(self, conn: ConnectionConfig, caller: _StsCaller, providers: Providers) -> None:
        self._conn = conn
        self._caller = caller
        self._providers = providers

    def params(self, user: str | None = None) -> dict[str, Any]:
        """The AssumeRole parameters for end user ``user``, exactly as sent."""
        c = self._conn.credentials
        uid = _effective_user(self._conn, user)
        ident = _identity(self._conn, uid)
        params: dict[str, Any] = {"RoleArn": c.role_arn, "RoleSessionName": ident.session_name,
                                  "DurationSeconds": c.duration_seconds}
        if c.external_id:
            params["ExternalId"] = c.external_id
        if ident.source_identity:
            params["SourceIdentity"] = ident.source_identity
        if c.policy:
            params["Policy"] = c.policy if uid is None else render_policy(c.policy, uid)
        if c.policy_arns:
            params["PolicyArns"] = [{"arn": arn} for arn in c.policy_arns]
        if c.tags:
            params["Tags"] = [{"Key": k, "Value": _render(v, uid, TAG_VALUE)} for k, v in c.tags]
        if c.transitive_tag_keys:
            params["TransitiveTagKeys"] = list(c.transitive_tag_keys)
        return params

    async def fetch(self, user: str | None = None) -> Credentials:
        params = self.params(user)
        base_name = self._conn.credentials.base
        # Role chaining: the base's credentials are fetched without a user (NO_USER where it is per user).
        base, _ = await (self._providers.default_chain() if base_name == "chain"
                         else self._providers.get(base_name))
        return await self._caller.call(self._conn.name, "AssumeRole", base, **params)


class _WebIdentity:
    def __init__(self, conn: ConnectionConfig, caller: _StsCaller) -> None:
        self._conn = conn
        self._caller = caller

    async def fetch(self, user: str | None = None) -> Credentials:
        c = self._conn.credentials
        session_name = _identity(self._conn, _effective_user(self._conn, user)).session_name
        try:
            token = (await asyncio.to_thread(Path(str(c.token_file)).read_text, encoding="utf-8")).strip()
        except OSError as exc:
            raise CredentialsUnavailable(
                f"connection {self._conn.name!r}: cannot read token_file {str(c.token_file)!r}: {exc.strerror}"
            ) from exc
        return await self._caller.call(self._conn.name, "AssumeRoleWithWebIdentity", None, RoleArn=c.role_arn,
                                       RoleSessionName=session_name, WebIdentityToken=token,
                                       DurationSeconds=c.duration_seconds)


class Providers:
    """One credential source per connection, every expiring one behind the shared cache.

    An async context manager: it owns the HTTP session for custom STS endpoints and the cache's tasks.
    It sizes the cache for ``connections`` (every one stays cached) and ``cached_users`` end users (``None``:
    keep the cache's current bound), see :meth:`CredentialCache.configure`.
    """

    def __init__(self, connections: Mapping[str, ConnectionConfig], cache: CredentialCache | None = None, *,
                 cached_users: int | None = None, broker: CredentialBroker | None = None,
                 sts_limits: StsLimits | None = None) -> None:
        """``broker``: expiring credentials are asked of it instead of fetched here (a worker of a group).
        ``sts_limits``: bounds on each STS call (botocore's defaults otherwise)."""
        self._connections = connections
        self._sts_limits = sts_limits
        self._broker = broker
        self._owns_cache = cache is None
        self.cache = cache if cache is not None else CredentialCache()
        self.cache.configure(connections=len(connections), users=cached_users or self.cache.capacity[1])
        self._session: Any = None  # aiobotocore's, made on first use (aws_session)
        self._root: Providers | None = None
        self._http: aiohttp.ClientSession | None = None
        self._default_chain = _Chain("(default chain)", None)
        # Made on first use: a fleet of 10,000 store connections, swapped on every change, builds none upfront.
        self._by_name: dict[str, CredentialProvider] = {}
        self._keys: dict[str, CacheKey] = {}  # each connection's cache key (_key)
        self._identities: dict[str, Identity] = {}  # each connection's identity, when it is not per end user
        # Per end user: (connection, id) -> identity, as many as the cache keeps end users' credentials.
        self._user_identities: LRUCache[tuple[str, str | None], Identity] = LRUCache(self.cache.capacity[1])
        self._user_keys: LRUCache[tuple[str, str], CacheKey] = LRUCache(self.cache.capacity[1])  # (_entry_key)

    def successor(self, connections: Mapping[str, ConnectionConfig], *,
                  cached_users: int | None = None) -> Providers:
        """Providers for a new set of connections (a reload, a store change) sharing this one's cache, AWS
        session and HTTP session; only the first (this chain's root) closes them, so swapping connections
        thousands of times leaves nothing to close behind."""
        new = Providers.__new__(Providers)
        root = self._root or self
        new._connections = connections
        new._broker = self._broker
        new._sts_limits = self._sts_limits
        new._owns_cache = False
        new.cache = self.cache
        new.cache.configure(connections=len(connections), users=cached_users or self.cache.capacity[1])
        new._session = None  # the root's is shared (aws_session)
        new._root = root
        new._http = None
        new._default_chain = self._default_chain
        new._by_name = {}
        new._keys = {}
        new._identities = {}
        new._user_identities = LRUCache(new.cache.capacity[1])
        new._user_keys = LRUCache(new.cache.capacity[1])
        return new

    def _provider_for(self, name: str) -> CredentialProvider:
        provider = self._by_name.get(name)
        if provider is None:
            provider = self._by_name[name] = self._provider(self._connections[name])
        return provider

    def _provider(self, conn: ConnectionConfig) -> CredentialProvider:
        c = conn.credentials
        if self._broker is not None and c.source != "static":
            return _Brokered(conn.name, self._broker.fingerprint(self._connections, conn.name), self._broker)
        if c.source == "static":
            if c.access_key_id is None or c.secret_access_key is None:
                raise ValueError(f"connection {conn.name!r}: static credentials need both keys")
            token = c.session_token.reveal() if c.session_token else None
            return _Static(Credentials(c.access_key_id, c.secret_access_key.reveal(), token))
        if c.source == "chain":
            return _Chain(conn.name, c.profile)
        if c.source == "assume_role":
            return _AssumeRole(conn, _StsCaller(self.aws_session, conn, self._sts_limits), self)
        if c.source == "web_identity":
            return _WebIdentity(conn, _StsCaller(self.aws_session, conn, self._sts_limits))
        return StsEndpoint(conn, self)

    def aws_session(self) -> Any:
        """The aiobotocore session every provider of this chain shares (the root's), made on first use."""
        if self._root is not None:
            return self._root.aws_session()
        if self._session is None:
            self._session = _aws_session()
        return self._session

    def http(self) -> aiohttp.ClientSession:
        if self._root is not None:
            return self._root.http()
        if self._http is None:
            import aiohttp  # noqa: PLC0415 - only for sts_endpoint connections: made on first use

            self._http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return self._http

    async def __aenter__(self) -> Providers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._root is not None:
            return
        if self._owns_cache:
            await self.cache.close()
        if self._http is not None:
            await self._http.close()

    def source(self, name: str) -> str:
        return self._connections[name].credentials.source

    def _key(self, name: str) -> CacheKey:
        """The cache key of connection ``name``'s credentials: its name and everything they are fetched with
        (so a connection whose credentials change gets a new entry), made once (:class:`CacheKey`)."""
        key = self._keys.get(name)
        if key is None:
            conn = self._connections[name]
            key = self._keys[name] = CacheKey((name, conn.credentials, conn.region, conn.sts_endpoint_url))
        return key

    def _entry_key(self, name: str, user: str | None) -> tuple[CacheKey, bool]:
        """(cache key, per user) of ``name``'s credentials: end user ``user``'s own on a ``user_header``
        connection (the connection's name, its key, the id), else the connection's. An end user's key is kept
        while the cache keeps that many end users (made per request, it was half a per-user hit's cost)."""
        if user is None or not self._connections[name].user_header:
            return self._key(name), False
        key = self._user_keys.get((name, user))
        if key is None:
            key = self._user_keys[(name, user)] = CacheKey((name, self._key(name), user))
        return key, True

    def state(self, name: str) -> EntryState:
        """Whether connection ``name`` can sign now, from what the cache holds (no fetch): ``"up"``, ``"down"``
        (its last fetch failed and it holds no valid credentials) or ``"unknown"`` (not fetched yet).
        Static credentials are always ``"up"``."""
        if isinstance(self._provider_for(name), _Static):
            return "up"
        return self.cache.state(self._key(name))

    def identity(self, name: str, *, user: str | None = None) -> Identity:
        """Who connection ``name`` acts as for end user ``user`` (pure: config and id, no I/O).

        ``user`` (an id :func:`sigproxy.users.parse_user` accepted) counts only on a ``user_header`` connection.
        """
        conn = self._connections[name]
        if conn.user_header:  # rendered once per id while it is kept (the templates' rules cost microseconds)
            key = (name, user)
            identity = self._user_identities.get(key)
            if identity is None:
                identity = self._user_identities[key] = _identity(conn, _effective_user(conn, user))
            return identity
        identity = self._identities.get(name)
        if identity is None:
            identity = self._identities[name] = _identity(conn, None)
        return identity

    def ready(self, name: str, *, user: str | None = None) -> tuple[Credentials, Identity] | None:
        """Connection ``name``'s credentials for end user ``user`` and its :meth:`identity`, when they can be had
        now without waiting or starting a refresh: static keys, or cached ones before their advisory window (a
        cache hit, :meth:`CredentialCache.fresh`). ``None``: await :meth:`get` and ask :meth:`identity`.

        A request's one call on a hit, where ``get``, the provider's and the identity's look-ups were three
        interpreted calls and a coroutine (issue 15). A worker's brokered credentials are always ``None``."""
        # The provider's and the identity's kept values read here, not through _provider_for and identity():
        # an interpreted call each saved on every request.
        provider = self._by_name.get(name)
        if provider is None:
            provider = self._provider_for(name)
        if isinstance(provider, _Static):
            creds: Credentials | None = provider.creds
        elif isinstance(provider, _Brokered):
            return None
        else:
            key, per_user = self._entry_key(name, user)
            creds = self.cache.fresh(key, per_user=per_user)
        if creds is None:
            return None
        identity = None if self._connections[name].user_header else self._identities.get(name)
        return creds, self.identity(name, user=user) if identity is None else identity

    async def get(self, name: str, *, user: str | None = None) -> tuple[Credentials, bool]:
        """The connection's current credentials (end user ``user``'s on a ``user_header`` connection, cached
        under the exact id) and whether the cache answered without waiting.

        Raises :class:`CredentialsUnavailable`.
        """
        provider = self._provider_for(name)
        if isinstance(provider, _Static):
            return provider.creds, True  # not through fetch(): a coroutine less per request
        conn = self._connections[name]
        if isinstance(provider, _Brokered):
            return await provider.get(user if conn.user_header else None)
        key, per_user = self._entry_key(name, user)
        if not per_user:
            return await self.cache.get(key, provider.fetch, f"connection {name!r}")
        return await self.cache.get(key, lambda: provider.fetch(user),
                                    f"connection {name!r} user {user!r}", per_user=True)

    @property
    def connections(self) -> Mapping[str, ConnectionConfig]:
        """The connections these providers serve."""
        return self._connections

    def timing(self, name: str, *, user: str | None = None) -> tuple[datetime | None, datetime | None]:
        """(advisory start, mandatory start) of what the cache holds for ``name`` (and end user ``user``) now:
        when a copy should be asked for again, or ``(None, None)`` for credentials that do not expire."""
        key, per_user = self._entry_key(name, user)
        windows = self.cache.windows(key, per_user=per_user)
        return (None, None) if windows is None else windows

    def retry_at(self, name: str, *, user: str | None = None) -> datetime | None:
        """When the cache may try ``name`` (and ``user``) again after failures (its back-off), or ``None``."""
        return self.cache.retry_at(self._entry_key(name, user)[0])

    async def default_chain(self) -> tuple[Credentials, bool]:
        """The default AWS chain's credentials (the base of an ``assume_role`` with ``base = "chain"``)."""
        chain = self._default_chain
        return await self.cache.get(("default-chain",), chain.fetch, "the default AWS credential chain")


async def caller_identity(conn: ConnectionConfig, creds: Credentials, *, limits: StsLimits | None = None) -> str:
    """STS GetCallerIdentity with ``creds`` (through ``sts_endpoint_url`` when set), within ``limits``; returns
    the ARN.

    Raises :class:`CredentialsUnavailable` with the STS error code (never the keys).
    """
    region = conn.region or "us-east-1"
    kwargs: dict[str, Any] = {
        "region_name": region,
        "endpoint_url": conn.sts_endpoint_url or sts_endpoint_for(region),
        "aws_access_key_id": creds.access_key_id,
        "aws_secret_access_key": creds.secret_access_key,
        "aws_session_token": creds.session_token,
        "config": _client_config(limits),
    }
    try:
        async with AsyncExitStack() as stack:
            sts = await stack.enter_async_context(_aws_session().create_client("sts", **kwargs))
            answer = await sts.get_caller_identity()
    except _aws_errors() as exc:
        raise _sts_error(conn.name, "GetCallerIdentity", exc) from exc
    return str(answer["Arn"])
