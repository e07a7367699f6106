"""Signed webhooks: how sigproxy tells a platform that a connect session completed.

Each delivery is an HTTP ``POST`` of a JSON body with the header::

    X-Sigproxy-Signature: t=1718000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

where ``v1`` is the hex HMAC-SHA256 of ``f"{t}.{body}"`` (the raw body bytes) under ``[connect]
webhook_secret``, and ``t`` the Unix time of the attempt (Stripe's scheme). To verify, a receiver recomputes
the HMAC over the raw body it received (before parsing it), compares in constant time, and refuses a ``t`` more
than a few minutes away from its clock (a replay): :func:`verify_webhook` does exactly that. A header may carry
several ``v1=`` (a receiver accepts any that matches). ``X-Sigproxy-Delivery`` is the same on every retry of one
event: receivers use it to drop duplicates.

Delivery: :class:`WebhookSender` posts in a background task it owns (never blocking the caller), 10 s per
attempt, 3 attempts with back-off (1 s, then 4 s), a 2xx answer ends it. Failures are logged with the URL's
scheme, host and path and the status or error type, never the secret or the signature.

Targets are not restricted to public addresses: webhook URLs are set by the holder of the admin token (the
platform itself, whose backend usually lives on an internal network), not by customers.

Must not: know what the payload means.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from .tasks import TaskSet

__all__ = ["SIGNATURE_HEADER", "DELIVERY_HEADER", "WebhookSender", "sign_webhook", "verify_webhook"]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Sigproxy-Signature"
DELIVERY_HEADER = "X-Sigproxy-Delivery"


def _hmac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign_webhook(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-Sigproxy-Signature`` value for ``body``: ``t=UNIX,v1=HEX``."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_hmac(secret, t, body)}"


def verify_webhook(secret: str, header: str | None, body: bytes | str, *, tolerance: int = 300,
                   now: float | None = None) -> bool:
    """Whether ``header`` (``X-Sigproxy-Signature``) signs ``body`` (the raw bytes received) under ``secret``,
    with a timestamp within ``tolerance`` seconds of ``now`` (default: the current time). Constant time in the
    signature; any malformed header is simply ``False``."""
    if not header:
        return False
    raw = body.encode() if isinstance(body, str) else bytes(body)
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if not value.isascii() or not value.isdigit():
                return False
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = _hmac(secret, timestamp, raw)
    return any(hmac.compare_digest(expected.encode(), s.encode("ascii", "replace")) for s in signatures)


def _where(url: str) -> str:
    """The URL for logs: no userinfo, no query (either might hold a token of the receiver's)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"


class WebhookSender:
    """Posts signed webhooks in the background; :meth:`close` waits a little for deliveries in flight."""

    def __init__(self, *, timeout: float = 10.0, backoff: Sequence[float] = (1.0, 4.0)) -> None:
        """``backoff``: the pauses between attempts (its length + 1 attempts in all)."""
        self._timeout = timeout
        self._backoff = tuple(backoff)
        self._tasks = TaskSet()

    def send(self, url: str, secret: str, payload: Mapping[str, Any]) -> None:
        """Deliver ``payload`` to ``url`` in the background; returns at once."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        delivery = str(uuid.uuid4())
        self._tasks.spawn(self._deliver(url, secret, body, delivery), name=f"sigproxy-webhook-{delivery}")

    async def _deliver(self, url: str, secret: str, body: bytes, delivery: str) -> bool:
        import aiohttp  # noqa: PLC0415 - only when a webhook is sent (the proxy's start needs no aiohttp client)

        attempts = len(self._backoff) + 1
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        for attempt in range(1, attempts + 1):
            problem: str
            try:
                async with aiohttp.ClientSession(timeout=timeout) as client, client.post(
                        url, data=body, allow_redirects=False, headers={
                            "Content-Type": "application/json", "User-Agent": "sigproxy-webhook",
                            DELIVERY_HEADER: delivery, SIGNATURE_HEADER: sign_webhook(secret, body)}) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        logger.info("webhook %s delivered to %s (attempt %d)", delivery, _where(url), attempt)
                        return True
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = type(exc).__name__
            level = logging.ERROR if attempt == attempts else logging.WARNING
            logger.log(level, "webhook %s to %s failed (attempt %d of %d): %s%s", delivery, _where(url), attempt,
                       attempts, problem, "" if attempt < attempts else "; giving up")
            if attempt < attempts:
                await asyncio.sleep(self._backoff[attempt - 1])
        return False

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def wait(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for deliveries in flight (tests, shutdown)."""
        running = self._tasks.running()
        if running:
            await asyncio.wait(running, timeout=grace)

    async def close(self, grace: float = 5.0) -> None:
        """Give deliveries in flight ``grace`` seconds, then cancel what is left."""
        await self.wait(grace)
        await self._tasks.cancel_all()
