"""Selecting a connection by client certificate (sigproxy.clientcert): RFC 4514 names matched against a real
certificate's subject (trustme), the connection JSON round trip, and the refusals."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sigproxy.clientcert import Subject, connection_for_certificate, matches, peer_subject
from sigproxy.configtable import Table
from sigproxy.connection import ConnectionConfig, connection_json, parse_connection
from sigproxy.errors import ConfigError, ProxyAuthRequired


def _subject(common_name: str) -> Subject:
    """The subject of a certificate trustme issues (O=trustme, OU=..., CN=common_name), as peer_subject reads it."""
    pem = trustme.CA().issue_cert("a@example.com", common_name=common_name).cert_chain_pems[0].bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)

    class _Ssl:
        def getpeercert(self, binary_form: bool) -> bytes:
            assert binary_form
            return der

    class _Transport(asyncio.BaseTransport):
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return _Ssl() if name == "ssl_object" else default

    subject = peer_subject(_Transport())
    assert subject is not None
    return subject


def _conn(name: str, *subjects: str) -> ConnectionConfig:
    data = {"hosts": ["*.amazonaws.com"], "credentials": {"source": "chain"},
            "client_cert_subjects": list(subjects)}
    return parse_connection(name, Table(data, f"connections.{name}", {}))


def test_matches_every_attribute_of_one_name() -> None:
    subject = _subject("build-agent")
    assert matches(subject, ["CN=build-agent"])
    assert matches(subject, ["CN=BUILD-AGENT"])  # values ignore case (RFC 5280 7.1)
    assert matches(subject, ["CN=build-agent,O=trustme  v" + trustme.__version__])
    assert matches(subject, ["CN=nope", "CN=build-agent"])
    assert not matches(subject, ["CN=build-agent,O=Example"])
    assert not matches(subject, ["CN=build"])


def test_no_certificate_on_a_plain_transport() -> None:
    class _Plain(asyncio.BaseTransport):
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return default

    assert peer_subject(_Plain()) is None
    assert peer_subject(None) is None


def test_connection_for_certificate() -> None:
    conns = {"a": _conn("a", "CN=agent-a"), "b": _conn("b", "CN=agent-b"), "plain": _conn("plain")}
    assert connection_for_certificate(conns, _subject("agent-a"), None) is conns["a"]
    assert connection_for_certificate(conns, _subject("agent-a"), "a") is conns["a"]
    assert connection_for_certificate(conns, _subject("other"), "b") is None
    with pytest.raises(ProxyAuthRequired, match="selects connection 'a', but the request names 'b'"):
        connection_for_certificate(conns, _subject("agent-a"), "b")
    conns["a2"] = _conn("a2", "CN=nobody", "CN=agent-a")
    with pytest.raises(ProxyAuthRequired, match="several connections"):
        connection_for_certificate(conns, _subject("agent-a"), None)


@pytest.mark.parametrize("bad", ["build-agent", "", "CN"])
def test_bad_names_refused(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        _conn("a", "CN=ok", bad)
    assert info.value.path == "connections.a.client_cert_subjects[1]"


def test_json_round_trip() -> None:
    conn = _conn("a", "CN=agent-a,O=Example Corp")
    data = connection_json(conn)
    assert data["client_cert_subjects"] == ["CN=agent-a,O=Example Corp"]
    back = {k: v for k, v in data.items() if k not in ("name", "origin", "state")}
    assert parse_connection("a", Table(back, "connections.a", {})) == conn
