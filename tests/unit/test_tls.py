"""sigproxy.tls: CA files and their checks, leaf contents, real handshakes, independent verifiers, cache, bundle."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import socket
import ssl
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from sigproxy.tls import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CertStore,
    TlsError,
    system_ca_file,
    write_bundle,
)

HOST = "s3.amazonaws.com"
OK_BODY = b"ok"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


class FakeClock:
    """An aware UTC clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path) -> Iterator[CertStore]:
    with CertStore.load_or_create(state_dir) as built:
        yield built


def _ca(store: CertStore) -> x509.Certificate:
    return x509.load_pem_x509_certificate(store.ca_pem)


def _peer_leaf(server_ctx: ssl.SSLContext, server_hostname: str | None = None) -> x509.Certificate:
    """The certificate ``server_ctx`` presents, from an in-memory handshake that verifies nothing."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client_done = server_done = False
    for _ in range(10):
        if not client_done:
            with contextlib.suppress(ssl.SSLWantReadError):
                client.do_handshake()
                client_done = True
        s_in.write(c_out.read())
        if not server_done:
            with contextlib.suppress(ssl.SSLWantReadError):
                server.do_handshake()
                server_done = True
        c_in.write(s_out.read())
        if client_done and server_done:
            break
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@contextlib.asynccontextmanager
async def serve_https(ctx: ssl.SSLContext, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """A one-response-per-connection HTTP/1.1 server over TLS on an ephemeral port; yields the port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n" + OK_BODY)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, 0, ssl=ctx)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _handshake(
    port: int, *, server_hostname: str, cafile: Path | None, connect_host: str = "127.0.0.1"
) -> tuple[str | None, x509.Certificate]:
    """Connect with a verifying client (trusting only ``cafile``, or the system store); ALPN and peer leaf."""
    client_ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    client_ctx.set_alpn_protocols(["http/1.1"])
    _, writer = await asyncio.open_connection(connect_host, port, ssl=client_ctx, server_hostname=server_hostname)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        return ssl_object.selected_alpn_protocol(), x509.load_der_x509_certificate(der)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def _run(*argv: str, stdin: bytes = b"") -> tuple[int, str]:
    """Run a CLI without blocking the loop that serves it; (exit code, stdout + stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


class TestCaFiles:
    def test_created_with_private_modes(self, tmp_path: Path) -> None:
        """A new state dir is 0700, the CA key 0600 and the certificate 0644, whatever the umask."""
        state_dir = tmp_path / "a" / "b" / "state"
        old = os.umask(0)
        try:
            with CertStore.load_or_create(state_dir) as store:
                assert store.ca_cert_path == state_dir / CA_CERT_FILE
        finally:
            os.umask(old)
        assert _mode(state_dir) == 0o700
        assert _mode(state_dir / CA_KEY_FILE) == 0o600
        assert _mode(state_dir / CA_CERT_FILE) == 0o644
        assert not [p.name for p in state_dir.iterdir() if p.name.endswith(".tmp")]

    def test_reused_on_second_load(self, state_dir: Path) -> None:
        """A second load_or_create reuses the CA: same certificate bytes, key file untouched."""
        with CertStore.load_or_create(state_dir) as first:
            pem = first.ca_pem
        key = (state_dir / CA_KEY_FILE).read_bytes()
        with CertStore.load_or_create(state_dir) as second:
            assert second.ca_pem == pem == (state_dir / CA_CERT_FILE).read_bytes()
        assert (state_dir / CA_KEY_FILE).read_bytes() == key

    def test_ca_contents(self, store: CertStore) -> None:
        """The CA is ECDSA P-256, a critical pathlen-0 CA with cert/CRL signing, backdated 2 days, ~10 years."""
        ca = _ca(store)
        public = ca.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert isinstance(public.curve, ec.SECP256R1)
        assert ca.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
        assert ca.subject == ca.issuer
        (cn,) = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert str(cn.value).startswith("sigproxy CA ")
        assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "sigproxy"
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == 0
        ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert ski == x509.SubjectKeyIdentifier.from_public_key(public)
        now = datetime.now(UTC)
        assert abs(ca.not_valid_before_utc - (now - timedelta(days=2))) < timedelta(minutes=5)
        assert timedelta(days=3640) < ca.not_valid_after_utc - now < timedelta(days=3660)

    def test_two_installs_differ(self, tmp_path: Path) -> None:
        """Two state dirs get different CAs, told apart by the CN suffix and the serial."""
        with CertStore.load_or_create(tmp_path / "one") as one, CertStore.load_or_create(tmp_path / "two") as two:
            a, b = _ca(one), _ca(two)
        assert a.subject != b.subject
        assert a.serial_number != b.serial_number

    def test_mismatched_key(self, tmp_path: Path) -> None:
        """A key that does not belong to the certificate is refused, naming both files."""
        CertStore.load_or_create(tmp_path / "one").close()
        CertStore.load_or_create(tmp_path / "two").close()
        shutil.copy2(tmp_path / "two" / CA_KEY_FILE, tmp_path / "one" / CA_KEY_FILE)
        with pytest.raises(TlsError, match="does not match") as info:
            CertStore.load_or_create(tmp_path / "one")
        assert CA_KEY_FILE in str(info.value) and CA_CERT_FILE in str(info.value)

    @pytest.mark.parametrize("missing", [CA_CERT_FILE, CA_KEY_FILE])
    def test_only_one_file(self, state_dir: Path, missing: str) -> None:
        """With only one of the two files present, nothing is overwritten and the error says what to do."""
        CertStore.load_or_create(state_dir).close()
        (state_dir / missing).unlink()
        present = CA_KEY_FILE if missing == CA_CERT_FILE else CA_CERT_FILE
        before = (state_dir / present).read_bytes()
        with pytest.raises(TlsError, match=f"{present} exists but .*{missing} does not"):
            CertStore.load_or_create(state_dir)
        assert (state_dir / present).read_bytes() == before
        assert not (state_dir / missing).exists()

    def test_loose_key_permissions(self, state_dir: Path) -> None:
        """A CA key readable by group or others is refused with the chmod to run."""
        CertStore.load_or_create(state_dir).close()
        (state_dir / CA_KEY_FILE).chmod(0o640)
        with pytest.raises(TlsError, match="chmod 600"):
            CertStore.load_or_create(state_dir)

    def test_garbage_files(self, state_dir: Path) -> None:
        """Unparseable files are refused with the file's name and never its content."""
        CertStore.load_or_create(state_dir).close()
        key = state_dir / CA_KEY_FILE
        key.write_bytes(b"SECRET-MATERIAL")
        with pytest.raises(TlsError, match=CA_KEY_FILE) as info:
            CertStore.load_or_create(state_dir)
        assert "SECRET" not in str(info.value)

    def test_concurrent_creation_agrees(self, state_dir: Path) -> None:
        """Many first starts racing on one empty dir all end up with the same CA as the files."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            stores = list(pool.map(lambda _: CertStore.load_or_create(state_dir), range(8)))
        assert {s.ca_pem for s in stores} == {(state_dir / CA_CERT_FILE).read_bytes()}
        for s in stores:
            s.close()


class TestLeaf:
    def test_dns_leaf_contents(self, store: CertStore) -> None:
        """A DNS leaf: lower-cased DNS SAN, CN, serverAuth, critical CA:FALSE and digitalSignature, key ids."""
        leaf = _peer_leaf(store.context_for("S3.AmazonAWS.com"), HOST)
        ca = _ca(store)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [HOST]
        assert san.get_values_for_type(x509.IPAddress) == []
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == HOST
        assert leaf.issuer == ca.subject
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and not bc.value.ca
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ca_ski.digest
        leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        public = leaf.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1)
        now = datetime.now(UTC)
        assert abs(leaf.not_valid_before_utc - (now - timedelta(days=1))) < timedelta(minutes=5)
        assert abs(leaf.not_valid_after_utc - (now + timedelta(days=7))) < timedelta(minutes=5)

    @pytest.mark.parametrize(("host", "ip"), [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("0:0::1", "::1")])
    def test_ip_leaf_has_ip_san(self, store: CertStore, host: str, ip: str) -> None:
        """An IP literal gets an IP SAN (no DNS SAN); spellings of one address share a cache entry."""
        leaf = _peer_leaf(store.context_for(host))
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(ip)]
        assert san.get_values_for_type(x509.DNSName) == []
        assert store.cached_context(ip) is store.context_for(host)

    def test_idna_host(self, store: CertStore) -> None:
        """A non-ASCII name is IDNA-encoded into the SAN and the CN; both spellings hit one cache entry."""
        ctx = store.context_for("Bücher.example")
        leaf = _peer_leaf(ctx)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["xn--bcher-kva.example"]
        assert store.cached_context("xn--bcher-kva.example") is ctx

    def test_long_host_truncates_cn_not_san(self, store: CertStore) -> None:
        """A host over 64 characters keeps its full name in the SAN; the CN is cut to 64."""
        host = ".".join(["a" * 60, "b" * 60, "example"])
        leaf = _peer_leaf(store.context_for(host))
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == host[:64]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [host]

    def test_leaves_share_one_key_with_random_serials(self, store: CertStore) -> None:
        """All leaves of a store share one key (never the CA's) and have distinct serials."""
        leaves = [_peer_leaf(store.context_for(f"b{i}.example")) for i in range(5)]
        keys = {_spki(leaf) for leaf in leaves}
        assert len(keys) == 1
        assert keys != {_spki(_ca(store))}
        assert len({leaf.serial_number for leaf in leaves}) == 5

    def test_context_settings(self, store: CertStore) -> None:
        """Contexts are server-side with TLS 1.2 as the floor."""
        ctx = store.context_for(HOST)
        assert ctx.protocol == ssl.PROTOCOL_TLS_SERVER
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2

    @pytest.mark.parametrize(
        "host",
        [
            "",
            ".",
            "a" * 254,
            "exa mple.com",
            "host/path",
            "fe80::1%eth0",
            "[::1]",
            "a..b",
            "example.com:443",
            ("a" * 64) + ".example",
            "\u2028.example",
        ],
    )
    def test_bad_hosts(self, store: CertStore, host: str) -> None:
        """Names that cannot go into a certificate raise TlsError; cached_context just answers None."""
        with pytest.raises(TlsError):
            store.context_for(host)
        assert store.cached_context(host) is None

    def test_trailing_dot(self, store: CertStore) -> None:
        """An absolute name (trailing dot) is the same host as without it."""
        assert store.context_for(HOST + ".") is store.context_for(HOST)


class TestHandshake:
    async def test_dns_host_verifies_with_our_ca_only(self, store: CertStore) -> None:
        """A client trusting only our CA completes the handshake for the host and negotiates http/1.1."""
        async with serve_https(store.context_for(HOST)) as port:
            alpn, leaf = await _handshake(port, server_hostname=HOST, cafile=store.ca_cert_path)
        assert alpn == "http/1.1"
        assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        ) == [HOST]

    async def test_other_sni_refused(self, store: CertStore) -> None:
        """A handshake whose SNI names another host than the leaf's is refused by the server (the CONNECT
        named the leaf's host), so no certificate for the wrong name is ever presented."""
        async with serve_https(store.context_for(HOST)) as port:
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await _handshake(port, server_hostname="other.example", cafile=store.ca_cert_path)

    async def test_leaf_does_not_verify_for_other_name(self, store: CertStore) -> None:
        """The leaf's SAN names only its host: verifying it for another name fails (checked offline)."""
        leaf = _peer_leaf(store.context_for(HOST), HOST)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [HOST]

    async def test_system_store_does_not_trust_us(self, store: CertStore) -> None:
        """A client with only the system trust store rejects the chain (self-signed CA in chain)."""
        async with serve_https(store.context_for(HOST)) as port:
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await _handshake(port, server_hostname=HOST, cafile=None)
        assert info.value.verify_code in {19, 20}  # self-signed in chain / unable to get local issuer

    async def test_ipv4_literal(self, store: CertStore) -> None:
        """An IPv4 leaf verifies against its IP SAN, and not for another address."""
        async with serve_https(store.context_for("127.0.0.1")) as port:
            alpn, _ = await _handshake(port, server_hostname="127.0.0.1", cafile=store.ca_cert_path)
            assert alpn == "http/1.1"
            with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
                await _handshake(port, server_hostname="127.0.0.2", cafile=store.ca_cert_path)

    @pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
    async def test_ipv6_literal(self, store: CertStore) -> None:
        """An IPv6 leaf verifies against its IP SAN over IPv6 loopback."""
        async with serve_https(store.context_for("::1"), host="::1") as port:
            alpn, _ = await _handshake(port, server_hostname="::1", cafile=store.ca_cert_path, connect_host="::1")
            assert alpn == "http/1.1"
            with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
                await _handshake(port, server_hostname="::2", cafile=store.ca_cert_path, connect_host="::1")


@pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("curl") is None, reason="needs openssl and curl")
class TestIndependentVerifiers:
    async def test_openssl_chain_and_strict_verify(self, store: CertStore, tmp_path: Path) -> None:
        """openssl s_client sees leaf + CA; `openssl verify -x509_strict -purpose sslserver` accepts the leaf."""
        async with serve_https(store.context_for(HOST)) as port:
            code, out = await _run(
                "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST, "-showcerts",
                "-CAfile", str(store.ca_cert_path), "-verify_return_error", "-verify_hostname", HOST,
            )  # fmt: skip
        assert code == 0, out
        assert "Verify return code: 0 (ok)" in out
        assert out.count("-----BEGIN CERTIFICATE-----") == 2
        first = out.index("-----BEGIN CERTIFICATE-----")
        leaf_pem = out[first : out.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")] + "\n"
        leaf_file = tmp_path / "leaf.pem"
        leaf_file.write_text(leaf_pem)
        code, out = await _run(
            "openssl", "verify", "-x509_strict", "-purpose", "sslserver", "-verify_hostname", HOST,
            "-CAfile", str(store.ca_cert_path), str(leaf_file),
        )  # fmt: skip
        assert code == 0, out
        assert out.strip().endswith(": OK")

    async def test_openssl_strict_verify_ip(self, store: CertStore, tmp_path: Path) -> None:
        """The IP leaf passes `openssl verify -x509_strict -purpose sslserver -verify_ip`."""
        leaf_file = tmp_path / "leaf.pem"
        leaf_file.write_bytes(_pem(_peer_leaf(store.context_for("127.0.0.1"))))
        code, out = await _run(
            "openssl", "verify", "-x509_strict", "-purpose", "sslserver", "-verify_ip", "127.0.0.1",
            "-CAfile", str(store.ca_cert_path), str(leaf_file),
        )  # fmt: skip
        assert code == 0, out

    async def test_curl_gets_a_response(self, store: CertStore) -> None:
        """curl --cacert ca-cert.pem fetches https://localhost:PORT/ over HTTP/1.1; without it, curl refuses."""
        async with serve_https(store.context_for("localhost")) as port:
            url = f"https://localhost:{port}/"
            resolve = f"localhost:{port}:127.0.0.1"
            common = ["curl", "--silent", "--show-error", "--max-time", "20", "--noproxy", "*", "--resolve", resolve]
            code, out = await _run(*common, "--cacert", str(store.ca_cert_path), "-w", " %{http_version}", url)
            assert code == 0, out
            assert out == "ok 1.1"
            code, out = await _run(*common, url)
            assert code == 60, out  # peer certificate cannot be authenticated with known CA certificates

    def test_cryptography_webpki_verifier(self, store: CertStore) -> None:
        """cryptography's RFC 5280 / CA-B Forum path validator accepts DNS and IP leaves."""
        ca = _ca(store)
        subjects: list[tuple[str, x509.DNSName | x509.IPAddress]] = [
            (HOST, x509.DNSName(HOST)),
            ("127.0.0.1", x509.IPAddress(ipaddress.ip_address("127.0.0.1"))),
        ]
        for host, subject in subjects:
            leaf = _peer_leaf(store.context_for(host))
            verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(subject)
            chain = verifier.verify(leaf, [])
            assert chain[-1] == ca


class TestCache:
    def test_lru_bound(self, state_dir: Path) -> None:
        """At most cache_size hosts are kept; the least recently used one goes first."""
        with CertStore.load_or_create(state_dir, cache_size=2) as store:
            a = store.context_for("a.example")
            store.context_for("b.example")
            assert store.context_for("a.example") is a  # a is now the most recent
            store.context_for("c.example")
            assert store.cached_context("b.example") is None
            assert store.cached_context("a.example") is a
            assert store.cached_context("c.example") is not None

    def test_cached_context_never_mints(self, store: CertStore) -> None:
        """cached_context answers None for an unseen host and does not mint it."""
        assert store.cached_context(HOST) is None
        assert store.cached_context(HOST) is None
        ctx = store.context_for(HOST)
        assert store.cached_context(HOST.upper()) is ctx

    def test_remint_near_expiry(self, state_dir: Path) -> None:
        """A cached leaf is reused until it is within a day of expiry, then re-minted."""
        clock = FakeClock()
        with CertStore.load_or_create(state_dir, clock=clock) as store:
            first = store.context_for(HOST)
            clock.now += timedelta(days=5, hours=23)
            assert store.context_for(HOST) is first
            clock.now += timedelta(hours=1, minutes=1)
            assert store.cached_context(HOST) is None
            second = store.context_for(HOST)
            assert second is not first
            assert _peer_leaf(second).not_valid_after_utc > _peer_leaf(first).not_valid_after_utc

    def test_short_leaf_validity(self, state_dir: Path) -> None:
        """leaf_validity sets the lifetime; one shorter than the renewal window means a fresh leaf each time."""
        with CertStore.load_or_create(state_dir, leaf_validity=timedelta(hours=1)) as store:
            first = store.context_for(HOST)
            leaf = _peer_leaf(first)
            assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=1, hours=1)
            assert store.context_for(HOST) is not first

    def test_leaf_never_outlives_ca(self, state_dir: Path) -> None:
        """Near the CA's end of life, leaves end when the CA does; after it, minting refuses."""
        clock = FakeClock()
        with CertStore.load_or_create(state_dir, clock=clock) as store:
            ca = _ca(store)
            clock.now = ca.not_valid_after_utc - timedelta(days=3)
            assert _peer_leaf(store.context_for(HOST)).not_valid_after_utc == ca.not_valid_after_utc
            clock.now = ca.not_valid_after_utc + timedelta(seconds=1)
            with pytest.raises(TlsError, match="expired"):
                store.context_for("other.example")
        with pytest.raises(TlsError, match="expired"):
            CertStore.load_or_create(state_dir, clock=clock)

    async def test_async_hit_uses_no_thread(self, store: CertStore) -> None:
        """context_for_async mints a miss in the default executor and answers a hit without it."""

        class CountingExecutor(ThreadPoolExecutor):
            submitted = 0

            def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
                type(self).submitted += 1
                return super().submit(fn, *args, **kwargs)

        executor = CountingExecutor(max_workers=1)
        asyncio.get_running_loop().set_default_executor(executor)
        ctx = await store.context_for_async(HOST)
        assert CountingExecutor.submitted == 1
        assert await store.context_for_async(HOST.upper()) is ctx
        assert CountingExecutor.submitted == 1
        with pytest.raises(TlsError):
            await store.context_for_async("bad host")
        assert CountingExecutor.submitted == 1

    def test_thread_safe_minting(self, store: CertStore) -> None:
        """Many threads minting and reading at once all get working contexts, and the cache stays consistent."""
        hosts = [f"h{i % 20}.example" for i in range(200)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            contexts = list(pool.map(store.context_for, hosts))
        assert all(isinstance(c, ssl.SSLContext) for c in contexts)
        assert all(store.cached_context(h) is not None for h in set(hosts))


class TestLifecycle:
    def test_temp_files_never_linger_and_close_removes_dir(
        self, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The private temp dir is 0700 and empty between mints; close() removes it and is idempotent."""
        tmp_root = tmp_path / "tmp"
        tmp_root.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_root))
        store = CertStore.load_or_create(state_dir)
        (private,) = tmp_root.iterdir()
        assert _mode(private) == 0o700
        for i in range(3):
            store.context_for(f"h{i}.example")
        assert list(private.iterdir()) == []
        store.close()
        store.close()
        assert list(tmp_root.iterdir()) == []

    async def test_closed_store_refuses(self, state_dir: Path) -> None:
        """After close, every lookup raises TlsError instead of serving stale state."""
        async with CertStore.load_or_create(state_dir) as store:
            store.context_for(HOST)
        with pytest.raises(TlsError, match="closed"):
            store.context_for(HOST)
        with pytest.raises(TlsError, match="closed"):
            store.cached_context(HOST)
        with pytest.raises(TlsError, match="closed"):
            await store.context_for_async(HOST)

    def test_bad_arguments(self, state_dir: Path) -> None:
        """A zero cache or a non-positive leaf lifetime is a programming error (ValueError)."""
        with pytest.raises(ValueError, match="cache_size"):
            CertStore.load_or_create(state_dir, cache_size=0)
        with pytest.raises(ValueError, match="leaf_validity"):
            CertStore.load_or_create(state_dir, leaf_validity=timedelta(0))


class TestBundle:
    def test_bundle_has_system_store_and_our_ca(self, store: CertStore, tmp_path: Path) -> None:
        """write_bundle appends our CA to the system store, 0644, and the file loads as a CA file."""
        bundle = tmp_path / "bundle.pem"
        included = write_bundle(store.ca_pem, bundle)
        system = system_ca_file()
        assert included == (system is not None)
        data = bundle.read_bytes()
        assert store.ca_pem in data
        if system is not None:
            assert data.startswith(system.read_bytes())
        assert _mode(bundle) == 0o644
        ctx = ssl.create_default_context(cafile=bundle)
        assert ctx.cert_store_stats()["x509_ca"] >= (2 if system is not None else 1)

    async def test_bundle_trusts_our_leaves(self, store: CertStore, tmp_path: Path) -> None:
        """A client using the bundle verifies our leaf."""
        bundle = tmp_path / "bundle.pem"
        write_bundle(store.ca_pem, bundle)
        async with serve_https(store.context_for(HOST)) as port:
            alpn, _ = await _handshake(port, server_hostname=HOST, cafile=bundle)
        assert alpn == "http/1.1"

    def test_bundle_replaces_atomically(self, store: CertStore, tmp_path: Path) -> None:
        """Rewriting a bundle replaces the file whole and leaves no temp files behind."""
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(b"old")
        write_bundle(store.ca_pem, bundle)
        assert bundle.read_bytes().endswith(store.ca_pem)
        assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    def test_bundle_rejects_non_pem(self, tmp_path: Path) -> None:
        """write_bundle refuses bytes that are not a PEM certificate and writes nothing."""
        with pytest.raises(TlsError):
            write_bundle(b"not a cert", tmp_path / "bundle.pem")
        assert not (tmp_path / "bundle.pem").exists()

    def test_system_ca_file_honours_ssl_cert_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """SSL_CERT_FILE, OpenSSL's own override, decides the system store when it names a file."""
        custom = tmp_path / "custom.pem"
        custom.write_bytes(b"")
        monkeypatch.setenv("SSL_CERT_FILE", str(custom))
        assert system_ca_file() == custom


def test_module_surface() -> None:
    """tls exports exactly its public names, all importable."""
    from sigproxy import tls

    for name in tls.__all__:
        assert getattr(tls, name) is not None
