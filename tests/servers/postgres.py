"""A throwaway PostgreSQL cluster (Debian's ``postgresql`` package) for the store's tests.

What this module owns: one ``postgres`` process serving a cluster made by ``initdb`` in a fresh temporary
directory (owned by the ``postgres`` user when we run as root: the server refuses to run as root), listening
on 127.0.0.1 on a free port and on a Unix socket in that directory; the directory itself (removed at stop).
Nothing else is signalled: ``stop()`` ends that one process by PID.

Authentication: ``trust`` for the superuser ``postgres`` (socket and loopback), ``scram-sha-256`` for the
role ``sigproxy`` (random password, CREATEDB), so URLs carry a real password to hide.
:meth:`Postgres.new_database` creates an empty database owned by ``sigproxy`` and returns its URL.
Durability is off (``fsync``, ``synchronous_commit``, ``full_page_writes``): this is test data.

Ports are found by binding 127.0.0.1:0 and closing the socket right before the server starts (a small,
accepted race, as in ``rgw.py``). System packages: ``scripts/sysdeps.sh``.
Manual use: ``python -m tests.servers.postgres`` prints a database URL and serves until interrupted.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROLE = "sigproxy"


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``postgres`` and ``initdb``, or None."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")]
    found = [d for d in found if (d / "initdb").exists()]

    def version(d: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in d.parent.name.split(".") if x.isdigit())

    return max(found, key=version) if found else None


def _free_port() -> int:
    with socket.socket() as s:  # the documented exception to port 0, see the module docstring
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    """A running cluster. ``url``: the ``sigproxy`` role's URL of the database ``postgres`` is not used by
    tests; use :meth:`new_database`."""

    bin_dir: Path
    workdir: Path
    port: int
    password: str
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/postgres"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the socket; returns psql's unaligned, tuples-only output."""
        out = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.workdir),
             "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
            capture_output=True, text=True, timeout=60, check=False)
        if out.returncode:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def new_database(self) -> str:
        """Create an empty database owned by the ``sigproxy`` role; its ``postgresql://`` URL (with password)."""
        name = f"t{os.getpid()}_{next(self._counter)}"
        self.psql(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{name}"


def start_postgres(*, timeout: float = 60) -> tuple[Postgres, Callable[[], None]]:
    """Initialise and start a cluster in a new temporary directory; returns ``(server, stop)``.

    ``stop()`` is idempotent and also runs at interpreter exit. Raises RuntimeError (with the server's log)
    if the binaries are missing or it does not answer in time.
    """
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (/usr/lib/postgresql/*/bin): run scripts/sysdeps.sh")
    as_root = os.geteuid() == 0
    workdir = Path(tempfile.mkdtemp(prefix="sigproxy-pg-"))
    if as_root:
        entry = pwd.getpwnam("postgres")
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    user = {"user": "postgres", "group": "postgres", "extra_groups": []} if as_root else {}
    data, log = workdir / "data", workdir / "postgres.log"
    password = secrets.token_hex(16)
    pwfile = workdir / "pw"
    pwfile.write_text("unused-superuser-password\n")
    if as_root:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
    subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", "--no-locale",
                    "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"],
                   capture_output=True, check=True, timeout=timeout, **user)  # type: ignore[call-overload]
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n")
    port = _free_port()
    log_file = log.open("wb")
    if as_root:
        os.chown(log, pwd.getpwnam("postgres").pw_uid, -1)
    proc = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(workdir),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
        stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **user)  # type: ignore[call-overload]
    log_file.close()

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(2)  # SIGINT: fast shutdown (disconnect clients, no waiting)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        atexit.unregister(stop)

    atexit.register(stop)
    server = Postgres(bin_dir, workdir, port, password)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")
            stop()
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{text}")
        try:
            server.psql("SELECT 1")
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                text = log.read_text(errors="replace")
                stop()
                raise RuntimeError(f"postgres did not answer within {timeout} s:\n{text}") from None
            time.sleep(0.1)
    server.psql(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}'")
    return server, stop


if __name__ == "__main__":
    pg, stop_server = start_postgres()
    try:
        print(pg.new_database(), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop_server()
