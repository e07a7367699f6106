"""The egress guard (SSRF): which upstream addresses sigproxy may open a connection to.

A target that is, or resolves to, a non-public address -- loopback, link-local (the instance metadata
service at 169.254.169.254 and fd00:ec2::254), private (RFC 1918, fc00::/7, 100.64.0.0/10), unspecified,
multicast or reserved, also when embedded in an IPv6 address (``::ffff:127.0.0.1``, ``64:ff9b::a9fe:a9fe``,
6to4, Teredo) -- is refused with :class:`~sigproxy.errors.AddressNotAllowed` unless the operator named it:

* an IP-literal entry (``"127.0.0.1:*"``, ``"[::1]:9000"``) permits that address on the ports it names;
* an exact host name entry, with no glob character in its host part (``"localhost:9000"``,
  ``"minio.internal"``), permits whatever that name resolves to, on the ports it names;
* a glob (``"*.amazonaws.com"``, ``"10.*"``) never permits a non-public address;
* a connection's ``private_networks`` (CIDRs) permit their addresses for any host the connection may sign for
  (VPC interface endpoints with private DNS, on-premises S3): the operator named the networks instead.

Two layers:

* pure: :func:`address_class` / :func:`is_public` classify an address; :class:`EgressPolicy`, built from a
  connection's ``hosts`` (or ``[proxy] passthrough``), decides for one (host, port, address).
* I/O: :class:`EgressResolver` looks a name up once (the loop's ``getaddrinfo``; raw answers cached for a
  few seconds), checks every answer against a policy, and returns the answers it checked -- the very list
  the caller connects to, so there is no second lookup between check and connect (no DNS rebinding).
  :func:`resolve_checked` gives the addresses to connect to for a target, an IP literal (never looked up)
  checked as is: the upstream pool (:mod:`sigproxy.forwarding`) and the CONNECT relay both open their
  sockets from it.

Must not: follow anything (redirects are the caller's to refuse).
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from cachetools import TTLCache

from .config import Address, Network
from .errors import AddressNotAllowed
from .hostglobs import split_host_entry

__all__ = [
    "IPAddress",
    "Lookup",
    "EgressPolicy",
    "EgressResolver",
    "address_class",
    "is_public",
    "is_ip_literal",
    "system_lookup",
    "resolve_checked",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Lookup = Callable[[str, int], Awaitable[list[tuple[int, str]]]]
"""``(host, family) -> [(family, address), ...]``: a raw name lookup (:func:`system_lookup` in production)."""

# First match wins. Everything not listed is public IPv4.
_V4: Final[tuple[tuple[ipaddress.IPv4Network, str], ...]] = tuple((ipaddress.IPv4Network(net), cls) for net, cls in (
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "reserved"),           # "this network"; Linux connects 0.x to the local host
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),    # includes the instance metadata service 169.254.169.254
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "private"),        # shared address space (carrier-grade NAT)
    ("192.0.0.0/24", "reserved"),        # IETF protocol assignments
    ("192.0.2.0/24", "reserved"),        # documentation
    ("192.88.99.0/24", "reserved"),      # 6to4 relay anycast (deprecated)
    ("198.18.0.0/15", "reserved"),       # benchmarking
    ("198.51.100.0/24", "reserved"),     # documentation
    ("203.0.113.0/24", "reserved"),      # documentation
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),         # includes the broadcast address 255.255.255.255
))

# First match wins, after embedded IPv4 forms are unwrapped. Anything else outside 2000::/3 is reserved.
_V6: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = tuple((ipaddress.IPv6Network(net), cls) for net, cls in (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fd00:ec2::254/128", "link-local"),  # the instance metadata service over IPv6 (inside fc00::/7)
    ("fe80::/10", "link-local"),
    ("fc00::/7", "private"),              # unique local
    ("fec0::/10", "private"),             # site-local (deprecated)
    ("64:ff9b:1::/48", "private"),        # local-use NAT64 (RFC 8215)
    ("ff00::/8", "multicast"),
    ("100::/64", "reserved"),             # discard-only
    ("2001:db8::/32", "reserved"),        # documentation
    ("3fff::/20", "reserved"),            # documentation
    ("2001::/23", "reserved"),            # IETF protocol assignments
))
_V6_GLOBAL: Final = ipaddress.IPv6Network("2000::/3")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_SIIT: Final = ipaddress.IPv6Network("::ffff:0:0:0/96")  # IPv4-translated
_TEREDO: Final = ipaddress.IPv6Network("2001::/32")


def _embedded(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (mapped, NAT64, IPv4-translated, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip in _NAT64 or ip in _SIIT:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip in _TEREDO and ip.teredo is not None:
        return ip.teredo
    return ()


def _v4_class(ip: ipaddress.IPv4Address) -> str | None:
    for net, cls in _V4:
        if ip in net:
            return cls
    return None


@functools.lru_cache(maxsize=4096)
def _class_of(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_class(ip)
    embedded = _embedded(ip)
    if embedded:
        # An IPv6 form of IPv4 addresses is what the addresses it carries are.
        for v4 in embedded:
            cls = _v4_class(v4)
            if cls is not None:
                return cls
        return None
    for net6, cls in _V6:
        if ip in net6:
            return cls
    return None if ip in _V6_GLOBAL else "reserved"


def _parse(address: str | IPAddress) -> IPAddress:
    if isinstance(address, str):
        return ipaddress.ip_address(address)
    return address


def address_class(address: str | IPAddress) -> str | None:
    """``None`` for a public address, else its class: ``"loopback"``, ``"link-local"``, ``"private"``,
    ``"unspecified"``, ``"multicast"`` or ``"reserved"``. IPv6 forms that embed an IPv4 address (mapped,
    NAT64 ``64:ff9b::/96``, IPv4-translated, 6to4, Teredo) are judged by the IPv4 address they carry.

    Raises :class:`ValueError` for something that is not an IP address.
    """
    ip = _parse(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    return _class_of(ip)


def is_public(address: str | IPAddress) -> bool:
    """Whether sigproxy may connect to ``address`` without anyone naming it."""
    return address_class(address) is None


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is taken as an address, never looked up: any ``:``, or only digits and dots (aiohttp's
    test, kept; ``127.1`` is one too, and :class:`EgressPolicy` refuses it as an address it can't check)."""
    return ":" in host or host.replace(".", "").isdigit()


