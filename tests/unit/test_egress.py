"""The egress guard's pure parts (address classes, the explicit-naming rule) and its resolver over a scripted
lookup (no DNS, no sockets)."""

from __future__ import annotations

import ipaddress
import re
import socket

import pytest

from sigproxy.egress import (
    EgressPolicy,
    EgressResolver,
    address_class,
    is_ip_literal,
    is_public,
    resolve_checked,
)
from sigproxy.errors import AddressNotAllowed

NON_PUBLIC = [
    # loopback
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    # link-local, the metadata service in both families
    ("169.254.169.254", "link-local"), ("169.254.0.1", "link-local"), ("fd00:ec2::254", "link-local"),
    ("fe80::1", "link-local"), ("fe80::1%1", "link-local"),
    # private: RFC 1918, CGNAT, unique local, site-local, local-use NAT64
    ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("172.31.255.254", "private"),
    ("192.168.1.1", "private"), ("100.64.0.1", "private"), ("100.127.255.254", "private"),
    ("fc00::1", "private"), ("fd12:3456::1", "private"), ("fec0::1", "private"), ("64:ff9b:1::a00:1", "private"),
    # unspecified
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    # multicast
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"), ("ff0e::1", "multicast"),
    # reserved
    ("0.1.2.3", "reserved"), ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
    ("192.0.2.1", "reserved"), ("198.51.100.1", "reserved"), ("203.0.113.1", "reserved"),
    ("198.18.0.1", "reserved"), ("192.0.0.8", "reserved"),
    ("2001:db8::1", "reserved"), ("3fff::1", "reserved"), ("100::1", "reserved"), ("4000::1", "reserved"),
    ("::127.0.0.1", "reserved"),  # IPv4-compatible (deprecated): outside 2000::/3
    # IPv4 embedded in IPv6: judged by the IPv4 address carried
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"), ("::ffff:10.0.0.1", "private"),
    ("::ffff:0.0.0.0", "unspecified"), ("::ffff:224.0.0.1", "multicast"),
    ("64:ff9b::a9fe:a9fe", "link-local"), ("64:ff9b::7f00:1", "loopback"), ("64:ff9b::c0a8:101", "private"),
    ("::ffff:0:7f00:1", "loopback"),                   # IPv4-translated (SIIT)
    ("2002:7f00:1::", "loopback"), ("2002:a9fe:a9fe::1", "link-local"),  # 6to4
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1 (obfuscated)
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "52.216.0.1", "100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.0",
          "192.167.255.255", "169.253.255.255", "223.255.255.255", "2606:4700:4700::1111", "2a05:d018::1",
          "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


class TestClassification:
    @pytest.mark.parametrize(("address", "cls"), NON_PUBLIC)
    def test_non_public(self, address: str, cls: str) -> None:
        assert address_class(address) == cls
        assert not is_public(address)

    @pytest.mark.parametrize("address", PUBLIC)
    def test_public(self, address: str) -> None:
        assert address_class(address) is None
        assert is_public(address)

    def test_not_an_address(self) -> None:
        with pytest.raises(ValueError, match="does not appear"):
            address_class("localhost")

    @pytest.mark.parametrize(("host", "literal"), [
        ("127.0.0.1", True), ("::1", True), ("fd00:ec2::254", True), ("127.1", True), ("2130706433", True),
        ("localhost", False), ("s3.amazonaws.com", False), ("1.2.3.4.nip.io", False),
    ])
    def test_ip_literal_as_aiohttp_sees_it(self, host: str, literal: bool) -> None:
        """What aiohttp connects to without asking a resolver is what gets checked as a literal."""
        assert is_ip_literal(host) is literal


def policy(*hosts: str) -> EgressPolicy:
    return EgressPolicy.for_connection("main", hosts)


class TestExplicitRule:
    def test_public_needs_no_naming(self) -> None:
        assert policy("*.amazonaws.com").refusal("s3.amazonaws.com", 443, "52.216.0.1") is None

    def test_ip_literal_entry_permits_that_address(self) -> None:
        p = policy("127.0.0.1:*", "[::1]:9000", "169.254.169.254")
        assert p.refusal("127.0.0.1", 5000, "127.0.0.1") is None
        assert p.refusal("::1", 9000, "::1") is None
        assert p.refusal("169.254.169.254", 80, "169.254.169.254") is None
        assert p.refusal("::1", 9001, "::1") is not None  # port not named
        assert p.refusal("127.0.0.2", 5000, "127.0.0.2") is not None  # another address
        assert p.refusal("::ffff:127.0.0.1", 80, "::ffff:127.0.0.1") is not None  # a mapped form is another literal

    def test_exact_name_permits_what_it_resolves_to(self) -> None:
        p = policy("localhost:9000", "minio.internal")
        assert p.refusal("localhost", 9000, "127.0.0.1") is None
        assert p.refusal("localhost", 9000, "::1") is None
        assert p.refusal("LOCALHOST.", 9000, "127.0.0.1") is None
        assert p.refusal("minio.internal", 443, "10.0.0.5") is None
        assert p.refusal("localhost", 9001, "127.0.0.1") is not None  # port not named
        assert p.refusal("127.0.0.1", 9000, "127.0.0.1") is not None  # a name does not permit a typed literal

    @pytest.mark.parametrize("entry", ["*.amazonaws.com", "local*:*", "localhos?", "10.*", "169.254.*",
                                       "[fd00:ec2::*]", "host[0-9].internal", "127.0.0.*:*"])
    def test_a_glob_never_permits_non_public(self, entry: str) -> None:
        p = policy(entry)
        assert p.addresses == () and p.names == ()
        for host, address in [("localhost", "127.0.0.1"), ("s3.amazonaws.com", "10.0.0.1"),
                              ("10.0.0.1", "10.0.0.1"), ("169.254.169.254", "169.254.169.254"),
                              ("fd00:ec2::254", "fd00:ec2::254"), ("host1.internal", "192.168.0.1"),
                              ("127.0.0.1", "127.0.0.1")]:
            assert p.refusal(host, 80, address) is not None, (entry, host)

    def test_the_test_suites_moto_hosts_are_explicit(self) -> None:
        p = policy("127.0.0.1:*", "localhost:*")
        assert p.refusal("127.0.0.1", 5000, "127.0.0.1") is None
        assert p.refusal("localhost", 5000, "::1") is None

    def test_message_names_host_class_and_fix(self) -> None:
        exc = policy("local*:*").refusal("localhost", 9000, "127.0.0.1")
        assert isinstance(exc, AddressNotAllowed)
        assert exc.status == 403 and exc.code == "address_not_allowed"
        assert "localhost resolves to 127.0.0.1, a loopback address" in exc.message
        assert "name it explicitly in connection main's hosts" in exc.message
        assert '"localhost:9000"' in exc.message

    def test_message_for_a_literal_and_an_embedded_address(self) -> None:
        exc = policy("169.254.*").refusal("169.254.169.254", 80, "169.254.169.254")
        assert exc is not None and "169.254.169.254 is a link-local address" in exc.message
        exc = policy().refusal("64:ff9b::a9fe:a9fe", 80, "64:ff9b::a9fe:a9fe")
        assert exc is not None and "carries 169.254.169.254" in exc.message and "link-local" in exc.message
        assert '"[64:ff9b::a9fe:a9fe]:80"' in exc.message

    def test_passthrough_policy_says_where(self) -> None:
        exc = EgressPolicy.for_passthrough(["*.internal"]).refusal("db.internal", 443, "10.0.0.1")
        assert exc is not None and "name it explicitly in [proxy] passthrough" in exc.message

    def test_uncheckable_address_is_refused(self) -> None:
        with pytest.raises(AddressNotAllowed, match="not an IP address"):
            policy("127.1").check("127.1", 80, "127.1")


class Script:
    """A lookup that answers from a script, one answer list per call (the last repeats), and counts calls."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, family: int) -> list[tuple[int, str]]:
        self.calls.append((host, family))
        batch = self.answers[min(len(self.calls), len(self.answers)) - 1]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in batch]


class TestResolver:
    async def test_checked_answers_are_the_looked_up_ones(self) -> None:
        lookup = Script(["52.216.0.1", "2a05:d018::1"])
        resolver = EgressResolver(lookup=lookup)
        got = await resolver.checked("s3.amazonaws.com", 443, policy("*.amazonaws.com"))
        assert got == [(socket.AF_INET, "52.216.0.1"), (socket.AF_INET6, "2a05:d018::1")]

    async def test_any_non_public_answer_refuses_the_name(self) -> None:
        resolver = EgressResolver(lookup=Script(["52.216.0.1", "127.0.0.1"]))
        with pytest.raises(AddressNotAllowed, match=re.escape("resolves to 127.0.0.1, a loopback")):
            await resolver.checked("evil.example", 443, policy("*.example"))

    async def test_cache_holds_answers_not_verdicts(self) -> None:
        """A name one connection names is cached; another connection's glob still gets refused from the cache."""
        lookup = Script(["10.0.0.5"])
        resolver = EgressResolver(lookup=lookup, cache_ttl=60)
        assert await resolver.checked("minio.internal", 9000, policy("minio.internal:9000"))
        with pytest.raises(AddressNotAllowed):
            await resolver.checked("minio.internal", 9000, policy("*.internal:*"))
        assert len(lookup.calls) == 1

    async def test_no_cache_looks_up_every_time(self) -> None:
        lookup = Script(["52.216.0.1"], ["127.0.0.1"])
        resolver = EgressResolver(lookup=lookup, cache_ttl=0)
        assert await resolver.checked("rebind.example", 80, policy("*.example")) == [(socket.AF_INET, "52.216.0.1")]
        with pytest.raises(AddressNotAllowed):
            await resolver.checked("rebind.example", 80, policy("*.example"))
        assert len(lookup.calls) == 2

    async def test_empty_answer_is_a_lookup_failure(self) -> None:
        resolver = EgressResolver(lookup=Script([]))
        with pytest.raises(socket.gaierror):
            await resolver.checked("nothing.example", 80, policy("*.example"))


class TestResolveChecked:
    async def test_literal_checked_without_lookup(self) -> None:
        lookup = Script(["8.8.8.8"])
        resolver = EgressResolver(lookup=lookup)
        assert await resolve_checked("[::1]", 443, policy("[::1]:443"), resolver=resolver) == ["::1"]
        assert await resolve_checked("8.8.8.8", 443, policy("*.example"), resolver=resolver) == ["8.8.8.8"]
        with pytest.raises(AddressNotAllowed, match="link-local"):
            await resolve_checked("169.254.169.254", 443, EgressPolicy.for_passthrough(["169.254.*"]),
                                  resolver=resolver)
        assert lookup.calls == []

    async def test_name_gives_the_checked_addresses(self) -> None:
        resolver = EgressResolver(lookup=Script(["127.0.0.1", "::1"]))
        passthrough = EgressPolicy.for_passthrough(["localhost:8443"])
        assert await resolve_checked("localhost", 8443, passthrough, resolver=resolver) == ["127.0.0.1", "::1"]
        with pytest.raises(AddressNotAllowed, match=re.escape("[proxy] passthrough")):
            await resolve_checked("localhost", 8443, EgressPolicy.for_passthrough(["local*"]), resolver=resolver)

    async def test_system_lookup_by_default(self) -> None:
        """Without a resolver the loop's getaddrinfo answers (localhost is in /etc/hosts)."""
        got = await resolve_checked("localhost", 9000, EgressPolicy.for_passthrough(["localhost:9000"]))
        assert got and all(address_class(a) == "loopback" for a in got)

    @pytest.mark.parametrize("name", ["a" * 64 + ".example", "a..example", "\udcff.example"])
    async def test_a_name_that_cannot_be_asked_for_does_not_resolve(self, name: str) -> None:
        """A label over 63 characters, an empty one, a byte that was not UTF-8: Python's idna codec refuses to
        look them up with UnicodeError, which callers took for a bug (500); it is the lookup failing, an OSError."""
        with pytest.raises(socket.gaierror, match="not a name that can be looked up"):
            await resolve_checked(name, 443, EgressPolicy.for_passthrough(["*"]), resolver=EgressResolver())


def test_private_networks_permit_any_name_inside_them() -> None:
    policy = EgressPolicy.for_connection("vpc", ["*.amazonaws.com"], [ipaddress.ip_network("10.0.0.0/8")])
    policy.check("bucket.s3.eu-west-1.amazonaws.com", 443, "10.1.2.3")
    policy.check("10.1.2.3", 443, "10.1.2.3")
    with pytest.raises(AddressNotAllowed, match="private_networks"):
        policy.check("bucket.s3.eu-west-1.amazonaws.com", 443, "192.168.1.1")
    with pytest.raises(AddressNotAllowed):
        policy.check("x.amazonaws.com", 443, "169.254.169.254")
    with pytest.raises(AddressNotAllowed):
        policy.check("x.amazonaws.com", 443, "::ffff:192.168.0.1")
