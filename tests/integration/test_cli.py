"""The command line: `check` against moto's STS, `sign` against botocore, exit codes, config errors."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path
from unittest import mock

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from sigproxy import __version__
from sigproxy.compiled import MODULES, pure_python
from tests.conftest import ROOT, moto_config
from tests.servers.moto_server import Moto

KEY, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def sigproxy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sigproxy", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False, env=env)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sigproxy.toml"
    path.write_text(text)
    return str(path)


def test_version() -> None:
    """`sigproxy version` prints the package version, and whether it runs compiled (sigproxy/compiled.py)."""
    r = sigproxy("version")
    assert r.returncode == 0
    how = "pure Python (SIGPROXY_PURE_PYTHON is set)" if pure_python() else f"compiled (mypyc, {len(MODULES)} modules)"
    assert r.stdout.strip() == f"sigproxy {__version__}, {how}"


class TestCheck:
    def test_ok_prints_arn(self, moto: Moto, tmp_path: Path) -> None:
        """`check` resolves credentials and prints the caller ARN from moto's STS."""
        r = sigproxy("check", "-c", write(tmp_path, moto_config(moto)))
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["main", "OK", moto.user_arn, "source=static", "expires=never"]

    def test_fail_exits_1(self, moto: Moto, tmp_path: Path) -> None:
        """A wrong secret: `NAME  FAIL  <reason>` with STS's error code, exit 1, and no secret printed."""
        r = sigproxy("check", "-c", write(tmp_path, moto_config(moto, secret="not-the-secret-at-all")))
        assert r.returncode == 1
        assert r.stdout.startswith("main  FAIL  ")
        assert "SignatureDoesNotMatch" in r.stdout
        assert "not-the-secret-at-all" not in r.stdout + r.stderr

    def test_unknown_name_exits_2(self, moto: Moto, tmp_path: Path) -> None:
        """Naming a connection that doesn't exist is bad usage; a typo is shown its closest name."""
        r = sigproxy("check", "-c", write(tmp_path, moto_config(moto)), "nope", "mian")
        assert r.returncode == 2
        assert "'nope' (no connection has a similar name), 'mian' (closest: 'main')" in r.stderr


SIGN_CONFIG = f"""
[connections.ex]
region = "us-east-1"
hosts = ["*.amazonaws.com"]
[connections.ex.credentials]
source = "static"
access_key_id = "{KEY}"
secret_access_key = "${{env:EX_SECRET}}"
"""


def botocore_sign(auth_cls: type, service: str, method: str, url: str, headers: dict[str, str],
                  body: bytes) -> str:
    request = AWSRequest(method=method, url=url, headers=headers, data=body)
    with mock.patch("botocore.auth.get_current_datetime", return_value=datetime(2026, 1, 2, 3, 4, 5)):
        auth_cls(BotoCredentials(KEY, SECRET), service, "us-east-1").add_auth(request)
    return str(request.headers["Authorization"])


