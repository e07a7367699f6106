"""What a new user hits first (issue 16): commands that need no secret run without them, ``sign`` takes the
proxy's ``X-Sigproxy-Service``/``-Region`` headers, ``check`` fails fast saying what it tried, an open listener
is warned about, and what is not HTTP/1.1 (HTTP/2, TLS to the plain port) is named -- with real processes, moto
checking signatures, and curl."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, Proxy, moto_config
from tests.errorbody import error_body
from tests.servers.moto_server import Moto

UNSET = "SIGPROXY_TEST_NEVER_SET"


def sigproxy(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sigproxy", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, check=False, env=env)


def client_env(tmp_path: Path) -> dict[str, str]:
    """A client's shell: none of the proxy host's secrets, its own state directory."""
    env = {k: v for k, v in os.environ.items() if k != UNSET and not k.startswith("SIGPROXY_")}
    return {**env, "STATE_DIRECTORY": str(tmp_path / "state")}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVER_ONLY = f"""
[proxy]
listen = "127.0.0.1:18080"

[connections.main]
region = "us-east-1"
hosts = ["*.amazonaws.com"]
token = "${{file:/nonexistent/sigproxy-token}}"
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "${{env:{UNSET}}}"
"""


@pytest.mark.parametrize("args", [
    ("ca",), ("ca", "--pem"), ("ca", "--env"), ("ca", "--bundle", "BUNDLE"), ("external-id",),
    ("trust-policy", "--principal", "111122223333", "--external-id", "ext-123"), ("version",),
])
def test_commands_that_do_not_sign_need_no_secret(tmp_path: Path, args: tuple[str, ...]) -> None:
    """In a client's shell the server's ${env:...}/${file:...} secrets are unresolvable: ca and the others
    still work, reading only what they need ([proxy])."""
    config = tmp_path / "sigproxy.toml"
    config.write_text(SERVER_ONLY)
    argv = [a.replace("BUNDLE", str(tmp_path / "bundle.pem")) for a in args]
    with_config = ["-c", str(config)] if args[0] == "ca" else []
    result = sigproxy(*argv, *with_config, env=client_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "not set" not in result.stderr and "cannot read" not in result.stderr
    if args == ("ca", "--env"):
        assert "export HTTPS_PROXY=http://127.0.0.1:18080" in result.stdout  # [proxy] listen was read


@pytest.mark.parametrize("args", [("check",), ("sign", "--connection", "main", "https://s3.amazonaws.com/")])
def test_commands_that_sign_name_the_missing_variable(tmp_path: Path, args: tuple[str, ...]) -> None:
    config = tmp_path / "sigproxy.toml"
    config.write_text(SERVER_ONLY)
    result = sigproxy(*args, "-c", str(config), env=client_env(tmp_path))
    assert result.returncode == 2
    assert f"environment variable '{UNSET}' is not set" in result.stderr, result.stderr


def test_ca_env_failure_is_loud_inside_eval(tmp_path: Path) -> None:
    """eval runs what ca --env printed: on failure that is a line that fails, so `set -e` stops the script
    rather than carrying on without the proxy's variables; the reason is on stderr."""
    config = tmp_path / "sigproxy.toml"
    config.write_text('[proxy]\nlisten = "no-port-here"\n')
    cmd = f'set -e; eval "$({sys.executable} -m sigproxy ca --env -c {config})"; echo REACHED'
    result = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=60,
                            env=client_env(tmp_path), check=False)
    assert result.returncode != 0
    assert "REACHED" not in result.stdout
    assert "sigproxy ca --env failed: config error: proxy.listen: expected HOST:PORT" in result.stderr


def test_sign_without_credentials_fails_with_1_and_says_what_to_set(tmp_path: Path) -> None:
    """No credentials is the command failing (1), not bad usage (2); one error, no back-off chatter."""
    config = tmp_path / "sigproxy.toml"
    config.write_text('[connections.main]\nhosts = ["*.amazonaws.com"]\n[connections.main.credentials]\n'
                      'source = "chain"\n')
    env = {**client_env(tmp_path), "HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    env = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")}
    result = sigproxy("sign", "-c", str(config), "--connection", "main", "https://sts.us-east-1.amazonaws.com/",
                      env=env)
    assert result.returncode == 1, result
    assert "the AWS credential chain found none; set AWS_PROFILE" in result.stderr, result.stderr
    assert "back-off" not in result.stderr and "retrying" not in result.stderr, result.stderr


