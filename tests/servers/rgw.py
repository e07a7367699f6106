"""Ceph RADOS Gateway (Ceph 16.2, Debian ``radosgw``) as a real SigV4 verifier for tests.

What this module owns: one ``ceph-mon``, one ``ceph-osd`` (memstore: objects live in RAM,
capped at 1 GiB) and one ``radosgw`` serving HTTP and HTTPS, all on 127.0.0.1 only; every
file they use (``ceph.conf``, keyring, mon/osd data, logs, TLS CA and certificate) under the
``workdir`` handed to :func:`start_rgw`; and those three processes, which ``stop()`` ends by
PID. Nothing else is ever signalled. It creates one S3 user (fresh random keys per start) and
no bucket. System packages: ``scripts/sysdeps.sh``.

Ports are the one exception to our "listen on port 0" rule: Ceph daemons cannot bind port 0
and report the port back, so a free port is found by binding 127.0.0.1:0, reading the port
and closing the socket right before the daemon that uses it starts (a small, accepted race).
The OSD picks its own ports (6800-7300, first free one).

Manual use: ``python -m tests.servers.rgw`` prints the :class:`RGW` as JSON, runs until
SIGTERM/SIGINT, then stops everything.
"""

from __future__ import annotations

import atexit
import base64
import dataclasses
import datetime
import glob
import ipaddress
import json
import secrets
import shutil
import signal
import socket
import ssl
import string
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "ceph", "monmaptool", "radosgw-admin")
# Speed: with the default paxos intervals every osdmap epoch (one per pool) takes 1 s; and radosgw,
# when started before the OSD is up, only asks for newer osdmaps on its objecter tick (default 5 s).
CEPH_CONF = """[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
run dir = {wd}/run
keyring = {wd}/keyring
log file = {wd}/log/$name.log
admin socket =
pid file =
mon data = {wd}/mon
mon data avail crit = 0
mon allow pool size one = true
mon max pg per osd = 1000
paxos propose interval = 0.01
paxos min wait = 0.001
objecter tick interval = 0.1
osd data = {wd}/osd
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd class dir = {class_dir}
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
"""
CAPS = {
    "mon.": {"mon": "allow *"},
    "client.admin": {"mon": "allow *", "osd": "allow *", "mgr": "allow *", "mds": "allow *"},
    "client.rgw0": {"mon": "allow rw", "osd": "allow rwx"},
    "osd.0": {"mon": "allow profile osd", "mgr": "allow profile osd", "osd": "allow *"},
}


@dataclass(frozen=True)
class RGW:
    endpoint: str  # "http://127.0.0.1:PORT"
    tls_endpoint: str  # "https://127.0.0.1:PORT"
    ca_file: str  # PEM of the CA that signed the HTTPS certificate (IP 127.0.0.1, DNS localhost)
    access_key: str
    secret_key: str
    region: str  # RGW accepts any region in the credential scope


def rgw_available() -> bool:
    """True when every Ceph binary start_rgw needs is on PATH."""
    return all(shutil.which(b) for b in BINARIES) and _class_dir() is not None


def _class_dir() -> str | None:  # shipped by ceph-base, e.g. /usr/lib/x86_64-linux-gnu/rados-classes
    found = glob.glob("/usr/lib*/rados-classes") + glob.glob("/usr/lib/*/rados-classes")
    return found[0] if found else None


def _free_port() -> int:
    with socket.socket() as s:  # the documented exception to port 0, see the module docstring
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cephx_key() -> str:  # CryptoKey: u16 type (1 = AES), u32 sec, u32 nsec, u16 length, secret
    header = struct.pack("<HIIH", 1, int(time.time()), 0, 16)
    return base64.b64encode(header + secrets.token_bytes(16)).decode()


def _random(n: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _write_tls(tls: Path) -> tuple[Path, Path, Path]:
    """Write ca.pem, server.pem and server.key (IP 127.0.0.1, DNS localhost) into tls."""
    tls.mkdir(parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = tls / "ca.pem", tls / "server.pem", tls / "server.key"
    try:
        import trustme
    except ImportError:  # same result with plain `cryptography` (which trustme is built on)
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        now, ca_name = datetime.datetime.now(datetime.UTC), x509.Name.from_rfc4514_string("CN=test CA")
        ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

        def cert(subject: x509.Name, public: ec.EllipticCurvePublicKey, ext: x509.ExtensionType) -> bytes:
            builder = x509.CertificateBuilder(ca_name, subject, public, x509.random_serial_number())
            builder = builder.not_valid_before(now - datetime.timedelta(hours=1))
            builder = builder.not_valid_after(now + datetime.timedelta(days=30))
            builder = builder.add_extension(ext, critical=True)
            return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

        ca_pem.write_bytes(cert(ca_name, ca_key.public_key(), x509.BasicConstraints(ca=True, path_length=0)))
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        cert_pem.write_bytes(cert(x509.Name([]), key.public_key(), x509.SubjectAlternativeName(names)))
        fmt = serialization.PrivateFormat.PKCS8
        key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
        return ca_pem, cert_pem, key_pem
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(ca_pem))
    cert_pem.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_pem))
    return ca_pem, cert_pem, key_pem


def _log_tail(log_dir: Path, lines: int = 20) -> str:
    parts = []
    for f in sorted(log_dir.glob("*")):
        if tail := f.read_text(errors="replace").splitlines()[-lines:]:
            parts.append(f"--- {f.name} ---\n" + "\n".join(tail))
    return "\n".join(parts)


