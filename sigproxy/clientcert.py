"""Client certificates as a way to select a connection: a connection's ``client_cert_subjects`` (RFC 4514
distinguished names, e.g. ``"CN=build-agent"`` or ``"CN=ci,O=Example Corp"``) and the subject of the
certificate a client presented on a listener with ``client_ca_file`` (which has already verified it).

A certificate matches an entry when its subject holds every attribute the entry names (type and value; the
values compared case-insensitively with runs of spaces collapsed, as RFC 5280 7.1 / RFC 4518 compare names).

Owns: parsing and checking those names, reading a TLS transport's peer subject, matching, and the
certificate's step of :func:`sigproxy.routing.select_connection` (:func:`connection_for_certificate`).
Must not: verify certificates (OpenSSL did, against ``client_ca_file``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, TypeAlias

from cryptography import x509

from .errors import ConfigError, ProxyAuthRequired

if TYPE_CHECKING:
    from .connection import ConnectionConfig

__all__ = ["Subject", "connection_for_certificate", "matches", "parse_subjects", "peer_subject"]

Subject: TypeAlias = frozenset[tuple[str, str]]
"""A name's attributes as (dotted OID, normalised value) pairs."""


def _normal(value: str) -> str:
    return " ".join(value.split()).casefold()


def _attributes(name: x509.Name) -> Subject:
    return frozenset((a.oid.dotted_string, _normal(a.value if isinstance(a.value, str) else a.value.hex()))
                     for a in name)


def parse_subjects(values: Iterable[str], key: str) -> tuple[str, ...]:
    """``values`` as given (each checked to be an RFC 4514 name with at least one attribute, e.g.
    ``"CN=build-agent"``). Raises :class:`ConfigError` at ``key[i]`` for one that isn't."""
    out = []
    for i, value in enumerate(values):
        try:
            name = x509.Name.from_rfc4514_string(value)
        except ValueError as exc:
            raise ConfigError(f"{key}[{i}]", f"expected a distinguished name like \"CN=build-agent\" (RFC 4514), "
                                             f"got {value!r}: {exc}") from None
        if not len(name):
            raise ConfigError(f"{key}[{i}]", 'expected at least one attribute, like "CN=build-agent"')
        out.append(value)
    return tuple(out)


def matches(subject: Subject, wanted: Iterable[str]) -> bool:
    """Whether ``subject`` (a peer certificate's, :func:`peer_subject`) holds every attribute of one of the
    names in ``wanted`` (already checked by :func:`parse_subjects`)."""
    return any(_wanted(w) <= subject for w in wanted)


def connection_for_certificate(conns: Mapping[str, ConnectionConfig], subject: Subject,
                               named: str | None) -> ConnectionConfig | None:
    """The connection whose ``client_cert_subjects`` the certificate's ``subject`` matches, or ``None`` (then
    the other ways select). ``named``: the connection the request names otherwise (header, proxy user or key
    id), if any. Raises :class:`ProxyAuthRequired` when several connections match (an ambiguous certificate
    never picks one) or ``named`` is another one (the request and its certificate disagree: refused, not
    guessed). Checks every connection with ``client_cert_subjects``: O(connections) per request, on listeners
    with ``client_ca_file`` only."""
    found = [c for c in conns.values() if c.client_cert_subjects and matches(subject, c.client_cert_subjects)]
    if len(found) > 1:
        raise ProxyAuthRequired("the client certificate matches the client_cert_subjects of several connections ("
                                + ", ".join(repr(c.name) for c in found[:5]) + "): make them distinct")
    if found and named is not None and named != found[0].name:
        raise ProxyAuthRequired(f"the client certificate selects connection {found[0].name!r}, but the request "
                                f"names {named!r}: name the same connection or none")
    return found[0] if found else None


@functools.lru_cache(maxsize=1024)
def _wanted(value: str) -> Subject:
    return _attributes(x509.Name.from_rfc4514_string(value))


def peer_subject(transport: asyncio.BaseTransport | None) -> Subject | None:
    """The subject of the certificate the client presented on ``transport`` (a TLS transport whose listener
    verified it), or ``None`` when there is none (plain transport, no certificate)."""
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return _subject(der) if der else None


@functools.lru_cache(maxsize=1024)
def _subject(der: bytes) -> Subject:
    """A DER certificate's subject, parsed once per certificate (asked on every request of its connections)."""
    return _attributes(x509.load_der_x509_certificate(der).subject)
