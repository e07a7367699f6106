"""sigproxy.sdnotify: real AF_UNIX datagram sockets (a path and an abstract name) receive exactly the sd_notify
messages; the watchdog environment is honoured only for this process; nothing raises without systemd. Last, the
real ``sigproxy run`` process on such a socket: READY=1, WATCHDOG=1, RELOADING=1 then READY=1 on SIGHUP, and
STOPPING=1 on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sigproxy.sdnotify import Notifier
from tests.conftest import Proxy


class Listener:
    """A notify socket like systemd's: an AF_UNIX datagram socket that collects what is sent to it."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def recv(self, timeout: float = 2.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        return False

    async def recv_async(self) -> str:
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        data = await loop.sock_recv(self.sock, 4096)
        return data.decode()


@pytest.fixture
def path_listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield Listener(sock, str(path))


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"sigproxy-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        yield Listener(sock, "@" + name)


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Listener:
    fixture: Listener = request.getfixturevalue(f"{request.param}_listener")
    return fixture


def test_messages_are_exact(listener: Listener) -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": listener.env_value}) as notifier:
        assert notifier.enabled
        notifier.ready("listening on http://127.0.0.1:8080")
        assert listener.recv() == "READY=1\nSTATUS=listening on http://127.0.0.1:8080"
        notifier.watchdog()
        assert listener.recv() == "WATCHDOG=1"
        notifier.stopping()
        assert listener.recv() == "STOPPING=1"
        notifier.stopping("draining 3 requests")
        assert listener.recv() == "STOPPING=1\nSTATUS=draining 3 requests"
        notifier.notify("STATUS=a", "EXTEND_TIMEOUT_USEC=5000000")
        assert listener.recv() == "STATUS=a\nEXTEND_TIMEOUT_USEC=5000000"
    assert listener.nothing_pending()


def test_reloading_carries_the_monotonic_clock(path_listener: Listener) -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": path_listener.env_value}) as notifier:
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", path_listener.recv())
        assert match, "RELOADING=1 then MONOTONIC_USEC, nothing else"
        assert before <= int(match.group(1)) <= after
        notifier.reloading("reloading config")
        assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+\nSTATUS=reloading config", path_listener.recv())


def test_a_newline_cannot_smuggle_in_another_assignment(path_listener: Listener) -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": path_listener.env_value}) as notifier:
        notifier.ready("bad config\nSTOPPING=1")
        assert path_listener.recv() == "READY=1\nSTATUS=bad config STOPPING=1"


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "100000"}, 0.05),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "<self>"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "<other>"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({}, None),
    ],
)
def test_watchdog_environment(path_listener: Listener, env: dict[str, str], interval: float | None) -> None:
    env = {k: {"<self>": str(os.getpid()), "<other>": str(os.getpid() + 1)}.get(v, v) for k, v in env.items()}
    with Notifier.from_environ({"NOTIFY_SOCKET": path_listener.env_value, **env}) as notifier:
        assert notifier.enabled
        assert notifier.watchdog_interval == interval


def test_watchdog_needs_a_notify_socket() -> None:
    with Notifier.from_environ({"WATCHDOG_USEC": "30000000"}) as notifier:
        assert not notifier.enabled
        assert notifier.watchdog_interval is None


@pytest.mark.parametrize("value", [None, "", "relative/notify.sock", "vsock:2:1234"])
def test_no_usable_notify_socket_means_disabled(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    with Notifier.from_environ(env) as notifier:
        assert not notifier.enabled
        notifier.ready("up")
        notifier.reloading()
        notifier.watchdog()
        notifier.stopping()


def test_from_environ_reads_os_environ_by_default(path_listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_listener.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with Notifier.from_environ() as notifier:
        assert notifier.watchdog_interval == 1.0
        notifier.ready("up")
        assert path_listener.recv() == "READY=1\nSTATUS=up"


@pytest.mark.parametrize("where", ["missing-dir/notify.sock", "absent.sock", "@"])
def test_a_socket_nobody_listens_on_does_not_raise(tmp_path: Path, where: str) -> None:
    value = "@sigproxy-nobody-" + uuid.uuid4().hex if where == "@" else str(tmp_path / where)
    with Notifier.from_environ({"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "1000000"}) as notifier:
        assert notifier.enabled
        notifier.ready("up")
        notifier.watchdog()
        notifier.reloading()
        notifier.stopping()


def test_a_path_too_long_for_af_unix_does_not_raise(tmp_path: Path) -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / ("x" * 200))}) as notifier:
        notifier.ready("up")


def test_close_disables(path_listener: Listener) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path_listener.env_value, "WATCHDOG_USEC": "1000000"})
    notifier.close()
    notifier.close()
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.ready("up")
    assert path_listener.nothing_pending()