@pytest.mark.parametrize(("listen", "proxy_url"), [
    ("0.0.0.0:8082", "http://127.0.0.1:8082"),  # a wildcard is reached at this machine's loopback
    ("[::]:8082", "http://[::1]:8082"),
    ("127.0.0.2:8082", "http://127.0.0.2:8082"),
    ("127.0.0.1:0", None),  # a port chosen at each start can't be told to clients: refused, saying so
    ('127.0.0.1:8443"\ntls = "self', "https://127.0.0.1:8443"),  # a TLS forward listener is an https:// proxy
])
def test_ca_env_gives_a_proxy_url_clients_can_use(tmp_path: Path, listen: str, proxy_url: str | None) -> None:
    config = tmp_path / "sigproxy.toml"
    config.write_text(f'[proxy]\nlisten = "{listen}"\n')
    result = sigproxy("ca", "--env", "-c", str(config), env=client_env(tmp_path))
    if proxy_url is None:
        assert result.returncode != 0 and "HTTPS_PROXY=" not in result.stdout, result
        assert "port 0 is chosen anew at each start" in result.stderr, result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert f"export HTTPS_PROXY={shlex.quote(proxy_url)}\n" in result.stdout, result.stdout


def _signed_post(moto: Moto, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "sigproxy.toml"
    config.write_text(moto_config(moto))
    return sigproxy("sign", "-c", str(config), "--connection", "main", "--json", "-X", "POST",
                    "-H", "Content-Type: application/x-www-form-urlencoded; charset=utf-8",
                    "--data", "Action=GetCallerIdentity&Version=2011-06-15", *extra, f"{moto.endpoint}/")


def test_sign_takes_the_service_and_region_headers(moto: Moto, tmp_path: Path) -> None:
    """-H 'X-Sigproxy-Service: sts' is --service sts, as the proxy takes the header: neither sent nor signed,
    and moto (signature checks on) accepts the request."""
    result = _signed_post(moto, tmp_path, "-H", "X-Sigproxy-Service: sts", "-H", "x-sigproxy-region: us-east-1")
    assert result.returncode == 0, result.stderr
    signed = json.loads(result.stdout)
    assert not any(name.lower().startswith("x-sigproxy-") for name in signed["headers"])
    assert "/us-east-1/sts/aws4_request" in signed["headers"]["Authorization"]
    request = urllib.request.Request(signed["url"], data=b"Action=GetCallerIdentity&Version=2011-06-15",
                                     headers=signed["headers"], method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert moto.user_arn in answer.read().decode()


def test_sign_says_service_option_and_refuses_a_disagreement(moto: Moto, tmp_path: Path) -> None:
    unknown = _signed_post(moto, tmp_path)
    assert unknown.returncode == 2
    assert "pass --service NAME" in unknown.stderr and '"service"' not in unknown.stderr, unknown.stderr
    both = _signed_post(moto, tmp_path, "--service", "sqs", "-H", "X-Sigproxy-Service: sts")
    assert both.returncode == 2
    assert "--service 'sqs' and -H 'X-Sigproxy-Service: sts' disagree" in both.stderr, both.stderr


def test_check_with_sts_unreachable_fails_fast_and_says_what_it_tried(tmp_path: Path) -> None:
    """Before: 16.6 s of botocore retries and a "retrying with back-off" warning. A bound, not a benchmark."""
    port = closed_port()
    config = tmp_path / "sigproxy.toml"
    config.write_text(f"""
[connections.role]
region = "us-east-1"
hosts = ["*.amazonaws.com"]
sts_endpoint_url = "http://127.0.0.1:{port}"
[connections.role.credentials]
source = "assume_role"
role_arn = "arn:aws:iam::111122223333:role/r"
base = "keys"

[connections.keys]
hosts = ["*.amazonaws.com"]
sts_endpoint_url = "http://127.0.0.1:{port}"
[connections.keys.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "not-a-real-secret"
""")
    started = time.monotonic()
    result = sigproxy("check", "-c", str(config), env=client_env(tmp_path))
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 10, elapsed
    out = result.stdout + result.stderr
    assert "back-off" not in out and "retrying" not in out, out
    assert re.search(r"role\s+FAIL\s+connection 'role': STS AssumeRole failed: EndpointConnectionError", out), out
    # Each names what it really called: the role's failed AssumeRole (never reaching GetCallerIdentity), the
    # static keys' GetCallerIdentity.
    assert f"tried the credentials of connection 'keys', then AssumeRole at http://127.0.0.1:{port} (up to" in out
    assert f"tried GetCallerIdentity at http://127.0.0.1:{port} (up to" in out
    assert "up to 2 tries per call, 5 s in all: --timeout" in out
    assert "not-a-real-secret" not in out


def test_check_timeout_bounds_a_silent_endpoint(tmp_path: Path) -> None:
    """An STS that accepts and never answers: --timeout ends it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        config = tmp_path / "sigproxy.toml"
        config.write_text(f"""
[connections.keys]
hosts = ["*.amazonaws.com"]
sts_endpoint_url = "http://127.0.0.1:{port}"
[connections.keys.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "x"
""")
        started = time.monotonic()
        result = sigproxy("check", "--timeout", "1.5", "-c", str(config), env=client_env(tmp_path))
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 8, elapsed
    assert "1.5 s in all: --timeout" in result.stdout, result.stdout


OPEN = "is not loopback and anyone who reaches it can sign"


def test_an_open_listener_is_warned_about_once(moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
    """0.0.0.0 with a connection that asks for no token: a warning naming the listener and the keys that fix it
    (bind only: no traffic from elsewhere). A reverse listener restricted by clients is not named."""
    extra = '\n[[reverse]]\nlisten = "0.0.0.0:0"\nupstream = "http://127.0.0.1:1"\nclients = ["127.0.0.1/32"]\n'
    proxy = sigproxy_factory(moto_config(moto) + extra, listen="0.0.0.0:0")
    out = proxy.written(OPEN)
    [warning] = [line for line in out.splitlines() if OPEN in line]
    assert "proxy.listen = '0.0.0.0:0'" in warning and "'main'" in warning
    assert "set token or client_secret" in warning and "[proxy] clients" in warning
    assert "reverse[0]" not in out


@pytest.mark.parametrize(("listen", "connection"), [
    ("127.0.0.1:0", ""),  # loopback
    ("0.0.0.0:0", 'token = "a-proxy-token-123"'),  # every connection asks for a token
])
def test_no_warning_when_the_listener_is_guarded(moto: Moto, sigproxy_factory: Callable[..., Proxy], listen: str,
                                                 connection: str) -> None:
    proxy = sigproxy_factory(moto_config(moto, connection=connection), listen=listen)
    out = proxy.stop()
    assert "forward proxy listening on" in out
    assert OPEN not in out


def test_curl_http2_prior_knowledge_is_told_sigproxy_speaks_http11(moto_proxy: Proxy) -> None:
    result = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "20", f"{moto_proxy.url}/"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0  # curl expected HTTP/2 frames
    moto_proxy.written("sigproxy speaks HTTP/1.1: let the client use HTTP/1.1 (curl: drop --http2-prior-knowledge)")


def test_curl_http2_through_the_proxy_is_told_what_to_drop(moto_proxy: Proxy, moto: Moto) -> None:
    """curl --http2 asks the proxy for h2c (Upgrade): refused, as every upgrade is, saying what to change."""
    result = subprocess.run(["curl", "-sS", "--http2", "-x", moto_proxy.url, "-H", "X-Sigproxy-Service: s3",
                             "-w", "\n%{http_code}", "--max-time", "20", f"{moto.endpoint}/{moto.bucket}"],
                            capture_output=True, text=True, timeout=60, check=False)
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "400", (result.stdout[-500:], result.stderr)
    error = error_body(body)  # S3's error format (the request names service s3)
    assert error["aws_code"] == "SigproxyUnsupportedRequest", error
    assert "send the request without Upgrade (curl: drop --http2)" in error["message"]


def test_curl_with_an_https_proxy_url_is_told_to_use_http(moto_proxy: Proxy, moto: Moto) -> None:
    """A client given https:// for the (plain) proxy port starts TLS there: the log says what to change."""
    https_url = moto_proxy.url.replace("http://", "https://")
    result = subprocess.run(["curl", "-sS", "-x", https_url, "--proxy-insecure", "--max-time", "20",
                             f"{moto.endpoint}/"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    out = moto_proxy.written("this is an HTTP proxy port; use http:// for the proxy URL")
    assert "HttpParser" not in out and "BadHttpMessage" not in out


def test_raw_heads_that_are_not_http11_are_named(moto_proxy: Proxy) -> None:
    """Through the forward listener's front door (which peeks the first bytes): each answer names the problem."""
    host, port = moto_proxy.address.rsplit(":", 1)
    cases = {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": b"sigproxy speaks HTTP/1.1",
        b"GET http://127.0.0.1/ HTTP/1.1\r\n\r\n": b"needs exactly one Host header (RFC 9112 3.2): send one",
        bytes.fromhex("16030100c4010000c00303") + bytes(60): b"use http:// for the proxy URL",
        b"\x00\x01garbage\r\n\r\n": b"the first bytes are not a request line",
    }
    for raw, message in cases.items():
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(raw)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ") and message in answer, (raw, answer)
