"""Following the store from every replica: call back whenever the store revision moves.

PostgreSQL: a dedicated asyncpg connection ``LISTEN``\\s on :data:`~.repository.CHANNEL` (every write does
``pg_notify`` in its transaction, delivered at commit), so a change elsewhere is seen within milliseconds;
the revision is also polled every ``interval`` seconds as a safety net (a lost listener, a missed notice).
SQLite: polling only (another process on the same file cannot notify us).

Database errors never end the watch: the first of a streak is logged as a warning (the URL without its
password), the rest at debug level, with back-off up to :data:`MAX_BACKOFF` seconds; recovery is logged once.
Must not: apply changes itself (the callback does), start tasks it does not own, log a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .repository import Store

__all__ = ["MAX_BACKOFF", "watch"]

logger = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
_CONNECT_TIMEOUT = 10.0
# Options SQLAlchemy's asyncpg dialect takes for itself, not asyncpg.connect's.
_DIALECT_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn")


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class _Listener:
    """One asyncpg connection LISTENing on the store's channel; ``poke`` is set on every notice and on loss."""

    def __init__(self, store: Store, poke: asyncio.Event) -> None:
        self._store = store
        self._poke = poke
        self._conn: Any = None

    @property
    def alive(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def _notified(self, *_args: Any) -> None:
        self._poke.set()

    def _lost(self, *_args: Any) -> None:
        self._poke.set()

    async def ensure(self) -> None:
        """Connect and LISTEN unless already listening. Raises the driver's errors."""
        if self.alive:
            return
        await self.close()
        import asyncpg  # noqa: PLC0415 -- only PostgreSQL stores need it

        from .repository import CHANNEL  # noqa: PLC0415

        engine = self._store.engine
        _args, params = engine.dialect.create_connect_args(engine.url)
        for key in _DIALECT_ONLY:
            params.pop(key, None)
        params.setdefault("timeout", _CONNECT_TIMEOUT)
        conn = await asyncpg.connect(**params)
        try:
            await conn.add_listener(CHANNEL, self._notified)
            conn.add_termination_listener(self._lost)
        except BaseException:
            await conn.close(timeout=2)
            raise
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
            if not conn.is_closed():
                conn.terminate()


async def watch(store: Store, on_change: Callable[[int], Awaitable[None]], *, interval: float = 1.0,
                since: int | None = None) -> None:
    """Call ``await on_change(revision)`` each time ``store.revision()`` exceeds the last revision seen,
    starting from ``since`` (default: the revision when the first check succeeds). Runs until cancelled.

    ``interval`` (seconds, > 0): the polling period. An exception from ``on_change`` is logged and the
    same revision is offered again at the next check.
    """
    if not interval > 0:
        raise ValueError(f"interval: expected a positive number of seconds, got {interval!r}")
    poke = asyncio.Event()
    listener = _Listener(store, poke) if store.dialect == "postgresql" else None
    last, streak = since, 0
    try:
        while True:
            try:
                if listener is not None:
                    await listener.ensure()
                poke.clear()  # a notice from here on means a revision we have not read yet
                revision = await store.revision()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                streak += 1
                level = logging.WARNING if streak == 1 else logging.DEBUG
                logger.log(level, "store %s: cannot follow changes (%s); retrying with back-off", store.url,
                           _describe(exc))
                if listener is not None:
                    await listener.close()
                await asyncio.sleep(min(interval * 2 ** min(streak, 10), MAX_BACKOFF))
                continue
            if streak:
                logger.info("store %s: following changes again after %d failed attempts", store.url, streak)
                streak = 0
            if last is None:
                last = revision
            elif revision > last:
                try:
                    await on_change(revision)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("store %s: applying revision %d failed; retrying", store.url, revision)
                else:
                    last = revision
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel racing a notice.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await poke.wait()
    finally:
        if listener is not None:
            await asyncio.shield(listener.close())
