"""The quick start without an AWS account: the start-up notice of missing credentials, and ``make demo``
(``scripts/demo.py``) run for real and driven with the lines it prints, through the AWS CLI v1."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, Proxy

NOTICE = "no credentials at start-up"
CONFIG = """
[proxy]
default_connection = "main"

[connections.main]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
[connections.main.credentials]
source = "chain"

[connections.other]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
[connections.other.credentials]
source = "chain"
profile = "nowhere"

[connections.static]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
[connections.static.credentials]
source = "static"
access_key_id = "AKIDSTATIC"
secret_access_key = "static-secret-not-shown"
"""


def _empty_aws_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "AWS_CONFIG_FILE": str(home / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"), "AWS_EC2_METADATA_DISABLED": "true"}


class TestStartupNotice:
    def test_warns_once_per_chain_after_listening(self, sigproxy_factory: Callable[..., Proxy],
                                                  tmp_path: Path) -> None:
        """With no AWS credentials anywhere, each chain-backed connection gets one warning saying what to do,
        after the listener line; a request that then fails adds none; the static one gets none."""
        proxy = sigproxy_factory(CONFIG, env=_empty_aws_env(tmp_path), log_level="info")
        out = proxy.written("profile 'nowhere'")
        out = proxy.written("connection 'main': " + NOTICE)
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x", proxy.url,
                            "-H", "X-Sigproxy-Service: sts", "http://127.0.0.1:9/"],
                           capture_output=True, text=True, timeout=30, check=False)
        assert r.stdout == "403", r  # no credentials at all: a retry can't fix it (README "Errors")
        out = proxy.written("credentials_unavailable")
        notices = [line for line in out.splitlines() if NOTICE in line]
        assert len(notices) == 2, notices
        main = next(n for n in notices if "'main'" in n)
        assert "the default AWS chain" in main and "AWS_PROFILE" in main and "make demo" in main
        other = next(n for n in notices if "'other'" in n)
        assert "ProfileNotFound" in other and "'main'" not in other
        assert out.index("forward proxy listening on") < out.index(NOTICE)
        assert not any("'static'" in n for n in notices)
        assert "static-secret-not-shown" not in out

    def test_silent_when_the_chain_finds_keys(self, sigproxy_factory: Callable[..., Proxy],
                                              tmp_path: Path) -> None:
        """Keys in the environment: no notice, even after the probe had time to run (a request was served)."""
        env = {**_empty_aws_env(tmp_path), "AWS_ACCESS_KEY_ID": "AKIDCHAIN", "AWS_SECRET_ACCESS_KEY": "chain-secret"}
        config = CONFIG.split("[connections.other]", maxsplit=1)[0]
        proxy = sigproxy_factory(config, env=env, log_level="info")
        subprocess.run(["curl", "-sS", "-o", "/dev/null", "-x", proxy.url, "-H", "X-Sigproxy-Service: sts",
                        "http://127.0.0.1:9/"], capture_output=True, timeout=30, check=False)
        out = proxy.written("sigproxy.access")
        assert NOTICE not in out
        assert "chain-secret" not in out


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in found.split()]


def _gone(pid: int, timeout: float = 10) -> bool:
    """True once ``pid`` is no process (or a zombie nobody waits for any more)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


class TestDemo:
    def test_printed_lines_work_and_sigterm_stops_everything(self, aws_cli: str, tmp_path: Path) -> None:
        """`make demo`'s command: ready within a minute; its three lines, pasted into bash with the AWS CLI,
        make and list a bucket and show moto's IAM user as the caller; SIGTERM stops it, moto and sigproxy,
        exit 0, temporary folder gone."""
        started = time.monotonic()
        demo = subprocess.Popen([sys.executable, "scripts/demo.py"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[str | None] = queue.Queue()
        stderr: list[str] = []

        def pump() -> None:
            assert demo.stdout is not None
            for line in demo.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        threading.Thread(target=lambda: stderr.extend(demo.stderr or []), daemon=True).start()
        try:
            printed: list[str] = []
            while not any("Ctrl-C" in line for line in printed):
                line = lines.get(timeout=60)
                assert line is not None, "".join(printed) + "".join(stderr)
                printed.append(line)
            ready = time.monotonic() - started
            assert ready < 60
            paste = [line.strip() for line in printed if line.startswith("  ")]
            assert len(paste) == 3, printed
            assert paste[0].startswith("unset ") and "AWS_ACCESS_KEY_ID=demo" in paste[0]
            assert "s3 mb s3://sigproxy-demo" in paste[1] and "sts get-caller-identity" in paste[2]
            children = _children(demo.pid)
            cmdlines = [Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0") for c in children]
            assert sorted(b"sigproxy" in c and b"run" in c for c in cmdlines) == [False, True], cmdlines
            config = next(Path(c[c.index(b"-c") + 1].decode()) for c in cmdlines if b"-c" in c)
            assert config.exists()
            assert "secret_access_key = \"${file:" in config.read_text()

            env = {"PATH": f"{Path(aws_cli).parent}:{os.environ['PATH']}", "HOME": str(tmp_path),
                   "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                   "AWS_EC2_METADATA_DISABLED": "true", "AWS_PROFILE": "not-used-after-unset",
                   "NO_PROXY": "127.0.0.1"}
            r = subprocess.run(["bash", "-ec", "\n".join(paste)], capture_output=True, text=True, env=env,
                               timeout=120, check=False)
            assert r.returncode == 0, r
            assert "make_bucket: sigproxy-demo" in r.stdout and re.search(r"\d sigproxy-demo\n", r.stdout), r
            assert '"Arn": "arn:aws:iam::123456789012:user/sigproxy"' in r.stdout, r
        finally:
            demo.send_signal(signal.SIGTERM)
            code = demo.wait(60)
        assert code == 0, "".join(stderr)
        assert all(_gone(c) for c in children), children
        assert not config.parent.exists()
        assert "demo stopped" in "".join(stderr)
