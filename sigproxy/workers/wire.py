"""What crosses the private channel between the supervisor and a worker: length-prefixed JSON messages.

Each message is a 4-byte big-endian length and that many bytes of UTF-8 JSON, one object. A *request* carries
``"id"`` (an integer unique on its side) and ``"op"``; its *reply* carries ``"re"`` (the request's id) and
either ``"ok"`` (the answer) or ``"error"`` (``{"type", "message", ...}``). A *notice* carries ``"op"`` and no
id, and gets no reply. Either side may send each kind.

The channel is a ``socketpair`` made by the supervisor and inherited by the worker only: credentials and the
config file's text cross it, nothing else does, and no message is ever logged.

Owns: the framing, request/reply matching (:class:`Peer`), credentials and typed errors as JSON, and the
fingerprint of a connection's credential settings (:func:`fingerprint`).
Must not: log a message's content, or read the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import struct
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any

from sigproxy.configtable import Secret
from sigproxy.connection import ConnectionConfig
from sigproxy.errors import CredentialsUnavailable
from sigproxy.signing import Credentials
from sigproxy.tasks import TaskSet

__all__ = [
    "MAX_MESSAGE",
    "ChannelClosed",
    "Message",
    "Peer",
    "credentials_from_json",
    "credentials_to_json",
    "error_from_json",
    "error_to_json",
    "fingerprint",
    "time_from_json",
    "time_to_json",
]

logger = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 2**20
"""The largest message (bytes): a reload carries the whole config file, which a large fleet makes big."""
_HEADER = struct.Struct(">I")

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[Any]]


class ChannelClosed(ConnectionError):
    """The other process closed the channel (exited, or was killed) before answering."""


class Peer:
    """One end of the channel: sends requests and notices, answers the other side's requests with ``handler``
    (each in its own task, so a slow answer -- an STS call -- holds up no other), and hands notices to
    ``on_notice``. :meth:`run` reads until the channel closes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, handler: Handler,
                 on_notice: Callable[[Message], None]) -> None:
        self._reader, self._writer = reader, writer
        self._handler, self._on_notice = handler, on_notice
        self._next = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._tasks = TaskSet()
        self.closed = False

    def _send(self, message: Message) -> None:
        if self.closed:
            raise ChannelClosed("the channel is closed")
        data = json.dumps(message, separators=(",", ":")).encode()
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"message of {len(data)} bytes is over the channel's limit of {MAX_MESSAGE}")
        self._writer.write(_HEADER.pack(len(data)) + data)

    def notice(self, op: str, **fields: Any) -> None:
        """Send a notice; a closed channel drops it silently (the other side is gone)."""
        with contextlib.suppress(ChannelClosed):
            self._send({"op": op, **fields})

    async def request(self, op: str, **fields: Any) -> Any:
        """Send a request and wait for its answer. Raises the typed error the other side answered with
        (:func:`error_from_json`), or :class:`ChannelClosed`."""
        self._next += 1
        ident = self._next
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        try:
            self._send({"id": ident, "op": op, **fields})
            await self._writer.drain()
            return await future
        finally:
            self._waiting.pop(ident, None)

    async def run(self) -> None:
        """Read messages until the channel closes; then fail every request still waiting."""
        try:
            while True:
                try:
                    header = await self._reader.readexactly(_HEADER.size)
                    (size,) = _HEADER.unpack(header)
                    if size > MAX_MESSAGE:
                        logger.error("channel: a message of %d bytes is over the limit; closing", size)
                        return
                    message = json.loads(await self._reader.readexactly(size))
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if not isinstance(message, dict):
                    logger.error("channel: a message that is not a JSON object; closing")
                    return
                self._dispatch(message)
        finally:
            self.closed = True
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ChannelClosed("the other process closed the channel"))
            await self._tasks.cancel_all()
            self._writer.close()

    def _dispatch(self, message: Message) -> None:
        if "re" in message:
            future = self._waiting.get(message["re"])
            if future is not None and not future.done():
                if "error" in message:
                    future.set_exception(error_from_json(message["error"]))
                else:
                    future.set_result(message.get("ok"))
        elif "id" in message:
            self._tasks.spawn(self._answer(message), name=f"channel:{message.get('op')}")
        else:
            self._on_notice(message)

    async def _answer(self, message: Message) -> None:
        try:
            reply: Message = {"re": message["id"], "ok": await self._handler(message)}
        except CredentialsUnavailable as exc:
            reply = {"re": message["id"], "error": error_to_json(exc)}
        except Exception as exc:  # a bug answering one request must not kill the channel; it is reported
            logger.exception("channel: answering %r failed", message.get("op"))
            reply = {"re": message["id"], "error": {"type": "error", "message": type(exc).__name__}}
        with contextlib.suppress(ChannelClosed):
            self._send(reply)


def time_to_json(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def time_from_json(value: object) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)  # type: ignore[arg-type]


def credentials_to_json(creds: Credentials) -> Message:
    return {"access_key_id": creds.access_key_id, "secret_access_key": creds.secret_access_key,
            "session_token": creds.session_token, "expires_at": time_to_json(creds.expires_at)}


def credentials_from_json(data: Mapping[str, Any]) -> Credentials:
    return Credentials(str(data["access_key_id"]), str(data["secret_access_key"]),
                       None if data.get("session_token") is None else str(data["session_token"]),
                       time_from_json(data.get("expires_at")))


def error_to_json(exc: CredentialsUnavailable) -> Message:
    return {"type": "credentials_unavailable", "message": exc.message, "sts_code": exc.sts_code,
            "sts_message": exc.sts_message, "transient": exc.transient}


def error_from_json(data: Mapping[str, Any]) -> Exception:
    """The typed error a reply carries: :class:`CredentialsUnavailable` as raised on the other side, else a
    :class:`RuntimeError` naming what failed there."""
    if data.get("type") == "credentials_unavailable":
        return CredentialsUnavailable.from_sts(str(data.get("message")), sts_code=data.get("sts_code"),
                                               sts_message=data.get("sts_message"),
                                               transient=bool(data.get("transient")))
    return RuntimeError(f"the other process failed: {data.get('message')}")


def _canonical(value: Any) -> Any:
    """``value`` as plain JSON data, secrets revealed (the result is only ever hashed)."""
    if isinstance(value, Secret):
        return ["secret", value.reveal()]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value) if f.compare}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        items = [_canonical(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, frozenset | set) else items
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath | datetime):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def fingerprint(key: bytes, connections: Mapping[str, ConnectionConfig], name: str) -> str:
    """A keyed digest (HMAC-SHA-256, hex) of what connection ``name``'s credentials depend on: its credential
    settings, region, STS endpoint and ``user_header``, and the same of each connection down its role chain
    (``base``). Equal digests mean the two sides fetch the same credentials. The key is the group's own, made at
    start, so a digest reveals nothing about a secret even if it were seen."""
    parts: list[Any] = []
    seen: set[str] = set()
    current: str | None = name
    while current is not None and current not in seen and current in connections:
        seen.add(current)
        conn = connections[current]
        parts.append([current, _canonical(conn.credentials), conn.region, conn.sts_endpoint_url, conn.user_header])
        base = conn.credentials.base if conn.credentials.source == "assume_role" else None
        current = base if base not in (None, "chain") else None
    data = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, data, hashlib.sha256).hexdigest()
