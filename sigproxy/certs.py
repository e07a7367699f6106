"""Pure: the X.509 certificates sigproxy's own CA is and mints (:mod:`sigproxy.tls` keeps them and their files).

Owns: what the CA certificate and each leaf contain (ECDSA P-256 keys, SHA-256 signatures, names, validity given,
extensions: basicConstraints, keyUsage, extendedKeyUsage, subject and authority key ids), which host names a leaf
can carry (IP SAN for IP literals, DNS SAN otherwise) and the checks a loaded CA pair must pass.
Must not: do I/O (files, sockets, the clock: the time comes in ``now``), use RSA, put key material in messages,
import other sigproxy modules.
"""

from __future__ import annotations

import ipaddress
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "TlsError",
    "HostName",
    "host_names",
    "create_ca",
    "load_ca_cert",
    "load_ca_key",
    "check_ca",
    "authority_key_id",
    "leaf_certificate",
]

# Users install the CA once; it never leaves the state directory, so a long life costs little.
_CA_VALIDITY = timedelta(days=3650)
# Backdated so clients with a slow clock still accept our certificates (mitmproxy's CERT_VALIDITY_OFFSET).
_CA_BACKDATE = timedelta(days=2)
# RFC 1035 section 2.3.4 (text form of a name without the trailing dot) and RFC 5280 ub-common-name.
_MAX_HOST_LEN = 253
_MAX_LABEL_LEN = 63
_MAX_CN_LEN = 64
# Underscore: S3 bucket names in virtual-host style; colon: IPv6 literals; star: wildcard names.
_HOST_CHARS = frozenset(string.ascii_letters + string.digits + ".-_:*")


class TlsError(RuntimeError):
    """The CA files are unusable, a host name cannot be put in a certificate, or the store is closed."""


@dataclass(frozen=True, slots=True)
class HostName:
    key: str
    """Normalised host: lower-case A-label DNS name, or the compressed IP literal. Cache key and CN."""
    san: x509.GeneralName


def host_names(*hosts: str) -> list[HostName]:
    """Each of ``hosts`` as a certificate name (:func:`_host_name`), in order. Raises :class:`TlsError`."""
    return [_host_name(h) for h in hosts]


def _host_name(host: str) -> HostName:
    """``host`` as a certificate name. Raises :class:`TlsError`: empty, too long, bad characters or labels,
    ``host:port``."""
    shown = repr(host[:80] + ("..." if len(host) > 80 else ""))
    text = host.lower()
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise TlsError(f"host {shown} is not a valid internationalised domain name ({exc})") from exc
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]  # an absolute name; certificates carry names without the root dot
    if not text:
        raise TlsError("host name is empty")
    if len(text) > _MAX_HOST_LEN:
        raise TlsError(f"host {shown} is longer than {_MAX_HOST_LEN} characters")
    bad = set(text) - _HOST_CHARS
    if bad:
        raise TlsError(f"host {shown} contains {''.join(sorted(bad))!r}; allowed are letters, digits and '.-_:*'")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return HostName(key=ip.compressed, san=x509.IPAddress(ip))
    if ":" in text:
        raise TlsError(f"host {shown} is neither an IP address nor a DNS name: pass the host without a port")
    if any(not label or len(label) > _MAX_LABEL_LEN for label in text.split(".")):
        raise TlsError(f"host {shown} has an empty label or one over {_MAX_LABEL_LEN} characters")
    return HostName(key=text, san=x509.DNSName(text))


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def authority_key_id(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> x509.AuthorityKeyIdentifier:
    """The authorityKeyIdentifier of the leaves ``ca_cert`` issues: its own subject key id, else its key's."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def create_ca(*, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new self-signed CA (``pathlen:0``) and its key, valid from two days before ``now`` for ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    # The suffix makes two installs' CAs distinguishable in a trust store and in client error messages.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"sigproxy CA {secrets.token_hex(4)}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigproxy"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CA_BACKDATE)
        .not_valid_after(now + _CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def load_ca_cert(pem: bytes, source: Path) -> x509.Certificate:
    """The CA certificate in ``pem`` (read from ``source``, named in the error). Raises :class:`TlsError`."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise TlsError(f"{source} is not a PEM certificate") from exc


def load_ca_key(pem: bytes, source: Path) -> ec.EllipticCurvePrivateKey:
    """The CA key in ``pem`` (read from ``source``, named in the error): unencrypted, EC. Raises
    :class:`TlsError`, whose message never includes the key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # TypeError: the key is encrypted. The message never includes the file's content.
        raise TlsError(f"{source} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{source} is not an EC key; sigproxy's CA uses ECDSA P-256")
    return key


def check_ca(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, *, cert_path: Path, key_path: Path,
             now: datetime) -> None:
    """Raise :class:`TlsError` unless ``key`` is ``cert``'s, ``cert`` is a CA certificate and it has not expired
    at ``now``; the messages name the two files and how to recover."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != cert.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise TlsError(
            f"{key_path} does not match {cert_path}: restore the pair, or delete both to create a new CA "
            "(clients must then trust the new certificate)"
        )
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise TlsError(f"{cert_path} is not a CA certificate (no basicConstraints CA:TRUE)")
    if cert.not_valid_after_utc <= now:
        raise TlsError(
            f"{cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}: delete it and {key_path.name} "
            "to create a new CA (clients must then trust the new certificate)"
        )


def leaf_certificate(
    names: list[HostName],
    *,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    ski: x509.SubjectKeyIdentifier,
    aki: x509.AuthorityKeyIdentifier,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A server leaf for ``names`` (the first is the CN, cut to 64 characters; all are SANs) with
    ``public_key``, issued and signed by the CA."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0].key[:_MAX_CN_LEN])]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([n.san for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
