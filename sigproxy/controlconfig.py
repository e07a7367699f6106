"""The control plane's configuration sections: ``[store]`` (where runtime connections live), ``[admin]`` (the
admin API's bearer token), ``[onboarding]`` (what customer onboarding puts in trust policies) and ``[connect]``
(the customer connect page and its sessions).

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

    [connect]
    public_url = "https://connect.example.com"        # default: the admin listener's http://HOST:PORT
    session_ttl = 1800
    webhook_secret = "${env:SIGPROXY_WEBHOOK_SECRET}"
    product_name = "Acme Cloud"
    logo_file = "/etc/sigproxy/logo.svg"
    template_url = "https://my-bucket.s3.amazonaws.com/sigproxy-role.json"
    max_attempts = 10
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .configtable import Secret, Table, resolve_refs
from .errors import ConfigError
from .onboarding import normalize_principal
from .urlparts import split_url

__all__ = ["AdminConfig", "ConnectConfig", "OnboardingConfig", "StoreConfig", "parse_admin", "parse_connect",
           "parse_onboarding", "parse_store"]

_MIN_TOKEN = 16
_MIN_TTL, _MAX_TTL = 60, 86400
_MAX_ATTEMPTS = 1000
_MAX_PRODUCT_NAME = 100
_LOGO_SUFFIXES = (".png", ".svg")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectConfig:
    """``[connect]``: the customer connect page (``/connect/TOKEN``) and its sessions (``/v1/connect-sessions``).
    Read at each use: a reload (SIGHUP) applies it to sessions created and pages opened after it."""

    public_url: str | None = None
    """The base URL customers reach the page at (``https://connect.example.com``, no trailing ``/``);
    ``None``: the admin listener's own ``http://HOST:PORT`` (the address the API request came in on)."""
    session_ttl: int = 1800
    """Seconds a session's link works (60-86400) unless the API request gives ``ttl``."""
    webhook_secret: Secret | None = None
    """The HMAC-SHA256 key of webhook signatures (16+ characters); required for sessions with ``webhook_url``."""
    product_name: str = "sigproxy"
    """The operator's product name shown on the page."""
    logo_file: Path | None = None
    """A PNG or SVG file with the operator's logo, served by sigproxy on the page."""
    template_url: str | None = None
    """An https S3 URL where the operator hosts the generic CloudFormation template
    (``GET /v1/connect-template``); with it the page links to the console's quick-create stack."""
    max_attempts: int = 10
    """Role ARN submits per session (each one an AssumeRole call); past them the session refuses submits."""


def _http_url(t: Table, name: str, *, https_only: bool = False) -> str | None:
    value = t.string(name)
    if value is None:
        return None
    parts = split_url(value)
    schemes = ("https",) if https_only else ("http", "https")
    if parts is None or parts.scheme not in schemes or not parts.hostname or parts.query or parts.fragment:
        want = "an https URL" if https_only else "an http(s) URL"
        raise ConfigError(t.key(name), f"expected {want} without query or fragment, got {value!r}")
    return value


def parse_connect(t: Table | None) -> ConnectConfig:
    if t is None:
        return ConnectConfig()
    public_url = _http_url(t, "public_url")
    ttl = t.integer("session_ttl")
    if ttl is not None and not _MIN_TTL <= ttl <= _MAX_TTL:
        raise ConfigError(t.key("session_ttl"), f"expected {_MIN_TTL} to {_MAX_TTL} seconds, got {ttl}")
    secret = t.secret("webhook_secret")
    if secret is not None and len(secret.reveal()) < _MIN_TOKEN:
        raise ConfigError(t.key("webhook_secret"), f"is shorter than {_MIN_TOKEN} characters: use a random secret "
                          "(e.g. `openssl rand -hex 32`)")
    product = t.string("product_name")
    if product is not None and (len(product) > _MAX_PRODUCT_NAME or not product.isprintable()):
        raise ConfigError(t.key("product_name"), f"expected 1 to {_MAX_PRODUCT_NAME} printable characters")
    logo = t.filepath("logo_file")
    if logo is not None and logo.suffix.lower() not in _LOGO_SUFFIXES:
        raise ConfigError(t.key("logo_file"), f"expected a .png or .svg file, got {str(logo)!r}")
    template_url = _http_url(t, "template_url", https_only=True)
    if template_url is not None:
        host = urlsplit(template_url).hostname or ""
        labels = host.split(".")
        if not (host.endswith((".amazonaws.com", ".amazonaws.com.cn")) and any(x.startswith("s3") for x in labels)):
            raise ConfigError(t.key("template_url"), "expected the https URL of an S3 object (CloudFormation "
                              f"quick-create reads templates from S3 only), got {template_url!r}")
    attempts = t.integer("max_attempts")
    if attempts is not None and not 1 <= attempts <= _MAX_ATTEMPTS:
        raise ConfigError(t.key("max_attempts"), f"expected 1 to {_MAX_ATTEMPTS}, got {attempts}")
    t.done()
    return ConnectConfig(public_url=public_url.rstrip("/") if public_url else None,
                         session_ttl=ttl if ttl is not None else 1800, webhook_secret=secret,
                         product_name=product or "sigproxy", logo_file=logo, template_url=template_url,
                         max_attempts=attempts if attempts is not None else 10)


def parse_store(t: Table | None) -> StoreConfig:
    if t is None:
        return StoreConfig()
    url = t.string("url", empty=True)
    if url:
        parts = split_url(url)  # never echoed: the URL may carry a password
        scheme = parts.scheme.split("+", 1)[0] if parts is not None else "?"
        if parts is None or scheme not in ("sqlite", "postgresql", "postgres"):
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
    if principal is not None:
        try:
            normalize_principal(principal)  # the one rule for what a trust policy's principal may be
        except ValueError:
            raise ConfigError(t.key("principal"),
                              f"expected a 12-digit account id or an IAM ARN, got {principal!r}") from None
    path = t.string("require_role_path")
    if path is not None and not (path.startswith("/") and path.endswith("/")):
        raise ConfigError(t.key("require_role_path"), f"expected a path like '/sigproxy-assumable/', got {path!r}")
    t.done()
    return OnboardingConfig(principal=principal, require_role_path=path)