def _port_re(glob: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(glob))


def _norm_name(host: str) -> str:
    return host.lower().rstrip(".")


# Decisions remembered per policy (a policy lives as long as its connection's settings).
_DECISIONS: Final = 1024
_UNDECIDED: Final = "\0undecided"  # refusal()'s "not in _decisions" (no message is this text)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which non-public addresses one connection (or the passthrough list) names explicitly.

    ``where`` says where to name a target, for the refusal message: ``"connection main's hosts"``.
    Public addresses are always permitted; the policy is only about the rest.
    """

    where: str
    addresses: tuple[tuple[IPAddress, re.Pattern[str]], ...] = ()
    names: tuple[tuple[str, re.Pattern[str]], ...] = ()
    networks: tuple[Network, ...] = ()
    _decisions: dict[tuple[str, int, str], str | None] = field(default_factory=dict, compare=False, hash=False,
                                                                repr=False)
    """(host, port, address) -> the refusal message, or ``None``: each request checks the same few targets."""

    @classmethod
    def from_hosts(cls, entries: Iterable[str], *, where: str,
                   networks: Iterable[Network] = ()) -> EgressPolicy:
        """The explicit entries of ``entries`` (``hosts`` syntax); globbed host parts are left out."""
        addresses: list[tuple[IPAddress, re.Pattern[str]]] = []
        names: list[tuple[str, re.Pattern[str]]] = []
        for raw in entries:
            host, port = split_host_entry(raw)
            if not host or any(c in host for c in "*?[]"):
                continue  # a glob never names a non-public address
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                names.append((_norm_name(host), _port_re(port)))
            else:
                addresses.append((ip, _port_re(port)))
        return cls(where, tuple(addresses), tuple(names), tuple(networks))

    @classmethod
    def for_connection(cls, name: str, hosts: Iterable[str],
                       networks: Iterable[Network] = ()) -> EgressPolicy:
        return cls.from_hosts(hosts, where=f"connection {name}'s hosts", networks=networks)

    @classmethod
    def for_passthrough(cls, globs: Iterable[str]) -> EgressPolicy:
        return cls.from_hosts(globs, where="[proxy] passthrough")

    def _named(self, host: str, port: int, ip: IPAddress) -> bool:
        p = str(port)
        if any(ip == addr and rx.match(p) for addr, rx in self.addresses):
            return True
        if any(ip.version == net.version and ip in net for net in self.networks):
            return True
        if is_ip_literal(host):
            return False  # a name entry permits what the name resolves to, not an address typed directly
        name = _norm_name(host)
        return any(name == n and rx.match(p) for n, rx in self.names)

    def refusal(self, host: str, port: int, address: str | IPAddress) -> AddressNotAllowed | None:
        """``None`` when sigproxy may connect to ``address`` for the target ``host:port``, else the error."""
        key = (host, port, str(address))
        message = self._decisions.get(key, _UNDECIDED)  # one look-up: the key's hash is most of its cost
        if message is _UNDECIDED:
            message = self._decide(host, port, address)
            if len(self._decisions) >= _DECISIONS:
                self._decisions.clear()
            self._decisions[key] = message
        return None if message is None else AddressNotAllowed(message)

    def _decide(self, host: str, port: int, address: str | IPAddress) -> str | None:
        try:
            ip = _parse(address)
            cls = address_class(ip)
        except ValueError:
            return (f"{Address(host, port)}: {address!r} is not an IP address sigproxy can check; "
                    "use a canonical address or a host name")
        if cls is None or self._named(host, port, ip):
            return None
        shown = str(ip)
        embedded = _embedded(ip) if isinstance(ip, ipaddress.IPv6Address) else ()
        carried = f" (it carries {', '.join(map(str, embedded))})" if embedded else ""
        literal = is_ip_literal(host)
        what = (f"{shown}{carried} is a {cls} address" if literal
                else f"{host} resolves to {shown}{carried}, a {cls} address")
        example = str(Address(shown if literal else host, port))
        return (
            f"{what}; sigproxy connects to loopback, link-local, private and other non-public addresses only "
            f"when they are named: name it explicitly in {self.where} (e.g. \"{example}\")"
            f"{', or add its network to private_networks' if self.where.startswith('connection') else ''}; "
            "a glob never covers them")

    def check(self, host: str, port: int, address: str | IPAddress) -> None:
        """Raise :class:`~sigproxy.errors.AddressNotAllowed` unless sigproxy may connect to ``address``."""
        exc = self.refusal(host, port, address)
        if exc is not None:
            raise exc


# ---------------------------------------------------------------------------- I/O

_AI_ADDRCONFIG: Final = getattr(socket, "AI_ADDRCONFIG", 0)


async def system_lookup(host: str, family: int) -> list[tuple[int, str]]:
    """The loop's ``getaddrinfo`` (a thread), as aiohttp's own resolver calls it: ``[(family, address)]``.

    A name that can't even be asked for (Python encodes it with the ``idna`` codec, which refuses an empty label,
    one over 63 characters (RFC 1035 2.3.4) or a character IDNA forbids, with :class:`UnicodeError`) does not
    resolve: :class:`socket.gaierror`, as for any other name that does not, never an error of another kind."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM, flags=_AI_ADDRCONFIG)
    except UnicodeError as exc:
        raise socket.gaierror(socket.EAI_NONAME, f"{host[:80]!r} is not a name that can be looked up: {exc}") from exc
    out: list[tuple[int, str]] = []
    for fam, _, _, _, sockaddr in infos:
        if fam not in (socket.AF_INET, socket.AF_INET6):
            continue
        answer = (int(fam), str(sockaddr[0]))
        if answer not in out:
            out.append(answer)
    return out