@pytest.mark.parametrize(
    ("auth_cls", "service", "method", "url", "headers", "body"),
    [
        (S3SigV4Auth, "s3", "PUT", "https://bucket.s3.amazonaws.com/some%20key/x.txt?tagging=",
         {"Content-Type": "text/plain", "X-Amz-Meta-A": "b  c"}, b"hello"),
        (S3SigV4Auth, "s3", "GET", "https://s3.amazonaws.com/bucket?list-type=2&prefix=a%2Fb", {}, b""),
        (SigV4Auth, "sqs", "POST", "https://sqs.us-east-1.amazonaws.com/",
         {"Content-Type": "application/x-www-form-urlencoded"}, b"Action=ListQueues&Version=2012-11-05"),
        (SigV4Auth, "dynamodb", "POST", "https://dynamodb.us-east-1.amazonaws.com/",
         {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.ListTables"}, b"{}"),
    ],
)
def test_sign_equals_botocore(auth_cls: type, service: str, method: str, url: str, headers: dict[str, str],
                              body: bytes, tmp_path: Path) -> None:
    """`sigproxy sign --date` gives exactly botocore's Authorization for the same request."""
    cfg = write(tmp_path, SIGN_CONFIG)
    args = ["sign", "-c", cfg, "--connection", "ex", "--date", "20260102T030405Z", "-X", method, url]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    if body:
        args += ["--data", body.decode()]
    r = sigproxy(*args, env={"PATH": "/usr/bin:/bin", "EX_SECRET": SECRET})
    assert r.returncode == 0, r.stderr
    ours = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert ours["Authorization"] == botocore_sign(auth_cls, service, method, url, headers, body)
    assert SECRET not in r.stdout


def test_sign_verbose_shows_intermediates_without_secrets(tmp_path: Path) -> None:
    """--verbose prints the canonical request and string to sign; no secret or session token."""
    text = SIGN_CONFIG + 'session_token = "${env:EX_TOKEN}"\n'
    r = sigproxy("sign", "-c", write(tmp_path, text), "--connection", "ex", "--date", "20260102T030405Z",
                 "--verbose", "https://sqs.us-east-1.amazonaws.com/?Action=ListQueues",
                 env={"PATH": "/usr/bin:/bin", "EX_SECRET": SECRET, "EX_TOKEN": "tok/en+value=="})
    assert r.returncode == 0, r.stderr
    assert "# canonical request" in r.stdout and "AWS4-HMAC-SHA256\n20260102T030405Z" in r.stdout
    assert SECRET not in r.stdout and "tok/en+value==" not in r.stdout
    assert "X-Amz-Security-Token: ***" in r.stdout


def test_sign_refuses_host_outside_connection(tmp_path: Path) -> None:
    """`sign` applies the connection's hosts like the proxy does."""
    r = sigproxy("sign", "-c", write(tmp_path, SIGN_CONFIG), "--connection", "ex", "http://example.com/",
                 env={"PATH": "/usr/bin:/bin", "EX_SECRET": SECRET})
    assert r.returncode == 2
    assert "host_not_allowed" in r.stderr


def test_sign_unknown_connection_names_the_closest(tmp_path: Path) -> None:
    """`sign --connection` with a typo is bad usage naming the closest connection."""
    r = sigproxy("sign", "-c", write(tmp_path, SIGN_CONFIG), "--connection", "exx", "http://s3.amazonaws.com/",
                 env={"PATH": "/usr/bin:/bin", "EX_SECRET": SECRET})
    assert r.returncode == 2
    assert "--connection: unknown connection 'exx' (closest: 'ex')" in r.stderr


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[proxy]\nlisten = 1\n", "proxy.listen: expected a string"),
        ("[proxy]\nbogus = 1\n" + SIGN_CONFIG, "proxy.bogus: unknown key"),
        (SIGN_CONFIG.replace('"*.amazonaws.com"', '"http://x"'), "connections.ex.hosts[0]: bad host glob"),
        (SIGN_CONFIG + '[[routes]]\nhost = "x.com"\nconnection = "nope"\n', "routes[0].connection: unknown"),
        (SIGN_CONFIG + '[[reverse]]\nlisten = "127.0.0.1:8080"\nupstream = "http://x"\n',
         "reverse[0].listen: 127.0.0.1:8080 is already used by proxy.listen"),
        (SIGN_CONFIG.replace("${env:EX_SECRET}", "${env:MISSING_VAR}"),
         "connections.ex.credentials.secret_access_key: environment variable 'MISSING_VAR' is not set"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_run_bad_config_exits_2(text: str, needle: str, tmp_path: Path) -> None:
    """`sigproxy run` with a bad config names the key path and exits 2 without starting."""
    r = sigproxy("run", "-c", write(tmp_path, text), env={"PATH": "/usr/bin:/bin", "EX_SECRET": SECRET})
    assert r.returncode == 2
    assert needle in r.stderr
    assert "listening" not in r.stdout


def test_bad_usage_exits_2() -> None:
    """Unknown subcommands and missing arguments are usage errors: exit 2."""
    assert sigproxy("frobnicate").returncode == 2
    assert sigproxy("sign").returncode == 2


def test_config_from_environment_variable(tmp_path: Path) -> None:
    """Without -c, $SIGPROXY_CONFIG names the config."""
    path = write(tmp_path, "[proxy]\nbogus = 1\n")
    r = sigproxy("run", env={"PATH": "/usr/bin:/bin", "SIGPROXY_CONFIG": path})
    assert r.returncode == 2
    assert "proxy.bogus: unknown key" in r.stderr