def start_rgw(workdir: Path, *, timeout: float = 60) -> tuple[RGW, Callable[[], None]]:
    """Start mon, osd and radosgw under workdir, create a user (fixed random keys) and return (rgw, stop).

    workdir must be new or empty. stop() is idempotent and also runs at interpreter exit.
    Raises RuntimeError (with the tail of the daemons' logs) when RGW does not answer in time.
    """
    if not rgw_available():
        raise RuntimeError("Ceph binaries missing: run scripts/sysdeps.sh")
    workdir = workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()):
        raise ValueError(f"start_rgw needs a new or empty workdir, not {workdir}")
    log_dir, conf = workdir / "log", str(workdir / "ceph.conf")
    for d in (log_dir, workdir / "run", workdir / "osd"):
        d.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    procs: list[subprocess.Popen[bytes]] = []

    def stop() -> None:
        # One at a time, radosgw then osd then mon: a stopping OSD waits (5 s) for the mon's ack. radosgw is
        # killed: at SIGTERM it waits for its lifecycle threads' 5 s sleep (then our timeout killed it anyway),
        # and the cluster (memstore, a fresh workdir) is thrown away.
        for p in reversed(procs):
            if p.poll() is None and p.args[0] == "radosgw":
                p.kill()
            elif p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        atexit.unregister(stop)

    def fail(why: str) -> RuntimeError:
        logs = _log_tail(log_dir)  # before stop(), whose shutdown chatter would bury the cause
        stop()
        return RuntimeError(f"RGW did not start: {why}\n{logs}")

    def run(*argv: str) -> str:
        cmd, left = [argv[0], "-c", conf, *argv[1:]], max(deadline - time.monotonic(), 1)
        try:
            res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            raise fail(f"{argv[0]} timed out") from None
        if res.returncode:
            raise fail(f"{' '.join(argv)} -> {res.returncode}\n{(res.stdout + res.stderr)[-3000:]}")
        return res.stdout

    def spawn(name: str, *argv: str) -> None:
        with (log_dir / f"{name}.out").open("wb") as out:
            procs.append(subprocess.Popen([*argv, "-f", "-c", conf], stdout=out, stderr=out))

    atexit.register(stop)
    fsid, osd_uuid, mon_port = str(uuid.uuid4()), str(uuid.uuid4()), _free_port()
    values = {"fsid": fsid, "mon_port": mon_port, "wd": workdir, "class_dir": _class_dir()}
    Path(conf).write_text(CEPH_CONF.format(memstore_bytes=1 << 30, **values))
    # All keys go into the mon's initial auth database at mkfs, osd.0's included.
    keyring = "".join(
        f"[{name}]\n\tkey = {_cephx_key()}\n" + "".join(f'\tcaps {k} = "{v}"\n' for k, v in caps.items())
        for name, caps in CAPS.items()
    )
    (workdir / "keyring").write_text(keyring)
    monmap = str(workdir / "monmap")
    run("monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[v2:127.0.0.1:{mon_port}]", monmap)
    run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap)
    spawn("mon", "ceph-mon", "-i", "a")
    if (osd_id := run("ceph", "--connect-timeout", "20", "osd", "new", osd_uuid).strip()) != "0":
        raise fail(f"expected osd id 0, got {osd_id!r}")
    run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
    spawn("osd", "ceph-osd", "-i", "0")

    ca, cert, key = _write_tls(workdir / "tls")
    http_port, https_port = _free_port(), _free_port()
    frontends = f"beast endpoint=127.0.0.1:{http_port} ssl_endpoint=127.0.0.1:{https_port}"
    frontends += f" ssl_certificate={cert} ssl_private_key={key}"
    rgw_data = str(workdir / "rgw")
    spawn("rgw", "radosgw", "-n", "client.rgw0", "--rgw-frontends", frontends, "--rgw-data", rgw_data)
    rgw = RGW(
        endpoint=f"http://127.0.0.1:{http_port}",
        tls_endpoint=f"https://127.0.0.1:{https_port}",
        ca_file=str(ca),
        access_key=_random(20, string.ascii_uppercase + string.digits),
        secret_key=_random(40, string.ascii_letters + string.digits),
        region="us-east-1",
    )
    tls = urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(ca)))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), tls)  # ignore *_proxy
    pending = [rgw.endpoint, rgw.tls_endpoint]
    while pending:  # RGW answers once its pools exist; HTTPS also proves the certificate
        if any(p.poll() is not None for p in procs):
            raise fail("a daemon exited")
        if time.monotonic() > deadline:
            raise fail(f"no HTTP answer from {pending[0]} within {timeout}s")
        try:
            opener.open(pending[0], timeout=2).close()
        except urllib.error.HTTPError:
            pass  # any HTTP status means it answers
        except OSError:  # includes ssl.SSLError and URLError
            time.sleep(0.1)
            continue
        pending.pop(0)
    keys = (f"--access-key={rgw.access_key}", f"--secret-key={rgw.secret_key}")
    run("radosgw-admin", "user", "create", "--uid=sigproxy", "--display-name=sigproxy", *keys)
    return rgw, stop


if __name__ == "__main__":
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))  # unwinds through stop_server() and atexit
    with tempfile.TemporaryDirectory(prefix="rgw-") as tmp:
        started = time.monotonic()
        server, stop_server = start_rgw(Path(tmp))
        print(json.dumps(dataclasses.asdict(server), indent=2), flush=True)
        print(f"started in {time.monotonic() - started:.1f}s; logs in {tmp}/log", file=sys.stderr)
        try:
            signal.pause()
        finally:
            stop_server()
