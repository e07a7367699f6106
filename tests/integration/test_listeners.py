"""Listeners of the real ``sigproxy run`` process: ``admin_listen = ""`` in the file turns the admin listener
off, and a listener that can't bind says which one it is and which key moves it (issue 12, part 5)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Proxy

CONN = """
[connections.main]
hosts = ["127.0.0.1:*"]
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "not-a-real-secret"
"""


def launch(tmp_path: Path, text: str, *args: str) -> subprocess.Popen[str]:
    path = tmp_path / f"sigproxy-{len(list(tmp_path.glob('sigproxy-*.toml')))}.toml"
    path.write_text(text)
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")}
    return subprocess.Popen([sys.executable, "-m", "sigproxy", "run", "-c", str(path), "--log-format", "json",
                             "--workers", "1", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)


def started_lines(proc: subprocess.Popen[str]) -> list[str]:
    """Wait for the forward listener's line, stop the process, and return every listener line it printed
    (they are printed together, before anything else the process does)."""
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert "forward proxy listening on" in first, (first, proc.stderr.read() if proc.stderr else "")
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    return [line for line in [first, *rest.splitlines()] if "listening on" in line]


def failed(proc: subprocess.Popen[str]) -> str:
    """The stderr of a process expected to exit 2 without serving."""
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("sigproxy started although its address was taken") from None
    assert proc.returncode == 2, (out, err)
    assert "listening on" not in out
    return err


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port held open (listening) by the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_admin_listen_empty_in_file_turns_it_off(tmp_path: Path) -> None:
    """`admin_listen = ""` in the config file: no admin listener, so two instances on one host both start
    (before the fix the default 127.0.0.1:9901 came back and the second failed with "address in use")."""
    text = '[proxy]\nlisten = "127.0.0.1:0"\nadmin_listen = ""\n' + CONN
    first, second = launch(tmp_path, text), launch(tmp_path, text)
    for proc in (first, second):
        lines = started_lines(proc)
        assert len(lines) == 1, lines
        assert proc.returncode == 0


REVERSE = '[[reverse]]\nlisten = "127.0.0.1:{port}"\nupstream = "http://127.0.0.1:9"\nconnection = "main"\n'


@pytest.mark.parametrize(
    ("place", "listener", "key"),
    [
        ("forward", "for the forward proxy", "change [proxy] listen (or --listen)"),
        ("reverse", "for the reverse listener for http://127.0.0.1:9", "change [[reverse]] listen (reverse[1].listen)"),
        ("admin", "for the admin listener",
         'change [proxy] admin_listen (or --admin-listen), or set it to "" to turn the admin listener off'),
    ],
)
def test_bind_error_names_listener_and_key(tmp_path: Path, held_port: int, place: str, listener: str,
                                           key: str) -> None:
    """A port held open by the test: `sigproxy run` exits 2 naming the listener, its address and the key that
    moves it; nothing is left listening."""
    listen = held_port if place == "forward" else 0
    admin = held_port if place == "admin" else 0
    reverse = REVERSE.format(port=0) + REVERSE.format(port=held_port if place == "reverse" else 0)
    text = f'[proxy]\nlisten = "127.0.0.1:{listen}"\nadmin_listen = "127.0.0.1:{admin}"\n' + CONN + reverse
    err = failed(launch(tmp_path, text))
    assert f"cannot listen on 127.0.0.1:{held_port} {listener}: Address already in use" in err
    assert key in err
    assert "perhaps another sigproxy" in err


def test_second_instance_names_the_admin_listener(tmp_path: Path,
                                                  sigproxy_factory: Callable[..., Proxy]) -> None:
    """The reported case with a real second process: it takes its own forward port but the first one's admin
    address, and says the admin listener is the problem (and how to turn it off)."""
    first = sigproxy_factory(CONN, admin=True)
    assert first.admin is not None
    admin = first.admin.removeprefix("http://")
    err = failed(launch(tmp_path, f'[proxy]\nlisten = "127.0.0.1:0"\nadmin_listen = "{admin}"\n' + CONN))
    assert f"cannot listen on {admin} for the admin listener: Address already in use" in err
    assert 'set it to "" to turn the admin listener off' in err
    err = failed(launch(tmp_path, CONN, "--listen", first.address, "--admin-listen", "127.0.0.1:0"))
    assert f"cannot listen on {first.address} for the forward proxy" in err
    assert first.proc.poll() is None
