"""Dial target, Host header and TLS name as settings apart from the request's host (issue 17, item 2).

A ``[[reverse]]`` listener or a ``[[routes]]`` entry may send its requests to one address (a VPC interface
endpoint, a tunnel, a private load balancer) while sending and signing another host name (the service's):

* ``dial = "host:port"`` (or ``"host"``: the scheme's default port) -- where the TCP connection goes;
* ``sign_host = "name[:port]"`` -- the ``Host`` header sent and signed (a fixed name, also on a glob route);
  service and region are resolved from it (:func:`sigproxy.routing.resolve_service_region`);
* ``tls_server_name = "name"`` -- the name sent as SNI and checked against the upstream's certificate.

Defaults: ``dial`` is the host the request is addressed to (the listener's ``upstream``, or the host the
client named), ``sign_host`` is that same host, and TLS checks the certificate against the name dialled
(a VPC endpoint's certificate names the endpoint), unless ``tls_server_name`` says otherwise.

The egress guard (:mod:`sigproxy.egress`): a ``dial`` written in the config is the operator's explicit choice,
like naming a host in a connection's ``hosts``: it is permitted whatever it resolves to (loopback and private
addresses included). Clients cannot steer it: they only name a host, which picks the route whose ``dial`` the
operator wrote. A ``sign_host`` or ``tls_server_name`` without ``dial`` connects where the request was going
anyway, checked by the guard as before; the signed host is checked against the connection's ``hosts``.

Must not: do I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .configtable import Table
from .errors import ConfigError

if TYPE_CHECKING:
    from .routing import Target

__all__ = ["Dial", "Redirect", "parse_redirect"]

# RFC 1123 host names (labels of letters, digits and '-', not starting or ending with '-') and IPv4 addresses.
_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$")
_V6 = re.compile(r"^[0-9a-f:.]+$")


@dataclass(frozen=True, slots=True)
class Dial:
    """Where one request's upstream connection goes, when not to the host it is signed for."""

    host: str
    """Lower case; an IPv6 address without brackets."""
    port: int | None
    """``None``: the default port of the scheme the request goes upstream with."""
    tls_server_name: str
    """The name sent as SNI and checked against the certificate (https only)."""
    explicit: bool
    """Written by the operator as ``dial``: the egress guard permits it whatever it resolves to."""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    """The ``dial``, ``sign_host`` and ``tls_server_name`` of one ``[[reverse]]`` or ``[[routes]]`` entry."""

    dial: tuple[str, int | None] | None = None
    sign_host: tuple[str, int | None] | None = None
    tls_server_name: str | None = None

    def apply(self, target: Target) -> tuple[Target, Dial]:
        """``target`` (as addressed) -> the target to sign and send (its host and port are ``sign_host``'s, the
        port defaulting to the scheme's), and where to connect for it."""
        if self.dial is not None:
            host, port, explicit = self.dial[0], self.dial[1], True
        else:
            host, port, explicit = target.host, target.port, False
        dial = Dial(host, port, self.tls_server_name or host, explicit)
        if self.sign_host is None:
            return target, dial
        name, sign_port = self.sign_host
        if sign_port is None:
            sign_port = 443 if target.scheme == "https" else 80
        return target.at(name, sign_port), dial

    def describe(self) -> str:
        """``dial 127.0.0.1:9000, sign_host s3.amazonaws.com``: for the start-up log."""
        parts = []
        if self.dial is not None:
            parts.append(f"dial {_authority(*self.dial)}")
        if self.sign_host is not None:
            parts.append(f"sign_host {_authority(*self.sign_host)}")
        if self.tls_server_name is not None:
            parts.append(f"tls_server_name {self.tls_server_name}")
        return ", ".join(parts)


def _authority(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _host(value: str, path: str, example: str) -> str:
    """A host name or IP address (IPv6 in brackets when ``value`` is one); lower case, unbracketed."""
    low = value.strip().lower()
    if low.startswith("[") and low.endswith("]") and _V6.match(low[1:-1]) and low.count(":") >= 2:
        return low[1:-1]
    if _NAME.match(low):
        return low.rstrip(".")
    raise ConfigError(path, f"expected a host name or IP address like {example!r}, got {value!r}")


def parse_authority(value: str, path: str, example: str) -> tuple[str, int | None]:
    """``"host"``, ``"host:port"``, ``"[v6]"`` or ``"[v6]:port"`` -> (host, port or ``None``).

    Raises :class:`ConfigError` at ``path`` for a URL, a glob, a bad port or a bad host, with ``example``.
    """
    if "://" in value or "/" in value:
        raise ConfigError(path, f"expected host[:port] like {example!r}, not a URL: the scheme and path come from "
                          f"the listener's upstream or the request, got {value!r}")
    if any(c in value for c in "*?"):
        raise ConfigError(path, f"expected one host[:port] like {example!r}, not a glob, got {value!r}")
    host, port_s = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end > 0 and value[end + 1:].startswith(":"):
            host, port_s = value[:end + 1], value[end + 2:]
    elif value.count(":") == 1:
        host, _, port_s = value.partition(":")
    port = None
    if port_s or value.endswith(":"):
        if not (port_s.isascii() and port_s.isdigit() and len(port_s) <= 5) or not 0 < int(port_s) < 65536:
            raise ConfigError(path, f"bad port in {value!r}: expected 1 to 65535, like {example!r}")
        port = int(port_s)
    return _host(host, path, example), port


def parse_redirect(t: Table) -> Redirect | None:
    """The ``dial``, ``sign_host`` and ``tls_server_name`` keys of table ``t`` (marked read for its unknown-key
    check), or ``None`` when none is set. Raises :class:`ConfigError` naming the key."""
    dial = t.string("dial")
    sign_host = t.string("sign_host")
    tls_name = t.string("tls_server_name")
    if dial is None and sign_host is None and tls_name is None:
        return None
    return Redirect(
        dial=parse_authority(dial, t.key("dial"), "10.0.0.5:443") if dial is not None else None,
        sign_host=(parse_authority(sign_host, t.key("sign_host"), "s3.us-east-1.amazonaws.com")
                   if sign_host is not None else None),
        tls_server_name=(_host(tls_name, t.key("tls_server_name"), "s3.us-east-1.amazonaws.com")
                         if tls_name is not None else None),
    )
