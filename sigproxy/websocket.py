"""Pure: the WebSocket opening handshake as a signing proxy sees it (RFC 6455 4), and how AWS wants it signed.

* :func:`websocket_upgrade`: whether a request is a WebSocket handshake sigproxy relays; other upgrades are
  refused as before (sigproxy speaks HTTP/1.1, not h2c).
* :func:`signing_for`: the signing name and form for the handshake. API Gateway WebSocket APIs with IAM
  authorization take header auth like any request; AWS IoT Core's MQTT over WebSocket takes a presigned
  URL under the signing name ``iotdevicegateway`` whose ``X-Amz-Security-Token`` is appended after signing,
  outside the canonical query (AWS IoT developer guide, "MQTT over the WebSocket protocol"; aws-c-mqtt signs
  with ``omit_session_token``).
* :func:`upgrade_request_headers` / :func:`switch_response_headers`: the hop-by-hop headers of the handshake,
  put back after the hop-by-hop filter removed them.

Must not: do I/O, sign (:mod:`sigproxy.prepare` does), or look inside frames (:mod:`sigproxy.wsframes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from .errors import BadRequest, UnsupportedRequest
from .headerrules import connection_options, end_to_end

__all__ = ["PRESIGN_EXPIRES", "WebSocketSigning", "is_websocket_switch", "signing_for", "switch_response_headers",
           "token_after_signing", "upgrade_request_headers", "websocket_upgrade"]

# Signing names whose WebSocket endpoint is another service: AWS IoT's data endpoint serves HTTPS under
# ``iotdata`` and MQTT over WebSocket under ``iotdevicegateway`` (same host, path /mqtt).
_WEBSOCKET_SIGNING_NAMES = {"iotdata": "iotdevicegateway"}
# Signing names that take the handshake presigned, the session token outside the signature.
_QUERY_TOKEN_AFTER = frozenset({"iotdevicegateway"})
PRESIGN_EXPIRES = 300
"""Seconds a presigned handshake is valid: it is used at once (the clock skew AWS allows is 5 minutes)."""


@dataclass(frozen=True, slots=True)
class WebSocketSigning:
    """How to sign a WebSocket handshake."""

    service: str
    """The signing name."""
    form: Literal["header", "query"]
    """``header``: ``Authorization``; ``query``: a presigned URL."""
    token_after_signing: bool
    """The session token goes in the query after signing, not in the canonical request (AWS IoT)."""


def _values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of the header ``name``, repeated lines included (a multidict's ``getall``)."""
    getall = getattr(headers, "getall", None)
    return list(getall(name, [])) if getall is not None else [headers[name]] if name in headers else []


def _tokens(headers: Mapping[str, str], name: str) -> set[str]:
    return {token.strip().lower() for value in _values(headers, name) for token in value.split(",")}


def websocket_upgrade(method: str, version: str, headers: Mapping[str, str], *, body: bool) -> bool:
    """Whether the request is a WebSocket opening handshake to relay: ``Upgrade: websocket`` with
    ``Connection: upgrade`` (RFC 6455 4.1, RFC 9110 7.8). ``False`` when it asks for no upgrade.

    Raises :class:`~sigproxy.errors.UnsupportedRequest` for any other upgrade (``h2c``, ...) and
    :class:`~sigproxy.errors.BadRequest` for a WebSocket handshake RFC 6455 4.1 forbids: not ``GET``, not
    HTTP/1.1, with a body, or ``Upgrade`` without ``Connection: upgrade``.
    """
    if "Upgrade" not in headers:
        return False
    upgrade = ", ".join(_values(headers, "Upgrade"))  # every line: the refusal names what was asked
    if _tokens(headers, "Upgrade") != {"websocket"}:
        hint = " (curl: drop --http2)" if "h2c" in upgrade.lower() else ""
        raise UnsupportedRequest(f"protocol upgrades ({upgrade[:40]}) are not proxied: sigproxy forwards HTTP/1.1 "
                                 f"requests and WebSocket handshakes; send the request without Upgrade{hint}")
    if "upgrade" not in _tokens(headers, "Connection"):
        raise BadRequest("a WebSocket handshake needs Connection: Upgrade besides Upgrade: websocket (RFC 6455 4.1)")
    if method != "GET" or version != "1.1":
        raise BadRequest(f"a WebSocket handshake is a GET over HTTP/1.1 (RFC 6455 4.1), not {method[:16]} over "
                         f"HTTP/{version}")
    if body:
        raise BadRequest("a WebSocket handshake has no body (RFC 6455 4.1)")
    return True


def signing_for(service: str) -> WebSocketSigning:
    """How to sign a handshake for the resolved signing name ``service`` (see the module docstring)."""
    service = _WEBSOCKET_SIGNING_NAMES.get(service, service)
    if token_after_signing(service):
        return WebSocketSigning(service, "query", token_after_signing=True)
    return WebSocketSigning(service, "header", token_after_signing=False)


def token_after_signing(service: str) -> bool:
    """Whether a presigned URL for the signing name ``service`` carries its session token outside the signature,
    appended after signing (AWS IoT's ``iotdevicegateway``, see the module docstring)."""
    return service in _QUERY_TOKEN_AFTER


def upgrade_request_headers(client_headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """``Connection`` and ``Upgrade`` for the handshake sent upstream (the hop-by-hop filter took the
    client's): never signed, since any hop may rewrite them."""
    return [("Connection", "Upgrade"), ("Upgrade", client_headers.get("Upgrade", "websocket"))]


def switch_response_headers(upstream_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``101``'s headers for the client: the upstream's end-to-end ones (``Sec-WebSocket-Accept``,
    ``-Protocol``, ``-Extensions``, ...) and ``Upgrade``/``Connection`` (RFC 9110 15.2.2)."""
    headers = list(upstream_headers)
    upgrade = next((v for k, v in headers if k.lower() == "upgrade"), "websocket")
    named = connection_options([v for k, v in headers if k.lower() == "connection"])
    return [*end_to_end(headers, named), ("Upgrade", upgrade), ("Connection", "Upgrade")]


def is_websocket_switch(status: int, upstream_headers: Iterable[tuple[str, str]]) -> bool:
    """Whether the upstream's answer switched to WebSocket: ``101`` with ``Upgrade: websocket``."""
    return status == 101 and any(k.lower() == "upgrade" and v.strip().lower() == "websocket"
                                 for k, v in upstream_headers)
