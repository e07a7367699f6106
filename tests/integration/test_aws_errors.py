"""Proxy errors as real AWS clients see them: the AWS CLI v1 and boto3, through the proxy to moto, print the
Sigproxy code and message in their normal error output (S3: rest-xml, STS: query, DynamoDB: json), retry what a
retry can fix (an unreachable upstream or STS, a timeout) exactly as configured, and fail at once on the rest.
Attempts are counted on the proxy's access log, one line per request it answered."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tests.conftest import Proxy
from tests.integration.test_credentials import tenant
from tests.servers.moto_server import Moto

ATTEMPTS = 3  # AWS_MAX_ATTEMPTS / total_max_attempts in every run: a retried error is seen exactly this often


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A port nothing listens on (bound then closed: connecting is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _static(moto: Moto, name: str, extra: str = "", hosts: str = '["127.0.0.1:*"]') -> str:
    return f"""
[connections.{name}]
region = "us-east-1"
hosts = {hosts}
sts_endpoint_url = "{moto.endpoint}"
{extra}
[connections.{name}.credentials]
source = "static"
access_key_id = "{moto.access_key}"
secret_access_key = "{moto.secret_key}"
"""


def errors_config(moto: Moto, closed_port: int, proxy: str = "") -> str:
    """No default connection: the client's AWS_ACCESS_KEY_ID (or proxy user) names one of these."""
    return (f"[proxy]\nauth_failures = 1000\n{proxy}\n"
            + _static(moto, "main")
            + _static(moto, "limited", 'allowed_services = ["iam"]')
            + _static(moto, "elsewhere", hosts='["example.com"]')
            + _static(moto, "tokened", 'token = "right-token"')
            + tenant(moto, name="refused", base="main", external_id="wrong-ext")
            + f"""
[connections.stsdown]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
[connections.stsdown.credentials]
source = "sts_endpoint"
url = "http://127.0.0.1:{closed_port}/creds"
role_arn = "{moto.role_arn}"
auth = "api_key"
api_key_header = "X-Api-Key"
api_key = "test-api-key"
""")


