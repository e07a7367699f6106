"""`sigproxy store migrate | rotate-keys | new-key | status` as an operator runs them, on a SQLite file and on
PostgreSQL, and `[store] migrate = false` refusing an old schema until `store migrate` has run."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sigproxy.connection import SECRET_PATHS
from sigproxy.store import Keyring, Store, generate_key

ROOT = Path(__file__).resolve().parents[2]
SECRET = "rotate-me-secret-0123456789"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "sigproxy", *args], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env={**os.environ, "HOME": os.environ.get("HOME", "/root")}, check=False)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def config(tmp_path: Path, url: str, keys: list[str], extra: str = "") -> Path:
    path = tmp_path / f"c{len(list(tmp_path.glob('c*.toml')))}.toml"
    listed = ", ".join(f'"{k}"' for k in keys)
    path.write_text(f'[proxy]\nstate_dir = "{tmp_path / "state"}"\n[store]\nurl = "{url}"\n'
                    f"encryption_keys = [{listed}]\n{extra}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres").new_database())


def test_new_key() -> None:
    key = run("store", "new-key").stdout.strip()
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert run("store", "new-key").stdout.strip() != key


def test_migrate_then_status(tmp_path: Path, url: str) -> None:
    cfg = config(tmp_path, url, [generate_key()], "migrate = false\n")
    status = run("store", "status", "-c", str(cfg)).stdout
    assert "schema: empty" in status and "sigproxy store migrate" in status
    # The proxy itself refuses the old schema when it may not migrate, and says what to run.
    refused = run("run", "-c", str(cfg), "--listen", "127.0.0.1:0", "--admin-listen", "", check=False)
    assert refused.returncode == 2 and "sigproxy store migrate" in refused.stderr
    first = run("store", "migrate", "-c", str(cfg)).stdout
    assert "schema empty -> 0003" in first
    assert "already at 0003" in run("store", "migrate", "-c", str(cfg)).stdout
    status = run("store", "status", "-c", str(cfg)).stdout
    assert "schema: 0003" in status and "revision: 0" in status and "connections: 0" in status
    if "@" in url:  # the password never shows
        password = url.split("@", maxsplit=1)[0].rsplit(":", 1)[1]
        assert password not in first + status


def test_rotate_keys(tmp_path: Path, url: str) -> None:
    old, new = generate_key(), generate_key()

    async def put() -> None:
        store = await Store.open(url, Keyring.from_strings([old]), secret_paths=SECRET_PATHS)
        await store.create("acme", "active", {"hosts": ["*.amazonaws.com"], "credentials": {
            "source": "static", "access_key_id": "AKID", "secret_access_key": SECRET}}, actor="test")
        await store.close()

    async def read(keys: list[str]) -> Any:
        store = await Store.open(url, Keyring.from_strings(keys), secret_paths=SECRET_PATHS, migrate=False)
        try:
            return await store.get("acme")
        finally:
            await store.close()

    asyncio.run(put())
    out = run("store", "rotate-keys", "-c", str(config(tmp_path, url, [new, old]))).stdout
    assert "re-encrypted 1 connection(s)" in out and SECRET not in out
    row = asyncio.run(read([new]))  # the old key is no longer needed
    assert row.table["credentials"]["secret_access_key"] == SECRET
    again = run("store", "rotate-keys", "-c", str(config(tmp_path, url, [new]))).stdout
    assert "re-encrypted 0 connection(s)" in again


def test_store_off_and_unreachable(tmp_path: Path) -> None:
    off = tmp_path / "off.toml"
    off.write_text('[store]\nurl = ""\n[connections.a]\nhosts = ["*.amazonaws.com"]\n[connections.a.credentials]\n'
                   'source = "static"\naccess_key_id = "A"\nsecret_access_key = "s"\n')
    out = run("store", "migrate", "-c", str(off), check=False)
    assert out.returncode == 2 and "the store is off" in out.stderr
    down = config(tmp_path, "postgresql://sigproxy:pw-not-shown-123@127.0.0.1:1/db", [generate_key()])
    out = run("store", "status", "-c", str(down), check=False)
    assert out.returncode == 1 and "127.0.0.1:1" in out.stderr and "pw-not-shown-123" not in out.stderr
