"""``sigproxy store migrate | rotate-keys | new-key | status``: the connection store's maintenance commands.

Run against the ``[store]`` of a config file (``-c``), with the same keys the proxy uses. They print names,
counts and schema revisions, never a connection's secret; ``new-key`` prints a fresh key, which is its job.
Must not: be imported by the proxy itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from .config import Config
from .errors import ConfigError

__all__ = ["add_parser", "run"]

# The store (SQLAlchemy, Alembic) is imported when a store command runs, not when `sigproxy` builds its parser.


def add_parser(sub: argparse._SubParsersAction[Any],
               with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    store = sub.add_parser("store", help="the connection store: migrate, rotate-keys, new-key, status")
    verbs = store.add_subparsers(dest="store_command", required=True)
    for name, text in (("migrate", "bring the store's schema to this version (once per release, e.g. a Job)"),
                       ("rotate-keys", "re-encrypt every stored secret with the first of [store] encryption_keys"),
                       ("status", "print the store's URL (password hidden), schema revision and connection count")):
        with_config(verbs.add_parser(name, help=text))
    verbs.add_parser("new-key", help="print a fresh 32-byte encryption key (URL-safe base64)")


def _url(config: Config) -> str:
    if not config.store.enabled:
        raise ConfigError("store.url", 'the store is off (url = ""): nothing to do')
    return config.store.resolved_url(config.proxy.state_dir)


async def _migrate(config: Config) -> int:
    from .store import current as schema_current  # noqa: PLC0415
    from .store import redacted  # noqa: PLC0415
    from .store import upgrade as schema_upgrade  # noqa: PLC0415
    from .store.database import create_engine  # noqa: PLC0415

    url = _url(config)
    engine = create_engine(url)
    try:
        before = await schema_current(engine)
        await schema_upgrade(engine)
        after = await schema_current(engine)
    finally:
        await engine.dispose()
    print(f"{redacted(url)}: schema {before or 'empty'} -> {after}" if before != after
          else f"{redacted(url)}: schema already at {after}")
    return 0


async def _rotate(config: Config) -> int:
    from .control import open_store  # noqa: PLC0415

    store = await open_store(config, migrate=False)
    assert store is not None
    try:
        count = await store.rotate_keys(actor="cli rotate-keys")
    finally:
        await store.close()
    print(f"re-encrypted {count} connection(s) with the first key; older keys may now be removed")
    return 0


async def _status(config: Config) -> int:
    from .control import open_store  # noqa: PLC0415
    from .store import current as schema_current  # noqa: PLC0415
    from .store import head as schema_head  # noqa: PLC0415
    from .store import redacted  # noqa: PLC0415
    from .store.database import create_engine  # noqa: PLC0415

    url = _url(config)
    engine = create_engine(url)
    try:
        found = await schema_current(engine)
    finally:
        await engine.dispose()
    head = schema_head()
    print(f"store: {redacted(url)}")
    advice = "" if found == head else " -> run `sigproxy store migrate`"
    print(f"schema: {found or 'empty'} (this sigproxy: {head}){advice}")
    if found == head:
        store = await open_store(config, migrate=False)
        assert store is not None
        try:
            revision = await store.revision()
            count = len(await store.page(limit=1000))
        finally:
            await store.close()
        print(f"revision: {revision}")
        print(f"connections: {count}{'+' if count == 1000 else ''}")
    return 0


def run(args: argparse.Namespace, load: Callable[[], Config]) -> int:
    """Run ``sigproxy store VERB``; returns the exit code. Raises :class:`ConfigError`."""
    from .store import generate_key, redacted  # noqa: PLC0415

    if args.store_command == "new-key":
        print(generate_key())
        return 0
    config = load()
    command = {"migrate": _migrate, "rotate-keys": _rotate, "status": _status}[args.store_command]
    try:
        return asyncio.run(command(config))
    except ConfigError:
        raise
    except Exception as exc:  # the driver's errors: say which store and why, never the password
        print(f"sigproxy: store {redacted(_url(config))}: {type(exc).__name__}: "
              f"{str(exc).replace(_url(config), redacted(_url(config)))}", file=sys.stderr)
        return 1
