"""Credential sources against moto's real STS (its IAM checks on: temporary keys and their session tokens are
verified on every proxied call), and against a stand-in for the custom STS endpoint contract."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Proxy
from tests.errorbody import error_body
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.moto_server import Moto
from tests.servers.sts_endpoint import StsEndpoint, start_sts_endpoint


def platform(moto: Moto, name: str = "platform") -> str:
    """A static connection holding moto's IAM user keys: the base that assumes tenant roles."""
    return f"""
[connections.{name}]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
sts_endpoint_url = "{moto.endpoint}"
[connections.{name}.credentials]
source = "static"
access_key_id = "{moto.access_key}"
secret_access_key = "{moto.secret_key}"
"""


def tenant(moto: Moto, *, name: str = "tenant", role_arn: str | None = None, external_id: str = "ext-123",
           base: str = "platform", session: str = "acme-session", extra: str = "") -> str:
    return f"""
[connections.{name}]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
sts_endpoint_url = "{moto.endpoint}"
require_role_path = "/sigproxy-assumable/"
[connections.{name}.credentials]
source = "assume_role"
role_arn = "{role_arn or moto.role_arn}"
external_id = "{external_id}"
session_name = "{session}"
base = "{base}"
{extra}
"""


def caller_arn(proxy: Proxy, moto: Moto, connection: str) -> subprocess.CompletedProcess[str]:
    """STS GetCallerIdentity through the proxy, unsigned, with the connection named by header."""
    return curl(proxy, "-H", f"X-Sigproxy-Connection: {connection}", "-H", "X-Sigproxy-Service: sts",
                "--data", "Action=GetCallerIdentity&Version=2011-06-15", f"{moto.endpoint}/")


def sigproxy_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sigproxy", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False, env=env)


