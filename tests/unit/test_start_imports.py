"""What a start imports: the heavy libraries only for the features that use them (a start's time is mostly
imports). Each case runs the real ``sigproxy`` command with ``-X importtime``, whose report names every module
the process imported (its timings are not looked at).

- No store (``[store] url = ""``), no admin listener: neither SQLAlchemy, Alembic nor aiohttp.
- The default SQLite store and the admin listener: Alembic only while the schema is migrated (the first start).
- ``sigproxy version`` (and so every command's common path): none of them, nor the AWS SDK or urllib's client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HEAVY = ("sqlalchemy", "alembic", "mako", "aiohttp", "aiohttp_jinja2", "jinja2", "botocore", "aiobotocore",
         "urllib.request")
CONFIG = """
[proxy]
listen = "127.0.0.1:0"
admin_listen = "{admin}"
workers = 1

[connections.main]
hosts = ["127.0.0.1:*"]
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "not-a-real-secret"
{store}
"""


def _imported(report: str) -> set[str]:
    """The modules named in a ``-X importtime`` report (``import time: self | cumulative | name``)."""
    return {line.rsplit("|", 1)[1].strip() for line in report.splitlines() if line.startswith("import time:")}


def _heavy(report: str) -> list[str]:
    imported = _imported(report)
    if "aiohttp" in imported:
        imported.discard("urllib.request")  # aiohttp's own (aiohttp.helpers)
    return sorted(set(HEAVY) & imported)


def _start(tmp_path: Path, *, admin: bool, store: bool) -> str:
    """Start ``sigproxy run``, stop it once every listener is up, and return its ``-X importtime`` report."""
    path = tmp_path / "sigproxy.toml"
    path.write_text(CONFIG.format(admin="127.0.0.1:0" if admin else "", store="" if store else '[store]\nurl = ""'))
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "sigproxy", "run", "-c", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(2 if admin else 1)]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert all("listening on" in line for line in lines), (lines, err[-2000:])
    return err


def test_no_store_no_admin_listener(tmp_path: Path) -> None:
    assert _heavy(_start(tmp_path, admin=False, store=False)) == []


def test_store_and_admin_listener(tmp_path: Path) -> None:
    first = _start(tmp_path, admin=True, store=True)
    assert _heavy(first) == ["aiohttp", "aiohttp_jinja2", "alembic", "jinja2", "mako", "sqlalchemy"]
    again = _start(tmp_path, admin=True, store=True)  # the schema is current now: nothing to migrate
    assert _heavy(again) == ["aiohttp", "aiohttp_jinja2", "jinja2", "sqlalchemy"]


def test_version() -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "sigproxy", "version"], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    assert done.stdout.startswith("sigproxy ")
    assert _heavy(done.stderr) == []
