"""The listener TLS settings as the config loader reads them (sigproxy.listentls): every refusal names its key
and never quotes key material; the server context's floor (TLS 1.2) and ALPN; the names a minted listener
certificate carries. Real PEM files from trustme and cryptography, read by OpenSSL."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sigproxy.config import loads
from sigproxy.errors import ConfigError
from sigproxy.listentls import ALPN, listener_names, server_context

CONN = '\n[connections.main]\nhosts = ["*.amazonaws.com"]\n[connections.main.credentials]\nsource = "chain"\n'


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, trustme.CA]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "listener.crt", tmp_path / "listener.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file, ca


def _proxy(body: str) -> str:
    return "[proxy]\n" + body + CONN


def test_a_pair_loads_and_the_context_floors_at_tls_1_2(pair: tuple[Path, Path, trustme.CA]) -> None:
    cert_file, key_file, _ = pair
    config = loads(_proxy(f'tls_cert_file = "{cert_file}"\ntls_key_file = "{key_file}"\n'))
    assert config.proxy.tls is not None
    assert config.proxy.tls.cert_file == cert_file
    assert not config.proxy.tls.minted
    context = server_context(cert_file, key_file)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
    assert ALPN == ["http/1.1"]


def test_self_and_client_ca(pair: tuple[Path, Path, trustme.CA], tmp_path: Path) -> None:
    cert_file, key_file, ca = pair
    assert loads(_proxy('tls = "self"\n')).proxy.tls.minted  # type: ignore[union-attr]
    client_ca = tmp_path / "clients.pem"
    ca.cert_pem.write_to_path(str(client_ca))
    config = loads(_proxy(f'tls_cert_file = "{cert_file}"\ntls_key_file = "{key_file}"\n'
                          f'client_ca_file = "{client_ca}"\n'))
    assert config.proxy.tls is not None
    assert config.proxy.tls.client_ca_file == client_ca
    assert server_context(cert_file, key_file, client_ca).verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(("body", "key", "words"), [
    ('tls_cert_file = "{cert}"\n', "proxy.tls_key_file", "set tls_key_file too"),
    ('tls_key_file = "{key}"\n', "proxy.tls_cert_file", "set tls_cert_file too"),
    ('tls = "self"\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\n', "proxy.tls", "not both"),
    ('tls = "yes"\n', "proxy.tls", "self"),
    ('tls_cert_file = "{missing}"\ntls_key_file = "{key}"\n', "proxy.tls_cert_file", "No such file"),
    ('tls_cert_file = "{cert}"\ntls_key_file = "{other_key}"\n', "proxy.tls_cert_file", "unencrypted PEM"),
    ('tls_cert_file = "{cert}"\ntls_key_file = "{encrypted}"\n', "proxy.tls_cert_file", "the key file is encrypted"),
    ('tls_cert_file = "{key}"\ntls_key_file = "{key}"\n', "proxy.tls_cert_file", "cannot use"),
    ('tls = "self"\nclient_ca_file = "{ca}"\n', "proxy.client_ca_file", 'not tls = "self"'),
    ('client_ca_file = "{ca}"\n', "proxy.client_ca_file", "set tls_cert_file and tls_key_file"),
    ('tls_cert_file = "{cert}"\ntls_key_file = "{key}"\nclient_ca_file = "{key}"\n', "proxy.client_ca_file",
     "CA"),
])
def test_each_bad_setting_names_its_key_and_never_quotes_the_key(
        pair: tuple[Path, Path, trustme.CA], tmp_path: Path, body: str, key: str, words: str) -> None:
    cert_file, key_file, ca = pair
    other = ec.generate_private_key(ec.SECP256R1())
    other_key = tmp_path / "other.key"
    other_key.write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.BestAvailableEncryption(b"pass")))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    text = body.format(cert=cert_file, key=key_file, missing=tmp_path / "absent.crt", other_key=other_key,
                       encrypted=encrypted, ca=ca_file)
    with pytest.raises(ConfigError) as caught:
        loads(_proxy(text))
    message = str(caught.value)
    assert message.startswith(key + ":"), message
    assert words in message, message
    for secret in (key_file, other_key, encrypted):
        assert b"PRIVATE KEY" not in message.encode() and secret.read_text()[40:80] not in message


def test_reverse_listeners_take_the_same_keys(pair: tuple[Path, Path, trustme.CA]) -> None:
    cert_file, key_file, _ = pair
    text = (CONN + '[[reverse]]\nlisten = "127.0.0.1:9443"\nupstream = "https://s3.us-east-1.amazonaws.com"\n'
            f'connection = "main"\ntls_cert_file = "{cert_file}"\n')
    with pytest.raises(ConfigError, match=r"^reverse\[0\]\.tls_key_file: "):
        loads(text)
    config = loads(text + f'tls_key_file = "{key_file}"\n')
    assert config.reverse[0].tls is not None


@pytest.mark.parametrize(("host", "names"), [
    ("127.0.0.1", ("127.0.0.1", "localhost")),
    ("::1", ("::1", "localhost")),
    ("10.1.2.3", ("10.1.2.3",)),
    ("proxy.internal", ("proxy.internal",)),
    ("0.0.0.0", (socket.gethostname(), "localhost", "127.0.0.1", "::1")),
    ("::", (socket.gethostname(), "localhost", "127.0.0.1", "::1")),
])
def test_names_of_a_minted_listener_certificate(host: str, names: tuple[str, ...]) -> None:
    assert listener_names(host) == names