class TestAssumeRole:
    def test_proxied_call_runs_as_assumed_role(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """AssumeRole with ExternalId and session name: the proxied call's identity is the assumed role, and
        S3 accepts the temporary keys and session token."""
        proxy = sigproxy_factory(platform(moto) + tenant(moto))
        r = caller_arn(proxy, moto, "tenant")
        assert status_of(r) == 200, r
        assert "<Arn>arn:aws:sts::123456789012:assumed-role/tenant/acme-session</Arn>" in r.stdout
        s3 = curl(proxy, "-H", "X-Sigproxy-Connection: tenant", "-H", "X-Sigproxy-Service: s3", f"{moto.endpoint}/")
        assert status_of(s3) == 200, s3
        assert moto.bucket in s3.stdout

    def test_wrong_external_id_is_recognisable(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """A wrong ExternalId: 403 credentials_unavailable carrying STS's AccessDenied (a retry can't fix it), in
        the query protocol's XML the STS request speaks."""
        proxy = sigproxy_factory(platform(moto) + tenant(moto, external_id="wrong-ext"))
        r = caller_arn(proxy, moto, "tenant")
        assert status_of(r) == 403
        err = error_body(r.stdout.rsplit("\n", 1)[0])
        assert (err["format"], err["code"], err["aws_code"]) == ("query", "credentials_unavailable",
                                                                 "SigproxyCredentialsUnavailable")
        assert "AssumeRole failed: AccessDenied" in err["message"]

    def test_base_chain_from_environment(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """base = "chain": the platform's keys come from the standard chain (here the environment)."""
        proxy = sigproxy_factory(tenant(moto, base="chain"),
                                 env={"AWS_ACCESS_KEY_ID": moto.access_key, "AWS_SECRET_ACCESS_KEY": moto.secret_key})
        r = caller_arn(proxy, moto, "tenant")
        assert status_of(r) == 200, r
        assert "assumed-role/tenant/acme-session" in r.stdout

    def test_role_chaining(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """A role assumed with another connection's temporary credentials (role chaining)."""
        chained = tenant(moto, name="chained", role_arn=moto.chain_role_arn, base="tenant", session="hop-two",
                         external_id="ext-chain")
        # moto matches trust principals literally: the chained role trusts one session name of the first hop.
        proxy = sigproxy_factory(platform(moto) + tenant(moto, session=moto.chain_session_name) + chained)
        r = caller_arn(proxy, moto, "chained")
        assert status_of(r) == 200, r
        assert "assumed-role/chained/hop-two" in r.stdout

    def test_check_shows_source_arn_expiry(self, moto: Moto, tmp_path: Path) -> None:
        """`sigproxy check` prints each connection's caller ARN, source and expiry."""
        cfg = tmp_path / "c.toml"
        cfg.write_text(platform(moto) + tenant(moto))
        r = sigproxy_cli("check", "-c", str(cfg))
        assert r.returncode == 0, r.stderr
        lines = dict(line.split(None, 1) for line in r.stdout.splitlines())
        assert lines["platform"].split() == ["OK", moto.user_arn, "source=static", "expires=never"]
        ok, arn, source, expires = lines["tenant"].split()
        assert (ok, source) == ("OK", "source=assume_role")
        assert arn == "arn:aws:sts::123456789012:assumed-role/tenant/acme-session"
        assert expires.startswith("expires=20")


def test_web_identity_with_token_file(moto: Moto, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> None:
    """web_identity: AssumeRoleWithWebIdentity with the token file; the proxied call runs as that role."""
    token = tmp_path / "token"
    token.write_text(moto.web_identity_token + "\n")
    text = f"""
[connections.irsa]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
sts_endpoint_url = "{moto.endpoint}"
[connections.irsa.credentials]
source = "web_identity"
role_arn = "{moto.web_identity_role_arn}"
token_file = "{token}"
session_name = "pod-session"
"""
    proxy = sigproxy_factory(text)
    r = caller_arn(proxy, moto, "irsa")
    assert status_of(r) == 200, r
    role_name = moto.web_identity_role_arn.rsplit("/", 1)[1]
    assert f"assumed-role/{role_name}/pod-session" in r.stdout


def test_chain_with_profile(moto: Moto, tmp_path: Path, sigproxy_factory: Callable[..., Proxy]) -> None:
    """chain with `profile`: keys from a named profile in a (temporary) shared config file."""
    aws_config = tmp_path / "aws-config"
    aws_config.write_text(f"[profile tenant-x]\naws_access_key_id = {moto.access_key}\n"
                          f"aws_secret_access_key = {moto.secret_key}\n")
    text = """
[connections.prof]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
[connections.prof.credentials]
source = "chain"
profile = "tenant-x"
"""
    proxy = sigproxy_factory(text, env={"AWS_CONFIG_FILE": str(aws_config)})
    r = caller_arn(proxy, moto, "prof")
    assert status_of(r) == 200, r
    assert moto.user_arn in r.stdout


# ------------------------------------------------------------------ the custom STS endpoint contract


@pytest.fixture
def sts_endpoint(moto: Moto) -> Iterator[StsEndpoint]:
    endpoint, stop = start_sts_endpoint(auth=("api_key", "X-Api-Key", "test-api-key"))
    endpoint.credentials = (moto.access_key, moto.secret_key, None)
    try:
        yield endpoint
    finally:
        stop()


def endpoint_config(moto: Moto, endpoint: StsEndpoint, *, api_key: str = "test-api-key",
                    auth: str | None = None) -> str:
    auth_lines = auth or f'auth = "api_key"\napi_key_header = "X-Api-Key"\napi_key = "{api_key}"'
    return f"""
[proxy]
default_connection = "custom"
[connections.custom]
region = "us-east-1"
service = "s3"
hosts = ["127.0.0.1:*"]
[connections.custom.credentials]
source = "sts_endpoint"
url = "{endpoint.url}"
role_arn = "arn:aws:iam::123456789012:role/customer"
external_id = "ext-777"
{auth_lines}
"""


class TestStsEndpoint:
    @pytest.mark.parametrize(("shape", "field", "fmt"), [
        ("flat", "expiresAt", "iso"), ("wrapped", "expires_at", "unix"), ("flat", "expiration", "unix"),
        ("wrapped", "expiration", "iso"), ("flat", None, "iso"),
    ])
    def test_shapes(self, shape: str, field: str | None, fmt: str, moto: Moto, sts_endpoint: StsEndpoint,
                    sigproxy_factory: Callable[..., Proxy]) -> None:
        """Every answer shape works; the request carries the contract's JSON and the API key."""
        sts_endpoint.shape, sts_endpoint.expiry_field, sts_endpoint.expiry_format = shape, field, fmt
        proxy = sigproxy_factory(endpoint_config(moto, sts_endpoint))
        r = curl(proxy, f"{moto.endpoint}/")
        assert status_of(r) == 200, r
        (call,) = sts_endpoint.calls
        assert call["body"] == {"role_arn": "arn:aws:iam::123456789012:role/customer", "external_id": "ext-777",
                                "region": "us-east-1", "service": "s3"}
        assert call["headers"]["x-api-key"] == "test-api-key"

    def test_basic_auth(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """auth = "basic": username and password as HTTP basic auth; a wrong password: a clear 403."""
        endpoint, stop = start_sts_endpoint(auth=("basic", "platform", "pw-123"))
        endpoint.credentials = (moto.access_key, moto.secret_key, None)
        try:
            good = sigproxy_factory(endpoint_config(moto, endpoint, auth='auth = "basic"\nusername = "platform"\n'
                                                                     'password = "pw-123"'))
            assert status_of(curl(good, f"{moto.endpoint}/")) == 200
            bad = sigproxy_factory(endpoint_config(moto, endpoint, auth='auth = "basic"\nusername = "platform"\n'
                                                                    'password = "pw-wrong"'))
            r = curl(bad, f"{moto.endpoint}/")
            assert status_of(r) == 403
            assert "HTTP 401" in r.stdout and "password" in r.stdout
            assert "pw-wrong" not in r.stdout and "pw-wrong" not in bad.stop()
        finally:
            stop()

    def test_wrong_api_key(self, moto: Moto, sts_endpoint: StsEndpoint,
                           sigproxy_factory: Callable[..., Proxy]) -> None:
        """A wrong API key: 403 credentials_unavailable saying to check it; the key never appears."""
        proxy = sigproxy_factory(endpoint_config(moto, sts_endpoint, api_key="wrong-key-42"))
        r = curl(proxy, f"{moto.endpoint}/")
        assert status_of(r) == 403
        err = error_body(r.stdout.rsplit("\n", 1)[0])
        assert (err["code"], err["aws_code"]) == ("credentials_unavailable", "SigproxyCredentialsUnavailable")
        assert "api_key" in err["message"]
        assert "wrong-key-42" not in r.stdout + proxy.stop()

    def test_malformed_answer(self, moto: Moto, sts_endpoint: StsEndpoint,
                              sigproxy_factory: Callable[..., Proxy]) -> None:
        """An answer without a secret: 403 naming what is missing; the answer is never logged."""
        sts_endpoint.malformed = "missing_secret"
        proxy = sigproxy_factory(endpoint_config(moto, sts_endpoint), log_level="debug")
        r = curl(proxy, f"{moto.endpoint}/")
        assert status_of(r) == 403
        assert "no secretAccessKey" in r.stdout
        assert moto.access_key not in proxy.stop()

    def test_200_concurrent_cold_requests_one_fetch(self, moto: Moto, sts_endpoint: StsEndpoint,
                                                    sigproxy_factory: Callable[..., Proxy]) -> None:
        """200 concurrent requests on a cold cache: exactly one call to the STS endpoint, all succeed."""
        sts_endpoint.delay = 1.0
        proxy = sigproxy_factory(endpoint_config(moto, sts_endpoint))

        def one(_: int) -> int:
            return status_of(curl(proxy, "-o", "/dev/null", f"{moto.endpoint}/{moto.bucket}?max-keys=1"))

        with ThreadPoolExecutor(200) as pool:
            codes = list(pool.map(one, range(200)))
        assert codes == [200] * 200
        assert len(sts_endpoint.calls) == 1

    def test_sts_down_valid_then_expired(self, moto: Moto, sts_endpoint: StsEndpoint,
                                         sigproxy_factory: Callable[..., Proxy]) -> None:
        """STS down while credentials are valid: no failed request. Credentials that expire while STS is
        down: 503 credentials_unavailable (SDKs retry it), and the endpoint is not hammered (back-off)."""
        sts_endpoint.lifetime = 4  # seconds: inside every refresh window from the start
        proxy = sigproxy_factory(endpoint_config(moto, sts_endpoint))
        assert status_of(curl(proxy, "-o", "/dev/null", f"{moto.endpoint}/")) == 200
        sts_endpoint.status = 503
        codes = [status_of(curl(proxy, "-o", "/dev/null", f"{moto.endpoint}/")) for _ in range(5)]
        assert codes == [200] * 5
        import time

        time.sleep(4.5)  # the real proxy process has a real clock; unit tests cover the windows with a fake one
        calls_before = len(sts_endpoint.calls)
        r = [curl(proxy, f"{moto.endpoint}/") for _ in range(20)]
        assert {status_of(x) for x in r} == {503}
        err = error_body(r[0].stdout.rsplit("\n", 1)[0])
        assert (err["code"], err["aws_code"]) == ("credentials_unavailable",
                                                  "SigproxyCredentialsTemporarilyUnavailable")
        assert "HTTP 503" in err["message"]
        assert len(sts_endpoint.calls) - calls_before <= 3


def test_assume_role_sends_every_parameter(recording_sts: tuple[str, list[dict[str, Any]]],
                                           tmp_path: Path) -> None:
    """Session policy, policy ARNs, tags, transitive tag keys, source identity, duration and ExternalId all
    reach STS, signed with the base connection's keys."""
    url, calls = recording_sts
    policy = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}'
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[connections.base]
region = "eu-west-1"
hosts = ["*.amazonaws.com"]
[connections.base.credentials]
source = "static"
access_key_id = "AKIDBASE"
secret_access_key = "base-secret"

[connections.acme]
region = "eu-west-1"
hosts = ["*.amazonaws.com"]
sts_endpoint_url = "{url}"
[connections.acme.credentials]
source = "assume_role"
role_arn = "arn:aws:iam::111122223333:role/sigproxy-assumable/acme"
external_id = "ext-acme"
source_identity = "platform-user"
duration_seconds = 1800
policy = '{policy}'
policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
transitive_tag_keys = ["tenant"]
base = "base"
[connections.acme.credentials.tags]
tenant = "acme"
tier = "gold"
""")
    r = sigproxy_cli("check", "-c", str(cfg), "acme")
    assert r.returncode == 0, r.stdout + r.stderr
    assume = next(c for c in calls if c["Action"] == ["AssumeRole"])
    assert assume["RoleArn"] == ["arn:aws:iam::111122223333:role/sigproxy-assumable/acme"]
    assert assume["RoleSessionName"] == ["sigproxy-acme"]
    assert assume["ExternalId"] == ["ext-acme"]
    assert assume["SourceIdentity"] == ["platform-user"]
    assert assume["DurationSeconds"] == ["1800"]
    assert assume["Policy"] == [policy]
    assert assume["PolicyArns.member.1.arn"] == ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
    assert (assume["Tags.member.1.Key"], assume["Tags.member.1.Value"]) == (["tenant"], ["acme"])
    assert (assume["Tags.member.2.Key"], assume["Tags.member.2.Value"]) == (["tier"], ["gold"])
    assert assume["TransitiveTagKeys.member.1"] == ["tenant"]
    assert "Credential=AKIDBASE/" in assume["_authorization"]
    assert "/eu-west-1/sts/aws4_request" in assume["_authorization"]
    who = next(c for c in calls if c["Action"] == ["GetCallerIdentity"])
    assert "Credential=ASIAsigproxy-acme/" in who["_authorization"]  # the assumed session's key
