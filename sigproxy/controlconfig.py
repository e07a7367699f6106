"""The control plane's configuration sections: ``[store]`` (where runtime connections live), ``[admin]`` (the
admin API's bearer token) and ``[onboarding]`` (what customer onboarding puts in trust policies).

Every problem raises :class:`~sigproxy.errors.ConfigError` naming the key path.
Must not: open the store, read key files, or know the API.

Example::

    [store]
    url = "postgresql://sigproxy:${env:PGPASSWORD}@db.internal:5432/sigproxy"   # default: SQLite in state_dir
    encryption_keys = ["${env:SIGPROXY_STORE_KEY}", "${file:/run/secrets/old_store_key}"]  # first encrypts

    [admin]
    token = "${env:SIGPROXY_ADMIN_TOKEN}"

    [onboarding]
    principal = "arn:aws:iam::111122223333:role/platform"
    require_role_path = "/sigproxy-assumable/"
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .configtable import Secret, Table, resolve_refs
from .errors import ConfigError

__all__ = ["AdminConfig", "OnboardingConfig", "StoreConfig", "parse_admin", "parse_onboarding", "parse_store"]

_ACCOUNT = re.compile(r"^\d{12}$")
_PRINCIPAL_ARN = re.compile(r"^arn:aws(?:-[a-z]+)*:(?:iam|sts)::\d{12}:(?:root|user/.+|role/.+|assumed-role/.+)$")
_MIN_TOKEN = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreConfig:
    """``[store]``: the database holding runtime connections (origin ``"store"``)."""

    url: str | None = None
    """``sqlite:///PATH`` or ``postgresql://USER:PASSWORD@HOST:PORT/DB``; ``None``: SQLite at
    ``STATE_DIR/store.db``; ``""`` turns the store off (connections come only from the file)."""
    encryption_keys: tuple[Secret, ...] = ()
    """32-byte AEAD keys in URL-safe base64; the first encrypts, all decrypt (rotation). Empty with the SQLite
    default: a key file ``STATE_DIR/store.key`` (mode 0600) is made on first start. PostgreSQL requires keys."""
    migrate: bool = True
    """Run schema migrations on start; ``false``: refuse to start on an old schema (``sigproxy store migrate``)."""
    poll_interval: float = 1.0
    """Seconds between checks of the store's revision (a safety net beside PostgreSQL's LISTEN/NOTIFY)."""

    @property
    def enabled(self) -> bool:
        return self.url != ""

    def resolved_url(self, state_dir: Path) -> str:
        """The database URL, the SQLite default filled in."""
        return self.url if self.url else f"sqlite:///{state_dir / 'store.db'}"

    def signature(self) -> tuple[object, ...]:
        """What only a restart can change."""
        return (self.url, tuple(k.reveal() for k in self.encryption_keys), self.migrate, self.poll_interval)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminConfig:
    """``[admin]``: the admin API (``/v1`` on the admin listener)."""

    token: Secret | None = None
    """Bearer token for everything under ``/v1``. Without one the API is served only when the admin listener
    is on a loopback address; elsewhere ``/v1`` is off (health and metrics still answer)."""

    def api_off_reason(self, listen_host: str) -> str | None:
        """Why the API must not be served on an admin listener bound to ``listen_host``, or ``None``."""
        if self.token is not None or _loopback(listen_host):
            return None
        return (f"the admin listener is on {listen_host}, not a loopback address, and [admin] token is not set: "
                "the admin API (/v1) is off")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class OnboardingConfig:
    """``[onboarding]``: customer onboarding (pending connections, trust policies, CloudFormation)."""

    principal: str | None = None
    """The platform's AWS principal that customers' roles trust: an account id or an IAM ARN."""
    require_role_path: str | None = None
    """Customers' roles must live under this path (``/sigproxy-assumable/``); store connections that set none
    of their own get it."""


def parse_store(t: Table | None) -> StoreConfig:
    if t is None:
        return StoreConfig()
    url = t.string("url", empty=True)
    if url:
        scheme = urlsplit(url).scheme.split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ConfigError(t.key("url"), "expected sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB "
                              f"(scheme {scheme!r} is not supported)")
    keys = []
    for i, raw in enumerate(t.strings("encryption_keys")):
        path = f"{t.key('encryption_keys')}[{i}]"
        value = resolve_refs(raw, path, t.env)
        if not value:
            raise ConfigError(path, "is empty: give a key, or leave it out")
        try:
            key = base64.urlsafe_b64decode(value.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise ConfigError(path, "is not URL-safe base64 (make one with `sigproxy store new-key`)") from None
        if len(key) != 32:
            raise ConfigError(path, f"decodes to {len(key)} bytes; an AEAD key is 32 bytes "
                              "(make one with `sigproxy store new-key`)")
        keys.append(Secret(value))
    if url and url.split(":", 1)[0].startswith("postgres") and not keys:
        raise ConfigError(t.key("encryption_keys"), "is required with PostgreSQL: every replica needs the same "
                          "keys (make one with `sigproxy store new-key`)")
    migrate = t.boolean("migrate")
    poll = t.number("poll_interval")
    t.done()
    return StoreConfig(url=url, encryption_keys=tuple(keys), migrate=migrate is not False,
                       poll_interval=poll if poll is not None else 1.0)


def parse_admin(t: Table | None) -> AdminConfig:
    if t is None:
        return AdminConfig()
    token = t.secret("token")
    if token is not None and len(token.reveal()) < _MIN_TOKEN:
        raise ConfigError(t.key("token"), f"is shorter than {_MIN_TOKEN} characters: use a random token "
                          "(e.g. `openssl rand -hex 32`)")
    t.done()
    return AdminConfig(token=token)


def parse_onboarding(t: Table | None) -> OnboardingConfig:
    if t is None:
        return OnboardingConfig()
    principal = t.string("principal")
    if principal is not None and not (_ACCOUNT.match(principal) or _PRINCIPAL_ARN.match(principal)):
        raise ConfigError(t.key("principal"), f"expected a 12-digit account id or an IAM ARN, got {principal!r}")
    path = t.string("require_role_path")
    if path is not None and not (path.startswith("/") and path.endswith("/")):
        raise ConfigError(t.key("require_role_path"), f"expected a path like '/sigproxy-assumable/', got {path!r}")
    t.done()
    return OnboardingConfig(principal=principal, require_role_path=path)
