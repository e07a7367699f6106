"""TLS on sigproxy's own client listeners: the config (``tls_cert_file``/``tls_key_file``, or ``tls = "self"``),
and the server-side ``ssl.SSLContext`` each listener terminates TLS with.

Owns: parsing and checking those keys (the files are loaded once at parse, so a missing, unreadable or
mismatched pair is a :class:`~sigproxy.errors.ConfigError` naming the key), the listener context's settings
(TLS 1.2 or newer, ALPN ``http/1.1``), and which names a minted listener certificate carries.
Must not: do network I/O, mint certificates itself (:class:`sigproxy.tls.CertStore` does), or put key material
in messages (OpenSSL's reason is quoted, never a file's content).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from .configtable import Table
from .errors import ConfigError

__all__ = ["ALPN", "ListenerTls", "listener_names", "load_failure", "parse_listener_tls", "server_context"]

ALPN = ["http/1.1"]
"""sigproxy speaks HTTP/1.1 only (RFC 7301: a client offering only ``h2`` gets no ALPN agreement)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerTls:
    """How one listener terminates TLS: a certificate chain and key from files, or (``minted``) a leaf from
    sigproxy's own CA for the listener's address (:func:`listener_names`)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    minted: bool = False
    client_ca_file: Path | None = None
    """``client_ca_file``: clients must present a certificate issued by a CA in this PEM file (mTLS)."""

    def describe(self) -> str:
        return "a certificate from sigproxy's CA" if self.minted else f"certificate {self.cert_file}"


def load_failure(exc: OSError, fallback: str) -> str:
    """Why :func:`server_context` could not load a certificate and key, in words: OpenSSL's reason
    (``ssl.SSLError``), the system's (``OSError``), the words of the encrypted-key refusal (which carries only
    them), else ``fallback``."""
    words = exc.args[0] if exc.args and isinstance(exc.args[0], str) else None
    return getattr(exc, "reason", None) or exc.strerror or words or fallback


def server_context(cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> ssl.SSLContext:
    """A server-side context presenting the chain in ``cert_file`` (PEM, leaf first) with the unencrypted PEM
    key in ``key_file``: TLS 1.2 minimum (RFC 8996 deprecates 1.0 and 1.1), ALPN ``http/1.1``. With
    ``client_ca_file`` (PEM CA certificates) the client must present a certificate chaining to one of them
    (``ssl.CERT_REQUIRED``: no certificate, or an untrusted one, fails the handshake; RFC 8446 4.3.2/4.4.2).

    Blocking (reads the files). Raises :class:`OSError` (a file can't be read) or :class:`ssl.SSLError`
    (not PEM, encrypted key, the key doesn't match the certificate, or no CA certificate in ``client_ca_file``).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    # An encrypted key would make OpenSSL prompt on the terminal; refuse it instead.
    context.load_cert_chain(cert_file, key_file, password=_no_password)
    if client_ca_file is not None:
        context.load_verify_locations(cafile=client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _no_password() -> str:
    raise ssl.SSLError("the key file is encrypted; sigproxy needs an unencrypted PEM key (mode 0600)")


def parse_listener_tls(t: Table, *, cert: str = "tls_cert_file", key: str = "tls_key_file",
                       minted: str | None = "tls", client_ca: str | None = "client_ca_file") -> ListenerTls | None:
    """The TLS settings in table ``t`` (``[proxy]`` or one ``[[reverse]]``), or ``None`` for plain HTTP.

    ``cert``/``key`` name the file keys, ``minted`` the key whose only value is ``"self"``, ``client_ca`` the
    key of the client CA file (``None``: the table has no such key). The files are loaded now; raises
    :class:`ConfigError` naming the key when only one of the pair is set, both a pair and ``"self"`` are, the
    pair can't be loaded (missing, unreadable, not PEM, an encrypted key, or a key that isn't the
    certificate's), or a client CA file is set without a pair or can't be loaded.
    """
    cert_file, key_file = t.filepath(cert), t.filepath(key)
    self_signed = minted is not None and t.choice(minted, ("self",)) == "self"
    client_ca_file = t.filepath(client_ca) if client_ca is not None else None
    if client_ca_file is not None and (self_signed or cert_file is None or key_file is None):
        # The minted context is shared with interception for the same names: it can't require certificates.
        raise ConfigError(t.key(client_ca or ""), f"client certificates need TLS from files on this listener: "
                                                  f"set {cert} and {key}" + (' (not tls = "self")' if self_signed
                                                                            else ""))
    if self_signed:
        if cert_file is not None or key_file is not None:
            raise ConfigError(t.key(minted or ""), f'set either tls = "self" or {cert} and {key}, not both')
        return ListenerTls(minted=True)
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        missing, given = (cert, key) if cert_file is None else (key, cert)
        raise ConfigError(t.key(missing), f"{given} is set: set {missing} too (the PEM "
                                          f"{'certificate chain' if missing == cert else 'private key'})")
    for name, path in ((cert, cert_file), (key, key_file)):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(t.key(name), f"cannot read {str(path)!r}: {exc.strerror}") from exc
    try:
        server_context(cert_file, key_file)
    except ssl.SSLError as exc:
        why = load_failure(exc, "not a PEM certificate and key")
        raise ConfigError(t.key(cert), f"cannot use {str(cert_file)!r} with the key in {str(key_file)!r} "
                                       f"({why}): "
                                       f"{cert} must hold the PEM certificate chain (leaf first) and {key} "
                                       "its unencrypted PEM private key") from exc
    if client_ca_file is not None:
        _check_client_ca(t.key(client_ca or ""), client_ca_file)
    return ListenerTls(cert_file=cert_file, key_file=key_file, client_ca_file=client_ca_file)


def _check_client_ca(key: str, path: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=path)
    except OSError as exc:  # ssl.SSLError included
        why = exc.strerror if not isinstance(exc, ssl.SSLError) else exc.reason or "not PEM"
        raise ConfigError(key, f"cannot load {str(path)!r} ({why}): it must hold the PEM certificate(s) of "
                               "the CA(s) that issue client certificates") from exc
    if not context.get_ca_certs():
        raise ConfigError(key, f"{str(path)!r} holds no CA certificate: client_ca_file must hold the PEM "
                               "certificate(s) of the CA(s) that issue client certificates")


def listener_names(host: str) -> tuple[str, ...]:
    """The names a minted certificate for a listener bound to ``host`` carries: ``host`` itself (an IP
    literal becomes an IP SAN), plus ``localhost`` for a loopback address; for an unspecified address
    (``0.0.0.0``, ``::``) this machine's host name, ``localhost``, ``127.0.0.1`` and ``::1``."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return (host,)
    if ip.is_unspecified:
        return (socket.gethostname(), "localhost", "127.0.0.1", "::1")
    if ip.is_loopback:
        return (ip.compressed, "localhost")
    return (ip.compressed,)
