"""The connection registry and the operations on it: one in-memory map of every connection (the config
file's, read-only, and the store's, changed at runtime), kept current by the store's change feed.

::

    admin API / CLI ─► Control.create/patch/delete ─► store ─► change feed ─► every replica's Control
    handler ◄─ Control.on_apply(active connections)   (memory only: the request path never queries the database)

A write through this process is applied here at once; other replicas see it through the feed (PostgreSQL
LISTEN/NOTIFY plus a periodic check) within ``[store] poll_interval``. Each apply hands the proxy a new frozen
map; requests in flight keep the snapshot they started with. Connections that changed or disappeared lose
their cached credentials.

Onboarding is a state machine on an ``assume_role`` store connection: *pending* (no ``role_arn``; ExternalId
minted or seeded) → validated (AssumeRole with the ExternalId, then GetCallerIdentity) → *active*. A failed
validation leaves the connection as it was and answers with STS's code.

Owns: validation of API input against the one connection parser, name uniqueness across file and store,
paging, the merge patch (RFC 7396), audit actors.
Must not: speak HTTP, or return or log a secret.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import Config
from .configtable import Table
from .connection import SECRET_PATHS, SECRET_SHOWN, ConnectionConfig, check_bases, parse_connection
from .errors import ApiError, ConfigError, Conflict, InvalidField, NotFound, ValidationFailed
from .onboarding import new_external_id
from .verify import CheckResult, validate_candidate

if TYPE_CHECKING:
    from .store import Store, StoredConnection

__all__ = ["Control", "Page", "merge_patch", "open_store"]

logger = logging.getLogger(__name__)

MAX_PAGE = 1000
DEFAULT_PAGE = 100
_READ_ONLY = ("origin", "state")

Validator = Callable[[ConnectionConfig, Mapping[str, ConnectionConfig]], Awaitable[CheckResult]]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge key by key, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _get_path(table: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = table
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _keep_masked_secrets(patch: dict[str, Any], current: Mapping[str, Any]) -> None:
    """A secret sent back as ``"***"`` (a client that read, edited and wrote the whole object) keeps its value."""
    for path in SECRET_PATHS:
        parent: Any = patch
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and parent.get(path[-1]) == SECRET_SHOWN:
            old = _get_path(current, path)
            if old is None:
                raise InvalidField(f"{'.'.join(path)} is {SECRET_SHOWN!r}: send the secret itself",
                                   field=".".join(path))
            parent[path[-1]] = old


@dataclass(frozen=True, slots=True)
class Page:
    connections: list[ConnectionConfig]
    next_cursor: str | None


def _cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _after(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    if not cursor.replace("-", "").replace("_", "").isalnum() or not cursor.isascii():
        # b64decode skips characters outside the alphabet: "%%" would decode to "" (the first page)
        raise InvalidField("not a cursor this API returned", field="cursor")
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        raise InvalidField("not a cursor this API returned", field="cursor") from None


class Control:
    """The registry (file and store connections) and the operations of the admin API on it.

    ``on_apply`` receives the file's config with its connections replaced by every active connection (file
    and store), and the names that changed or disappeared, each time they change; the proxy swaps its handler
    with it and drops those names' cached credentials. ``validate`` checks a candidate's role at AWS
    (default: STS, with a private cache).
    """

    def __init__(self, config: Config, store: Store | None, *,
                 on_apply: Callable[[Config, set[str]], None],
                 validate: Validator = validate_candidate) -> None:
        self._config = config
        self.store = store
        self._on_apply = on_apply
        self._validate = validate
        self._stored: dict[str, ConnectionConfig] = {}
        self._tables: dict[str, Mapping[str, Any]] = {}
        self._row_revisions: dict[str, int] = {}
        self._revision = 0
        self._invalid: dict[str, str] = {}

    # ------------------------------------------------------------------ reading

    @property
    def config(self) -> Config:
        return self._config

    @property
    def revision(self) -> int:
        """The store revision this registry reflects."""
        return self._revision

    def connections(self) -> dict[str, ConnectionConfig]:
        """Every connection, file and store, pending ones included."""
        return {**self._stored, **self._config.connections}

    def active(self) -> dict[str, ConnectionConfig]:
        """The connections the proxy may sign with."""
        return {n: c for n, c in self.connections().items() if c.state == "active"}

    def get(self, name: str) -> ConnectionConfig:
        conn = self._config.connections.get(name) or self._stored.get(name)
        if conn is None:
            raise NotFound(f"no connection named {name!r}", field="name")
        return conn

    def page(self, *, prefix: str | None = None, state: str | None = None, limit: int = DEFAULT_PAGE,
             cursor: str | None = None) -> Page:
        """Connections ordered by name, ``limit`` (1-1000) at a time after ``cursor``; from memory."""
        if state not in (None, "active", "pending"):
            raise InvalidField(f"expected active or pending, got {state!r}", field="state")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidField(f"expected 1 to {MAX_PAGE}, got {limit}", field="limit")
        after = _after(cursor)
        conns = self.connections()
        names = sorted(n for n in conns if (not prefix or n.startswith(prefix)) and (after is None or n > after))
        chosen: list[ConnectionConfig] = []
        for name in names:
            conn = conns[name]
            if state is None or conn.state == state:
                chosen.append(conn)
                if len(chosen) == limit + 1:
                    break
        more = len(chosen) > limit
        chosen = chosen[:limit]
        return Page(chosen, _cursor(chosen[-1].name) if more else None)

    # ------------------------------------------------------------------ the feed

    async def load(self) -> None:
        """Read every store connection (at start)."""
        if self.store is None:
            self._apply(set())
            return
        revision, rows = await self.store.snapshot()
        for name in list(self._row_revisions):
            self._forget(name)
        for row in rows:
            self._take(row)
        self._revision = revision
        self._apply(set())
        logger.info("connection store: %d connection(s) at revision %d", len(self._stored), revision)

    async def refresh(self, revision: int | None = None) -> None:
        """Apply the store's changes since the revision this registry reflects (the feed calls this)."""
        if self.store is None or (revision is not None and revision <= self._revision):
            return
        try:
            now, rows, deleted = await self.store.changes(self._revision)
        except Exception as exc:  # the database away for a moment: the next poll tries again
            logger.warning("connection store: reading changes failed (%s); keeping revision %d", type(exc).__name__,
                           self._revision)
            return
        if now <= self._revision:
            return
        changed = {name for name in deleted if name in self._row_revisions}
        for name in deleted:
            self._forget(name)
        for row in rows:
            if self._row_revisions.get(row.name) != row.revision:  # not a write of ours already applied
                changed.add(row.name)
                self._take(row)
        self._revision = now
        if changed:
            self._apply(changed)

    def _take(self, row: StoredConnection) -> None:
        """One stored row into the registry; a row that no longer validates (e.g. a name now in the file) is
        left out and logged, never half-applied."""
        if row.name in self._config.connections:
            self._invalid[row.name] = "the name is also defined in the config file (the file's wins)"
            logger.error("store connection %r is shadowed by the config file's connection of that name: "
                         "rename or delete one", row.name)
            return
        try:
            conn = self._parse(row.name, row.table)
        except ApiError as exc:
            self._invalid[row.name] = exc.message
            self._stored.pop(row.name, None)
            logger.error("store connection %r is not valid any more and is not used: %s: %s", row.name,
                         exc.field, exc.message)
            return
        self._invalid.pop(row.name, None)
        self._stored[row.name] = conn
        self._tables[row.name] = row.table
        self._row_revisions[row.name] = row.revision

    def _forget(self, name: str) -> None:
        self._stored.pop(name, None)
        self._tables.pop(name, None)
        self._invalid.pop(name, None)
        self._row_revisions.pop(name, None)

    def _apply(self, changed: set[str]) -> None:
        pending = frozenset(n for n, c in self._stored.items() if c.state == "pending")
        self._on_apply(dataclasses.replace(self._config, connections=self.active(), pending=pending), changed)

    def set_config(self, config: Config) -> None:
        """A reloaded config file (SIGHUP). Raises :class:`ConfigError` when a file connection's name is taken by
        a store connection (one namespace)."""
        clash = sorted(set(config.connections) & set(self._stored))
        if clash:
            raise ConfigError(f"connections.{clash[0]}", "is already a store connection (one namespace): delete "
                              "it through the admin API first, or pick another name")
        changed = {n for n in set(self._config.connections) | set(config.connections)
                   if self._config.connections.get(n) != config.connections.get(n)}
        check_bases({n: c for n, c in {**self._stored, **config.connections}.items() if c.state == "active"})
        self._config = config
        self._apply(changed)

    # ------------------------------------------------------------------ writing

    def _parse(self, name: str, table: Mapping[str, Any]) -> ConnectionConfig:
        """The store connection ``name`` from its table, through the one connection parser."""
        data = dict(table)
        require = self._config.onboarding.require_role_path
        if require is not None and "require_role_path" not in data:
            data["require_role_path"] = require
        try:
            return parse_connection(name, Table(data, "", {}, references=False), origin="store")
        except ConfigError as exc:
            # The one problem parse_connection reports at the table itself (path "") is the connection's name.
            raise InvalidField(exc.problem, field=exc.path or "name") from None

    def _check_chain(self, conn: ConnectionConfig, *, removing: str | None = None) -> None:
        conns = self.connections()
        if removing is not None:
            conns.pop(removing, None)
        else:
            conns[conn.name] = conn
        active = {n: c for n, c in conns.items() if c.state == "active" or n == conn.name}
        try:
            check_bases(active)
        except ConfigError as exc:
            field = exc.path.removeprefix(f"connections.{conn.name}.") if exc.path.startswith(
                f"connections.{conn.name}.") else exc.path
            raise InvalidField(exc.problem, field=field) from None

    def _need_store(self) -> Store:
        if self.store is None:
            raise Conflict("the connection store is off ([store] url = \"\"): connections come only from the "
                           "config file", code="store_off")
        return self.store

    def _writable(self, name: str) -> None:
        if name in self._config.connections:
            raise Conflict(f"connection {name!r} is defined in the config file ({self._config.source}): edit the "
                           "file and reload (SIGHUP)", code="read_only", field="name")

    @staticmethod
    def _strip_read_only(body: dict[str, Any], current: ConnectionConfig | None, name: str | None) -> None:
        if "name" in body:
            if name is not None and body["name"] != name:
                raise InvalidField("is read-only: a connection cannot be renamed", field="name")
            body.pop("name")
        for key in _READ_ONLY:
            if key in body:
                now = getattr(current, key) if current is not None else None
                if body[key] != now:
                    raise InvalidField("is read-only (set by sigproxy)", field=key)
                body.pop(key)

    async def create(self, body: Mapping[str, Any], *, actor: str) -> ConnectionConfig:
        """``POST /v1/connections``: a new store connection. An ``assume_role`` without ``role_arn`` is
        *pending*, its ExternalId minted unless given. Raises :class:`InvalidField`, :class:`Conflict`."""
        store = self._need_store()
        data = copy.deepcopy(dict(body))
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidField("is required: the connection's name", field="name")
        self._strip_read_only(data, None, None)
        if name in self._config.connections or name in self._stored:
            where = "the config file" if name in self._config.connections else "the store"
            raise Conflict(f"connection {name!r} already exists (in {where})", field="name")
        creds = data.get("credentials")
        if (isinstance(creds, dict) and creds.get("source") == "assume_role" and "role_arn" not in creds
                and "external_id" not in creds):
            creds["external_id"] = new_external_id()
        conn = self._parse(name, data)
        self._check_chain(conn)
        from .store import NameTaken  # noqa: PLC0415 - the store (SQLAlchemy) is imported only when it is on

        try:
            row = await store.create(name, conn.state, data, actor=actor)
        except NameTaken:
            raise Conflict(f"connection {name!r} already exists (in the store)", field="name") from None
        return self._written(row)

    def _written(self, row: StoredConnection) -> ConnectionConfig:
        """Apply our own write at once (the feed will bring the same revision: nothing changes then)."""
        self._take(row)
        self._apply({row.name})
        return self._stored[row.name]

    async def patch(self, name: str, patch: Mapping[str, Any], *, actor: str) -> tuple[ConnectionConfig,
                                                                                         CheckResult | None]:
        """``PATCH /v1/connections/{name}`` with a JSON merge patch (RFC 7396). A patch that sets
        ``credentials.role_arn`` on an ``assume_role`` connection is validated at AWS first (onboarding and
        reconnect): on failure nothing is stored and :class:`ValidationFailed` carries STS's code.

        Returns the connection and the validation result (``None`` when none was needed)."""
        store = self._need_store()
        self._writable(name)
        current = self.get(name)
        table = self._tables[name]
        body = copy.deepcopy(dict(patch))
        self._strip_read_only(body, current, name)
        _keep_masked_secrets(body, table)
        merged = merge_patch(table, body)
        conn = self._parse(name, merged)
        self._check_chain(conn)
        result: CheckResult | None = None
        creds_patch = body.get("credentials")
        if (conn.credentials.source == "assume_role" and isinstance(creds_patch, dict)
                and "role_arn" in creds_patch and conn.credentials.role_arn is not None):
            result = await self._validate(conn, self.active())
            if not result.ok:
                logger.info("onboarding: connection %r: role %s refused: %s", name, conn.credentials.role_arn,
                            result.code)
                raise ValidationFailed(result.message or "validation failed", code=result.code,
                                       field="credentials.role_arn")
        from .store import NotStored, StaleRevision  # noqa: PLC0415 - as in create

        try:
            row = await store.replace(name, conn.state, merged, actor=actor,
                                      if_revision=None)
        except NotStored:
            raise NotFound(f"no connection named {name!r}", field="name") from None
        except StaleRevision:  # pragma: no cover - if_revision is not used yet
            raise Conflict(f"connection {name!r} changed meanwhile: read it again", code="stale") from None
        return self._written(row), result

    async def delete(self, name: str, *, actor: str) -> None:
        """``DELETE /v1/connections/{name}``. Raises :class:`NotFound`, :class:`Conflict` (a file connection, or
        one another connection's ``base`` names)."""
        store = self._need_store()
        self._writable(name)
        conn = self.get(name)
        users = sorted(n for n, c in self.connections().items()
                       if c.credentials.source == "assume_role" and c.credentials.base == name)
        if users:
            raise Conflict(f"connection {name!r} is the role-chain base of {', '.join(users)}: change or delete "
                           "those first", code="in_use", field="name")
        from .store import NotStored  # noqa: PLC0415 - as in create

        try:
            await store.delete(name, actor=actor)
        except NotStored:
            raise NotFound(f"no connection named {name!r}", field="name") from None
        self._forget(conn.name)
        self._apply({name})


