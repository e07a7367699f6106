"""``make demo``: sigproxy re-signing the AWS CLI's placeholder keys, with no AWS account.

Starts a local AWS emulator that checks signatures (moto's server with IAM authentication on, seeded with an
IAM user and its access key: ``tests/servers/moto_server.py``, the server the tests use), writes a sigproxy
config whose connection ``demo`` holds that user's keys (as ``${file:...}`` references: no key in the config)
and may sign only for the emulator, starts ``sigproxy run`` with it, and once both answer prints the three
lines to paste into another terminal: S3 over HTTP, and STS over HTTPS through a CONNECT tunnel that
sigproxy intercepts with its own CA (the first line points the AWS CLI at a trust bundle holding it). Runs
until Ctrl-C or SIGTERM, then stops sigproxy and the emulator and removes its temporary folder (config, keys,
sigproxy's state). Exit code 0 after a clean stop, 1 when something did not start (its output is printed).

Needs the ``demo`` extra (``pip install -e '.[demo]'``; ``make demo`` installs it) and runs from a checkout.
Run as ``python scripts/demo.py [--listen HOST:PORT]`` (default ``127.0.0.1:0``: any free port, printed).
"""

from __future__ import annotations

import argparse
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the emulator lives with the tests: one way to run moto for both

from tests.servers.moto_server import start_moto  # noqa: E402

CONNECTION = "demo"  # also the AWS_ACCESS_KEY_ID that selects it
BUCKET = "sigproxy-demo"
READY_TIMEOUT = 30.0  # seconds for sigproxy to print its listener line


class Stop(Exception):
    """SIGTERM or SIGINT arrived: stop everything and exit 0."""


def _config(workdir: Path, listen: str, *, moto_endpoint: str, moto_tls_endpoint: str, moto_ca_file: str,
            region: str) -> str:
    """The demo's sigproxy config (TOML): one connection, keys by ``${file:...}``, state under ``workdir``; the
    emulator over HTTP and over HTTPS (CONNECT to its TLS port is intercepted with sigproxy's CA; its own
    certificate is checked against its CA, ``upstream_ca_file``)."""
    moto_host = moto_endpoint.removeprefix("http://")
    moto_tls_host = moto_tls_endpoint.removeprefix("https://")
    return f"""\
# Written by scripts/demo.py; removed when the demo stops.
[proxy]
listen = "{listen}"
admin_listen = ""
default_connection = "{CONNECTION}"
state_dir = "{workdir / "state"}"
workers = 1
connect_ports = [{moto_tls_host.rsplit(":", 1)[1]}]
upstream_ca_file = "{moto_ca_file}"

[connections.{CONNECTION}]
region = "{region}"
hosts = ["{moto_host}", "{moto_tls_host}"]           # the emulator only
[connections.{CONNECTION}.credentials]
source = "static"
access_key_id = "${{file:{workdir / "access_key_id"}}}"
secret_access_key = "${{file:{workdir / "secret_access_key"}}}"
"""


def paste_lines(proxy_url: str, moto_endpoint: str, moto_tls_endpoint: str, ca_bundle: str,
                region: str) -> list[str]:
    """The three shell lines a user pastes: the environment (placeholder keys; the proxy for HTTP and HTTPS,
    and a trust bundle holding sigproxy's CA), S3 make-bucket and list over HTTP, STS over HTTPS (through a
    CONNECT tunnel that sigproxy intercepts, as it does for AWS itself)."""
    env = {"HTTP_PROXY": proxy_url, "HTTPS_PROXY": proxy_url, "AWS_CA_BUNDLE": ca_bundle,
           "AWS_ACCESS_KEY_ID": CONNECTION, "AWS_SECRET_ACCESS_KEY": "placeholder", "AWS_DEFAULT_REGION": region}
    aws = f"aws --endpoint-url {moto_endpoint}"
    return [
        # A profile would take precedence over the keys, and NO_PROXY could skip the proxy for 127.0.0.1.
        "unset AWS_PROFILE AWS_SESSION_TOKEN NO_PROXY no_proxy; export "
        + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()),
        f"{aws} s3 mb s3://{BUCKET} && {aws} s3 ls",
        f"aws --endpoint-url {moto_tls_endpoint} sts get-caller-identity",
    ]


def _start_sigproxy(config: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """Start ``sigproxy run``; return the process and its forward listener's URL. Its log goes to our stderr."""
    proc = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
        [sys.executable, "-m", "sigproxy", "run", "-c", str(config), "--log-format", "text"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # the listener line, then anything else it prints, passed on
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            raise RuntimeError("sigproxy did not start (its log is above)")
        if "forward proxy listening on " in line:
            return proc, line.split("listening on ", 1)[1].split()[0]


def _stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(30)  # drains requests in flight first
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                        help="sigproxy's address (default: any free port on 127.0.0.1)")
    args = parser.parse_args(argv)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="sigproxy-demo-"))
    stop_moto = None
    proxy: subprocess.Popen[str] | None = None
    try:
        print("starting a local AWS emulator (moto, signature checks on) ...", file=sys.stderr, flush=True)
        moto, stop_moto = start_moto(workdir / "moto", tls=True)
        assert moto.tls_endpoint is not None
        assert moto.ca_file is not None
        for name, value in (("access_key_id", moto.access_key), ("secret_access_key", moto.secret_key)):
            path = workdir / name
            path.touch(mode=0o600)
            path.write_text(value)
        config = workdir / "sigproxy.toml"
        config.write_text(_config(workdir, args.listen, moto_endpoint=moto.endpoint,
                                  moto_tls_endpoint=moto.tls_endpoint, moto_ca_file=moto.ca_file, region=moto.region))
        # sigproxy signs with the demo keys only: nothing of the caller's AWS set-up reaches it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "SIGPROXY_CONFIG"}
        proxy, url = _start_sigproxy(config, {**env, "AWS_EC2_METADATA_DISABLED": "true"})
        bundle = workdir / "ca-bundle.pem"  # the system's trust store plus sigproxy's CA, for the AWS CLI
        subprocess.run([sys.executable, "-m", "sigproxy", "ca", "-c", str(config), "--bundle", str(bundle)],  # noqa: S603
                       check=True, capture_output=True, env=env, cwd=REPO_ROOT)
        lines = paste_lines(url, moto.endpoint, moto.tls_endpoint, str(bundle), moto.region)
        print(f"\nsigproxy {url} signs for the emulator {moto.endpoint} as IAM user {moto.user_arn}"
              f" (ready in {time.monotonic() - started:.1f} s).\n"
              "In another terminal, paste (the AWS CLI's placeholder keys are re-signed with that user's):\n",
              flush=True)
        for line in lines:
            print(f"  {line}", flush=True)
        print(f"\nIts config (removed when the demo stops): {config}\nCtrl-C stops the demo.", flush=True)
        code = proxy.wait()
        print(f"sigproxy exited with code {code}", file=sys.stderr)
        return 1
    except Stop:
        return 0
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not interrupt the clean-up
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop(proxy)
        if stop_moto is not None:
            stop_moto()
        shutil.rmtree(workdir, ignore_errors=True)
        print("demo stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