@pytest.fixture(scope="module")
def errors_proxy(moto: Moto, closed_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    # Module-scoped: one proxy for every case (sigproxy_factory is per test).
    from tests.conftest import _start_proxy

    tmp = tmp_path_factory.mktemp("awserrors")
    path = tmp / "sigproxy.toml"
    path.write_text(errors_config(moto, closed_port))
    proxy = _start_proxy(path, {**os.environ, "STATE_DIRECTORY": str(tmp / "state")},
                         ["--listen", "127.0.0.1:0", "--log-level", "info", "--admin-listen", "127.0.0.1:0",
                          "--workers", "1"])
    try:
        yield proxy
    finally:
        proxy.stop()


@dataclass(frozen=True)
class Case:
    key_id: str  # AWS_ACCESS_KEY_ID: names the connection
    status: int
    code: str  # the AWS code the client shows
    snake: str  # X-Sigproxy-Error and the access log's "error"
    says: str  # a piece of the message
    retried: bool = False
    proxy_user: str | None = None  # user:password in the proxy URL
    upstream: str | None = None  # another endpoint than moto's ("closed": the closed port)


CASES = {
    "no_connection": Case("nobody", 407, "SigproxyNoConnection", "no_connection", "'nobody' names no connection"),
    "bad_proxy_token": Case("tokened", 407, "SigproxyBadProxyToken", "bad_proxy_token", "needs its token",
                            proxy_user="tokened:wrong-token"),
    "host_not_allowed": Case("elsewhere", 403, "SigproxyHostNotAllowed", "host_not_allowed", "127.0.0.1"),
    "policy_refused": Case("limited", 403, "SigproxyPolicyRefused", "policy_refused", "not in allowed_services"),
    "credentials_refused": Case("refused", 403, "SigproxyCredentialsUnavailable", "credentials_unavailable",
                                "AssumeRole failed: AccessDenied"),
    "credentials_sts_down": Case("stsdown", 503, "SigproxyCredentialsTemporarilyUnavailable",
                                 "credentials_unavailable", "STS endpoint unreachable", retried=True),
    "upstream_unreachable": Case("main", 502, "SigproxyUpstreamError", "upstream_error", "127.0.0.1",
                                 retried=True, upstream="closed"),
}
OPERATIONS = {  # service -> (CLI words, boto3 method, the operation's name in the CLI's message)
    "s3": (["s3api", "list-buckets"], "list_buckets", "ListBuckets"),
    "sts": (["sts", "get-caller-identity"], "get_caller_identity", "GetCallerIdentity"),
    "dynamodb": (["dynamodb", "list-tables"], "list_tables", "ListTables"),
}


def _endpoint(case: Case, moto: Moto, closed_port: int) -> str:
    return f"http://127.0.0.1:{closed_port}" if case.upstream == "closed" else moto.endpoint


def _proxy_url(proxy: Proxy, case: Case) -> str:
    return f"http://{case.proxy_user}@{proxy.address}" if case.proxy_user else proxy.url


def access_lines(proxy: Proxy, since: int, snake: str, expected: int) -> int:
    """How many access lines after output line ``since`` carry ``"error": snake``; waits (up to 10 s) for
    ``expected`` of them (log lines follow their answers), then a moment for any extra one."""
    def count() -> int:
        found = 0
        for line in proxy.output[since:]:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("logger") == "sigproxy.access" or "request_id" in record:
                found += record.get("error") == snake
        return found

    deadline = time.monotonic() + 10
    while count() < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    return count()


def run_cli(cli: str, proxy_url: str, endpoint: str, key_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "HTTP_PROXY": proxy_url,
        "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": "placeholder-not-a-secret",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": str(ATTEMPTS),  # legacy retry mode, the CLI v1's default
    }
    return subprocess.run([cli, "--endpoint-url", endpoint, *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def boto3_client(service: str, proxy_url: str, endpoint: str, key_id: str, mode: str = "legacy") -> Any:
    cfg = BotoConfig(proxies={"http": proxy_url}, retries={"total_max_attempts": ATTEMPTS, "mode": mode},
                     s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30)
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id,
                        aws_secret_access_key="placeholder-not-a-secret", config=cfg)


def check_boto3(client: Any, method: str, case: Case, proxy: Proxy, attempts: int) -> None:
    since = len(proxy.output)
    with pytest.raises(ClientError) as info:
        getattr(client, method)()
    response = info.value.response
    assert response["Error"]["Code"] == case.code, response
    assert case.says in response["Error"]["Message"], response
    meta = response["ResponseMetadata"]
    assert (meta["HTTPStatusCode"], meta["HTTPHeaders"]["x-sigproxy-error"]) == (case.status, case.snake)
    assert meta["RequestId"] == meta["HTTPHeaders"]["x-sigproxy-request-id"]
    assert meta["RetryAttempts"] == attempts - 1
    assert access_lines(proxy, since, case.snake, attempts) == attempts


# The CLI runs a service per case (rotating, so every protocol meets fail-fast and retried errors); boto3
# runs every service.
CLI_SERVICE = {"no_connection": "s3", "bad_proxy_token": "sts", "host_not_allowed": "dynamodb",
               "policy_refused": "s3", "credentials_refused": "sts", "credentials_sts_down": "sts",
               "upstream_unreachable": "dynamodb"}


@pytest.mark.parametrize("name", list(CASES))
def test_aws_cli_prints_the_sigproxy_code(name: str, aws_cli: str, moto: Moto, errors_proxy: Proxy,
                                          closed_port: int) -> None:
    """`An error occurred (SigproxyX) when calling the Op operation: <message>`, after 1 attempt, or exactly
    AWS_MAX_ATTEMPTS for what a retry can fix."""
    case = CASES[name]
    service = CLI_SERVICE[name]
    words, _, operation = OPERATIONS[service]
    since = len(errors_proxy.output)
    r = run_cli(aws_cli, _proxy_url(errors_proxy, case), _endpoint(case, moto, closed_port), case.key_id, *words)
    assert r.returncode != 0
    prefix = f"An error occurred ({case.code}) when calling the {operation} operation"
    if case.retried:
        prefix += f" (reached max retries: {ATTEMPTS - 1})"
    assert prefix + ": " in r.stderr, r.stderr
    assert case.says in r.stderr.split(prefix, 1)[1], r.stderr
    expected = ATTEMPTS if case.retried else 1
    assert access_lines(errors_proxy, since, case.snake, expected) == expected


@pytest.mark.parametrize("service", list(OPERATIONS))
@pytest.mark.parametrize("name", [n for n, c in CASES.items() if not c.retried])
def test_boto3_fails_fast(name: str, service: str, moto: Moto, errors_proxy: Proxy, closed_port: int) -> None:
    """What a retry can't fix: boto3 sees the code, message and request id after one attempt."""
    case = CASES[name]
    client = boto3_client(service, _proxy_url(errors_proxy, case), _endpoint(case, moto, closed_port), case.key_id)
    check_boto3(client, OPERATIONS[service][1], case, errors_proxy, 1)


@pytest.mark.parametrize(("name", "service", "mode"), [
    ("credentials_sts_down", "s3", "legacy"), ("credentials_sts_down", "dynamodb", "standard"),
    ("upstream_unreachable", "sts", "legacy"), ("upstream_unreachable", "s3", "standard"),
])
def test_boto3_retries_what_a_retry_can_fix(name: str, service: str, mode: str, moto: Moto, errors_proxy: Proxy,
                                            closed_port: int) -> None:
    """An unreachable STS or upstream: retried in both retry modes, exactly total_max_attempts times."""
    case = CASES[name]
    client = boto3_client(service, _proxy_url(errors_proxy, case), _endpoint(case, moto, closed_port),
                          case.key_id, mode)
    check_boto3(client, OPERATIONS[service][1], case, errors_proxy, ATTEMPTS)


@pytest.fixture
def limits_proxy(moto: Moto, closed_port: int, slow_upstream: str,
                 sigproxy_factory: Callable[..., Proxy]) -> Proxy:
    """A half-second read timeout (slow_upstream answers after 2: each of the retried attempts waits it out) and
    a 1 KiB max_body."""
    return sigproxy_factory(errors_config(moto, closed_port, proxy='read_timeout = 0.5\nmax_body = "1KiB"'))


def test_upstream_timeout_is_retried(aws_cli: str, slow_upstream: str, limits_proxy: Proxy) -> None:
    """504 SigproxyUpstreamTimeout: the CLI and boto3 retry it AWS_MAX_ATTEMPTS times."""
    case = Case("main", 504, "SigproxyUpstreamTimeout", "upstream_timeout", "", retried=True)
    since = len(limits_proxy.output)
    r = run_cli(aws_cli, limits_proxy.url, slow_upstream, "main", "s3api", "list-buckets")
    prefix = f"An error occurred (SigproxyUpstreamTimeout) when calling the ListBuckets operation (reached max " \
             f"retries: {ATTEMPTS - 1}): "
    assert r.returncode != 0 and prefix in r.stderr, r.stderr
    assert access_lines(limits_proxy, since, case.snake, ATTEMPTS) == ATTEMPTS
    check_boto3(boto3_client("s3", limits_proxy.url, slow_upstream, "main"), "list_buckets", case, limits_proxy,
                ATTEMPTS)


def test_body_too_large_fails_fast(aws_cli: str, moto: Moto, limits_proxy: Proxy, tmp_path: Path) -> None:
    """413 SigproxyBodyTooLarge: S3 PutObject (CLI) and DynamoDB PutItem (boto3), one attempt each."""
    case = Case("main", 413, "SigproxyBodyTooLarge", "body_too_large", "over max_body")
    body = tmp_path / "big.bin"
    body.write_bytes(b"x" * 4096)
    since = len(limits_proxy.output)
    r = run_cli(aws_cli, limits_proxy.url, moto.endpoint, "main", "s3api", "put-object", "--bucket", moto.bucket,
                "--key", "big.bin", "--body", str(body))
    prefix = "An error occurred (SigproxyBodyTooLarge) when calling the PutObject operation: "
    assert r.returncode != 0 and prefix in r.stderr, r.stderr
    assert case.says in r.stderr
    assert access_lines(limits_proxy, since, case.snake, 1) == 1
    client = boto3_client("dynamodb", limits_proxy.url, moto.endpoint, "main")
    since = len(limits_proxy.output)
    with pytest.raises(ClientError) as info:
        client.put_item(TableName=moto.table, Item={"id": {"S": "big"}, "v": {"S": "y" * 4096}})
    assert info.value.response["Error"]["Code"] == case.code
    assert case.says in info.value.response["Error"]["Message"]
    assert info.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    assert access_lines(limits_proxy, since, case.snake, 1) == 1


def test_curl_and_unknown_hosts_keep_the_json_body(errors_proxy: Proxy) -> None:
    """No AWS protocol to go by (an unsigned curl to a non-AWS host): sigproxy's JSON, header as before."""
    r = subprocess.run(["curl", "-sS", "-i", "-x", errors_proxy.url, "http://example.net/x"],
                       capture_output=True, text=True, timeout=30, check=False)
    head, _, body = r.stdout.partition("\n\n")  # (text mode: CRLF read as LF)
    assert " 407 " in head.splitlines()[0] and "X-Sigproxy-Error: no_connection" in head, r.stdout
    assert json.loads(body)["error"]["code"] == "no_connection"