async def open_store(config: Config, *, migrate: bool | None = None) -> Store | None:
    """Open ``[store]`` (running migrations unless ``migrate`` or ``[store] migrate`` is false), or ``None`` when
    it is off.

    Keys: ``[store] encryption_keys``, or for SQLite without them a key file ``STATE_DIR/store.key`` made on
    first start (mode 0600). Raises :class:`ConfigError` (at ``store.url`` or ``store.encryption_keys``) when
    the database can't be opened or its schema is old; the message never holds the database password.
    """
    settings = config.store
    if not settings.enabled:
        return None
    from .store import Keyring, Store, redacted  # noqa: PLC0415 - SQLAlchemy only when the store is on

    url = settings.resolved_url(config.proxy.state_dir)
    try:
        if settings.encryption_keys:
            keyring = Keyring.from_strings([k.reveal() for k in settings.encryption_keys])
        else:
            keyring = await asyncio.to_thread(Keyring.load_or_create, config.proxy.state_dir)
    except (ValueError, OSError) as exc:
        raise ConfigError("store.encryption_keys", str(exc)) from None
    try:
        store = await Store.open(url, keyring, secret_paths=SECRET_PATHS,
                                 migrate=settings.migrate if migrate is None else migrate)
    except Exception as exc:  # the driver's errors differ (sqlite3, asyncpg, OSError): all mean "can't open"
        reason = str(exc).replace(url, redacted(url))
        raise ConfigError("store.url", f"cannot open the connection store {redacted(url)}: "
                          f"{type(exc).__name__}: {reason}") from None
    logger.info("connection store: %s", redacted(url))
    return store