async def test_run_watchdog_pings_at_the_interval(path_listener: Listener) -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": path_listener.env_value, "WATCHDOG_USEC": "100000"}) as notifier:
        assert notifier.watchdog_interval == 0.05
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            pinger = tg.create_task(notifier.run_watchdog())
            async with asyncio.timeout(5):
                assert await path_listener.recv_async() == "WATCHDOG=1"
                first = loop.time()
                assert await path_listener.recv_async() == "WATCHDOG=1"
                second = loop.time()
            pinger.cancel()
        # Pings are spaced by the interval, not sent in a burst (loose bound: a loaded CI box is slow, not fast).
        assert second - first >= 0.04


async def test_run_watchdog_stops_when_the_loop_is_blocked(path_listener: Listener) -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": path_listener.env_value, "WATCHDOG_USEC": "20000"}) as notifier:
        async with asyncio.TaskGroup() as tg:
            pinger = tg.create_task(notifier.run_watchdog())
            async with asyncio.timeout(5):
                assert await path_listener.recv_async() == "WATCHDOG=1"
            while not path_listener.nothing_pending():
                pass  # drain: from here on the loop is blocked until the assertion
            time.sleep(0.2)  # noqa: ASYNC251 - deliberately block the loop: ~20 intervals pass
            assert path_listener.nothing_pending(), "pings must come from the event loop, not from a thread"
            pinger.cancel()


@pytest.mark.parametrize("env", [{}, {"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "<other>"}, {"WATCHDOG_USEC": "0"}])
async def test_run_watchdog_returns_at_once_without_a_watchdog(path_listener: Listener, env: dict[str, str]) -> None:
    env = {k: str(os.getpid() + 1) if v == "<other>" else v for k, v in env.items()}
    with Notifier.from_environ({"NOTIFY_SOCKET": path_listener.env_value, **env}) as notifier:
        async with asyncio.timeout(1):
            await notifier.run_watchdog()
    with Notifier.from_environ({"WATCHDOG_USEC": "100000"}) as disabled:
        async with asyncio.timeout(1):
            await disabled.run_watchdog()
    assert path_listener.nothing_pending()


# --- The real process -------------------------------------------------------------------------------------------

STATIC_CONFIG = """
[connections.main]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "${env:SDNOTIFY_TEST_SECRET}"
"""


def next_message(listener: Listener, wanted: Callable[[str], bool], timeout: float = 20) -> str:
    """The next datagram ``wanted`` accepts, skipping watchdog pings; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no matching sd_notify message in time")
        try:
            message = listener.recv(left)
        except TimeoutError:
            continue
        if wanted(message):
            return message
        assert message == "WATCHDOG=1", f"unexpected sd_notify message {message!r}"


def test_the_real_process_notifies(path_listener: Listener, sigproxy_factory: Callable[..., Proxy]) -> None:
    env = {"NOTIFY_SOCKET": path_listener.env_value, "WATCHDOG_USEC": "200000",
           "SDNOTIFY_TEST_SECRET": "not-a-real-secret"}
    proxy = sigproxy_factory(STATIC_CONFIG, env=env)  # returns once every listener is bound

    ready = next_message(path_listener, lambda m: m.startswith("READY=1"), timeout=5)
    assert re.fullmatch(r"READY=1\nSTATUS=[^\n]+", ready)
    assert next_message(path_listener, lambda m: True, timeout=5) == "WATCHDOG=1"
    assert next_message(path_listener, lambda m: True, timeout=5) == "WATCHDOG=1"

    proxy.proc.send_signal(signal.SIGHUP)
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", next_message(path_listener, lambda m: m != "WATCHDOG=1"))
    assert next_message(path_listener, lambda m: m != "WATCHDOG=1").startswith("READY=1\nSTATUS=")

    proxy.proc.send_signal(signal.SIGTERM)
    assert next_message(path_listener, lambda m: m != "WATCHDOG=1") == "STOPPING=1"
    assert proxy.proc.wait(30) == 0
