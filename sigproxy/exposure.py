"""Start-up advice about client listeners that anyone on the network may use to sign: pure, from the config.

A listener on an address other than loopback (``0.0.0.0`` and ``::`` included) whose ``clients`` key does not
restrict who may connect lets every host that reaches it sign with each connection that asks for neither a
``token`` nor a ``client_secret`` (any connection can be selected on any listener: ``X-Sigproxy-Connection``,
routing.select_connection). That is allowed -- a private network may be the guard -- but said once at
start-up, naming the listener and the keys that close it.

Must not: log, bind or resolve names (a host name other than ``localhost`` counts as not loopback).
"""

from __future__ import annotations

from .config import Address, Config, parse_ip

__all__ = ["is_loopback", "open_listener_warnings"]

_SHOWN = 3  # unprotected connections named in one warning


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name, as written in ``listen``) is only reachable from this machine:
    ``127.0.0.0/8``, ``::1`` (also IPv4-mapped), ``localhost``."""
    if host.lower() == "localhost":
        return True
    ip = parse_ip(host)
    return ip is not None and ip.is_loopback


def open_listener_warnings(config: Config) -> list[str]:
    """One sentence per client listener open to the network with connections it signs for unasked: the
    listener's key and address, those connections (a few named), and the keys that fix it. Connections of the
    store are not judged here (they can change at runtime)."""
    open_conns = sorted(n for n, c in config.connections.items() if c.token is None and c.client_secret is None)
    if not open_conns:
        return []
    listeners: list[tuple[str, Address, str]] = []
    if not config.proxy.clients:
        listeners.append(("proxy.listen", config.proxy.listen, "[proxy] clients"))
    listeners += [(f"reverse[{i}].listen", r.listen, f"[[reverse]] clients (reverse[{i}])")
                  for i, r in enumerate(config.reverse) if not r.clients]
    named = ", ".join(repr(n) for n in open_conns[:_SHOWN]) + (
        f" and {len(open_conns) - _SHOWN} more" if len(open_conns) > _SHOWN else "")
    return [f"{key} = {str(address)!r} is not loopback and anyone who reaches it can sign with connection(s) "
            f"{named}, which ask for no token or client_secret: set token or client_secret on those "
            f"connections, or {clients} to the client networks, or listen on 127.0.0.1"
            for key, address, clients in listeners if not is_loopback(address.host)]