class EgressResolver:
    """Looks names up once and hands out only answers the policy permits (all of them, or an error).

    Raw answers are cached for ``cache_ttl`` seconds (0: no cache) per (name, family); the policy is applied
    on every use, so one connection's explicit name never leaks to another.
    """

    def __init__(self, *, lookup: Lookup = system_lookup, cache_ttl: float = 10.0, cache_size: int = 1024) -> None:
        self._lookup = lookup
        self._cache: TTLCache[tuple[str, int], list[tuple[int, str]]] | None = (
            TTLCache(maxsize=cache_size, ttl=cache_ttl) if cache_ttl > 0 else None)

    async def _answers(self, host: str, family: int) -> list[tuple[int, str]]:
        key = (host.lower(), int(family))
        if self._cache is not None and (hit := self._cache.get(key)) is not None:
            return hit
        answers = await self._lookup(host, family)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, f"no address for {host}")
        if self._cache is not None:
            self._cache[key] = answers
        return answers

    async def checked(self, host: str, port: int, policy: EgressPolicy,
                      family: int = socket.AF_UNSPEC) -> list[tuple[int, str]]:
        """``[(family, address)]`` of ``host``, every one permitted by ``policy`` for ``host:port``.

        Raises :class:`~sigproxy.errors.AddressNotAllowed` when any answer is not permitted (a name that
        resolves to a non-public address nobody named is refused, whatever else it resolves to), and
        :class:`OSError` (``socket.gaierror``) when the name does not resolve.
        """
        answers = await self._answers(host, family)
        for _, address in answers:
            policy.check(host, port, address)
        return answers

    async def close(self) -> None:
        if self._cache is not None:
            self._cache.clear()


_shared: EgressResolver | None = None


async def resolve_checked(host: str, port: int, policy: EgressPolicy, *,
                          resolver: EgressResolver | None = None) -> list[str]:
    """The addresses to connect to for ``host:port``, all permitted by ``policy``, from one lookup.

    For a relay that opens its own sockets: connect to these (in order), never to ``host`` again.
    An IP literal is checked as is (``[::1]`` brackets are allowed). Raises
    :class:`~sigproxy.errors.AddressNotAllowed`, or :class:`OSError` when the name does not resolve.
    """
    global _shared  # noqa: PLW0603 - one lazily made shared cache for callers that bring no resolver
    literal = host.strip("[]")
    if is_ip_literal(literal):
        policy.check(literal, port, literal)
        return [str(ipaddress.ip_address(literal))]
    if resolver is None:
        resolver = _shared = _shared or EgressResolver()
    return [address for _, address in await resolver.checked(host, port, policy)]
