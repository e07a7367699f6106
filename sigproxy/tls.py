"""sigproxy's own certificate authority, and the per-host TLS server contexts minted from it.

Owns: the CA key and certificate files in the state directory (created once, atomically, then reused and
checked), one ECDSA P-256 leaf key shared by every leaf, minting short-lived leaves per host (what a certificate
contains is :mod:`sigproxy.certs`'), a bounded LRU of ready ``ssl.SSLContext`` objects, and writing a client
trust bundle (system store + our CA).
Must not: shell out (``cryptography`` does all the crypto), use RSA, mint on the event loop
(:meth:`CertStore.context_for_async` mints in a thread), keep leaf certificates or keys on disk (the stdlib
``ssl`` module loads a chain only from a file: it exists, mode 0600 in a 0700 directory, for one
``load_cert_chain`` call), put key material in logs or messages, import sigproxy modules other than
:mod:`sigproxy.certs`.

Typical use (``load_or_create`` does file I/O: run it in a thread from async code)::

    store = await asyncio.to_thread(CertStore.load_or_create, state_dir)
    ctx = await store.context_for_async("s3.amazonaws.com")   # server side of a CONNECT tunnel
    ...
    store.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import os
import secrets
import shutil
import ssl
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Self

from cachetools import LRUCache
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .certs import (
    HostName,
    TlsError,
    authority_key_id,
    check_ca,
    create_ca,
    host_names,
    leaf_certificate,
    load_ca_cert,
    load_ca_key,
)

__all__ = [
    "TlsError",
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "DEFAULT_LEAF_VALIDITY",
    "CertStore",
    "system_ca_file",
    "write_bundle",
]

CA_CERT_FILE = "ca-cert.pem"
CA_KEY_FILE = "ca-key.pem"
# Backdated so clients with a slow clock still accept our certificates (mitmproxy's CERT_VALIDITY_OFFSET).
_LEAF_BACKDATE = timedelta(days=1)
# Short, because every leaf shares one key; long validity is refused by some clients:
# https://github.com/mitmproxy/mitmproxy/issues/815
DEFAULT_LEAF_VALIDITY = timedelta(days=7)
# A cached leaf this close to expiry is re-minted, so no handshake presents a certificate about to lapse.
_LEAF_RENEW_BEFORE = timedelta(days=1)
# One SSLContext is ~10 KB; enough for every S3 bucket host a busy client touches between restarts.
_DEFAULT_CACHE_SIZE = 1024
_ALPN = ["http/1.1"]
# Last resort when neither OpenSSL nor certifi knows a trust store (Debian/Ubuntu/Alpine path).
_FALLBACK_SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class _Leaf:
    context: ssl.SSLContext
    expires_at: datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CertStore:
    """sigproxy's own CA and the per-host leaf certificates minted from it.

    Build it with :meth:`load_or_create`. Thread-safe: :meth:`context_for` may run in several threads at once
    (two concurrent misses for one host both mint; the last one is cached, both contexts are valid).
    Use it as a (sync or async) context manager, or call :meth:`close`; a closed store raises :class:`TlsError`.
    """

    __slots__ = (
        "_aki",
        "_ca_cert",
        "_ca_cert_path",
        "_ca_key",
        "_ca_pem",
        "_cache",
        "_clock",
        "_leaf_key_pem",
        "_leaf_public",
        "_leaf_ski",
        "_leaf_validity",
        "_lock",
        "_state",
        "_tmp_dir",
    )

    def __init__(
        self,
        *,
        ca_cert: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert_path: Path,
        cache_size: int = _DEFAULT_CACHE_SIZE,
        leaf_validity: timedelta = DEFAULT_LEAF_VALIDITY,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        """Use :meth:`load_or_create`; this takes an already loaded and checked CA."""
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1 (got {cache_size})")
        if leaf_validity <= timedelta(0):
            raise ValueError(f"leaf_validity must be positive (got {leaf_validity})")
        self._ca_cert = ca_cert
        self._ca_cert_path = ca_cert_path
        self._ca_key = ca_key
        self._ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
        self._aki = authority_key_id(ca_cert, ca_key)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._leaf_key_pem = leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self._leaf_public = leaf_key.public_key()
        self._leaf_ski = x509.SubjectKeyIdentifier.from_public_key(self._leaf_public)
        self._leaf_validity = leaf_validity
        self._clock = clock
        self._cache: LRUCache[str, _Leaf] = LRUCache(maxsize=cache_size)
        self._lock = threading.Lock()
        self._tmp_dir = Path(tempfile.mkdtemp(prefix="sigproxy-tls-"))
        self._tmp_dir.chmod(0o700)
        self._state = _State.OPEN

    @classmethod
    def load_or_create(
        cls,
        state_dir: Path,
        *,
        cache_size: int = _DEFAULT_CACHE_SIZE,
        leaf_validity: timedelta = DEFAULT_LEAF_VALIDITY,
        clock: Callable[[], datetime] = _utc_now,
    ) -> CertStore:
        """Load the CA from ``state_dir``, creating the directory (0700) and a new CA if neither file exists.

        Blocking (file I/O, key generation): call it through ``asyncio.to_thread`` from async code.
        Concurrent callers on one directory (threads or processes) agree on one CA: creation holds an
        ``flock`` on ``state_dir/.lock``.

        Args:
            state_dir: holds ``ca-cert.pem`` (0644) and ``ca-key.pem`` (0600).
            cache_size: how many hosts' SSLContexts to keep (LRU).
            leaf_validity: lifetime of minted leaves (after a 1-day backdate); capped by the CA's expiry.
            clock: returns the current time as an aware datetime; tests pass a fake.

        Raises:
            TlsError: only one of the two files exists; the key is readable by group or others; a file does
                not parse; the key does not match the certificate; the certificate is not a CA or has expired.
            OSError: the directory or files cannot be created or read.
        """
        try:
            state_dir.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass  # an existing directory keeps the mode its owner chose
        else:
            state_dir.chmod(0o700)  # mkdir's mode is filtered by the umask
        cert_path, key_path = state_dir / CA_CERT_FILE, state_dir / CA_KEY_FILE
        with _dir_lock(state_dir):
            has_cert, has_key = cert_path.exists(), key_path.exists()
            if has_cert and has_key:
                ca_cert, ca_key = _load_ca(cert_path, key_path, now=clock())
            elif has_cert or has_key:
                present, missing = (cert_path, key_path) if has_cert else (key_path, cert_path)
                raise TlsError(
                    f"{present} exists but {missing} does not: restore {missing.name}, or delete {present} "
                    f"to create a new CA (clients must then trust the new {CA_CERT_FILE})"
                )
            else:
                ca_cert, ca_key = create_ca(now=clock())
                _write_atomic(
                    key_path,
                    ca_key.private_bytes(
                        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                    ),
                    mode=0o600,
                )
                _write_atomic(cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return cls(
            ca_cert=ca_cert,
            ca_key=ca_key,
            ca_cert_path=cert_path,
            cache_size=cache_size,
            leaf_validity=leaf_validity,
            clock=clock,
        )

    @property
    def ca_cert_path(self) -> Path:
        """The CA certificate file clients should trust."""
        return self._ca_cert_path

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate, PEM-encoded."""
        return self._ca_pem

    def context_for(self, host: str, *also: str) -> ssl.SSLContext:
        """A server-side SSLContext presenting a leaf for ``host`` (plus our CA), from the cache or minted now.

        ``also``: more names the leaf carries (a listener's ``localhost`` besides ``127.0.0.1``); SNI may name
        any of them. Blocking on a miss (about 2 ms, half of it OpenSSL parsing the key in ``load_cert_chain``).
        The context is shared by every caller for these names until it is re-minted: do not reconfigure it
        per connection (an ``sni_callback`` set on it applies to all of them).

        Raises:
            TlsError: a name cannot be a certificate name (empty, too long, bad characters or labels,
                ``host:port``), the CA has expired, or the store is closed.
        """
        names = host_names(host, *also)
        key = _cache_key(names)
        leaf = self._fresh(key)
        if leaf is None:
            leaf = self._mint(names)
            with self._lock:
                self._cache[key] = leaf
        return leaf.context

    def cached_context(self, host: str, *also: str) -> ssl.SSLContext | None:
        """The cached context for ``host`` (and ``also``, as :meth:`context_for`) if it is not near expiry, else
        None; never mints (for SNI callbacks and accepts).

        Also None for a host :meth:`context_for` would reject.

        Raises:
            TlsError: the store is closed.
        """
        try:
            names = host_names(host, *also)
        except TlsError:
            self._check_open()
            return None
        leaf = self._fresh(_cache_key(names))
        return None if leaf is None else leaf.context

    async def context_for_async(self, host: str, *also: str) -> ssl.SSLContext:
        """:meth:`context_for` for the event loop: a cache hit returns at once, a miss mints in a thread.

        Cancelling the caller does not stop a mint already running; its result is still cached.

        Raises:
            TlsError: as :meth:`context_for`; a bad host is rejected without a thread.
        """
        names = host_names(host, *also)
        leaf = self._fresh(_cache_key(names))
        if leaf is not None:
            return leaf.context
        return await asyncio.to_thread(self.context_for, *(n.key for n in names))

    def close(self) -> None:
        """Drop cached contexts and remove the private temp directory. Idempotent."""
        with self._lock:
            if self._state is _State.CLOSED:
                return
            self._state = _State.CLOSED
            self._cache.clear()
        shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise TlsError("the certificate store is closed")

    def _fresh(self, key: str) -> _Leaf | None:
        with self._lock:
            self._check_open()
            leaf = self._cache.get(key)
        if leaf is None or leaf.expires_at - self._clock() <= _LEAF_RENEW_BEFORE:
            return None
        return leaf

    def _mint(self, names: list[HostName]) -> _Leaf:
        self._check_open()
        now = self._clock()
        not_before = max(now - _LEAF_BACKDATE, self._ca_cert.not_valid_before_utc)
        not_after = min(now + self._leaf_validity, self._ca_cert.not_valid_after_utc)
        if not_after <= now:
            raise TlsError(
                f"the CA in {self._ca_cert_path} has expired: delete it and {CA_KEY_FILE} beside it to create "
                "a new one (clients must then trust the new certificate)"
            )
        cert = leaf_certificate(
            names, ca_cert=self._ca_cert, ca_key=self._ca_key, public_key=self._leaf_public, ski=self._leaf_ski,
            aki=self._aki, not_before=not_before, not_after=not_after,
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(_ALPN)
        context.sni_callback = _sni_check(frozenset(n.key for n in names))
        chain = self._leaf_key_pem + cert.public_bytes(serialization.Encoding.PEM) + self._ca_pem
        path = self._tmp_dir / f"{secrets.token_hex(8)}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(chain)
            context.load_cert_chain(path)
        finally:
            path.unlink(missing_ok=True)
        return _Leaf(context=context, expires_at=not_after)


def system_ca_file() -> Path | None:
    """The system trust store as one PEM file, or None if none is found.

    In order: OpenSSL's default CA file (``SSL_CERT_FILE`` when set), OpenSSL's compiled-in CA file,
    certifi's bundle if certifi is installed, ``/etc/ssl/certs/ca-certificates.crt``.
    """
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    try:
        import certifi  # noqa: PLC0415 - optional dependency, only a fallback
    except ImportError:
        pass
    else:
        return Path(certifi.where())
    return _FALLBACK_SYSTEM_CA if _FALLBACK_SYSTEM_CA.is_file() else None


def write_bundle(ca_pem: bytes, path: Path) -> bool:
    """Atomically write the system trust store followed by our CA to ``path`` (mode 0644).

    Clients given this file (``AWS_CA_BUNDLE``, ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``) trust both AWS and
    sigproxy. Blocking: call it through ``asyncio.to_thread`` from async code.

    Returns:
        True when the system store was included; False when none was found and the file holds our CA only.

    Raises:
        TlsError: ``ca_pem`` is not a PEM certificate.
        OSError: the system store cannot be read or ``path`` cannot be written (its directory must exist).
    """
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as exc:
        raise TlsError("ca_pem is not a PEM certificate") from exc
    system = system_ca_file()
    parts: list[bytes] = []
    if system is not None:
        data = system.read_bytes()
        parts.append(data if not data or data.endswith(b"\n") else data + b"\n")
    parts.append(f"# sigproxy: {ca.subject.rfc4514_string()}\n".encode())
    parts.append(ca.public_bytes(serialization.Encoding.PEM))
    _write_atomic(path, b"".join(parts), mode=0o644)
    return system is not None


def _cache_key(names: list[HostName]) -> str:
    return " ".join(n.key for n in names)  # a space is in no host name


def _sni_check(expected: frozenset[str]) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]:
    """Refuse a handshake whose SNI names another host than the leaf's (the CONNECT named that host)."""

    def check(_sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if name is not None and name.lower().rstrip(".") not in expected:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None

    return check


def _load_ca(cert_path: Path, key_path: Path, *, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & 0o077:
        raise TlsError(f"{key_path} is readable by group or others (mode {mode:04o}): run `chmod 600 {key_path}`")
    cert = load_ca_cert(cert_path.read_bytes(), cert_path)
    key = load_ca_key(key_path.read_bytes(), key_path)
    check_ca(cert, key, cert_path=cert_path, key_path=key_path, now=now)
    return cert, key


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part or a wider mode."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
