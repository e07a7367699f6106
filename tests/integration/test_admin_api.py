"""The admin API (``/v1``) of a real ``sigproxy run`` process with its SQLite store in a temp state directory,
against moto's STS and IAM (signature and trust-policy checks on).

One process serves most of this module (``api``); a few small ones test what needs its own config (the
failure limit, the API off without a token, no token on loopback). Every JSON answer received is validated
against ``/v1/openapi.json``'s schema for that path, method and status (:meth:`Api.call`), so the document is
checked against real answers.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from sigproxy.api import auth as api_auth
from sigproxy.cli import main as cli_main
from tests.conftest import ROOT, Proxy, _start_proxy
from tests.integration.test_credentials import platform
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.moto_server import Moto

TOKEN = "admin-" + uuid.uuid4().hex
STATIC_SECRET = "STATICSECRET" + uuid.uuid4().hex  # a store connection's secret: must never come back
PROXY_TOKEN = "PROXYTOKEN" + uuid.uuid4().hex
SESSION_TOKEN = "SESSIONTOKEN" + uuid.uuid4().hex
OPENAPI = json.loads((ROOT / "sigproxy/api/openapi.json").read_text())
_DOC_URI = "urn:sigproxy:openapi"
_REGISTRY = Registry().with_resource(_DOC_URI, Resource.from_contents(OPENAPI, default_specification=DRAFT202012))
ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _template(path: str) -> str:
    """The OpenAPI path template a real request path matches."""
    for template in OPENAPI["paths"]:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template
    raise AssertionError(f"{path} is not in openapi.json")


def check_schema(path: str, method: str, status: int, body: Any) -> None:
    """``body`` is valid for the response ``status`` of ``method path`` in openapi.json."""
    template = _template(path.split("?", 1)[0])
    if method.lower() not in OPENAPI["paths"][template]:  # a method the route doesn't take: a JSON 405
        assert status == 405
        jsonschema.Draft202012Validator({"$ref": f"{_DOC_URI}#/components/schemas/Error"},
                                        registry=_REGISTRY).validate(body)
        return
    responses = OPENAPI["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {template}: status {status} is not documented"
    if body is None:
        assert "content" not in responses[str(status)]
        return
    ref = f"{_DOC_URI}#/" + _pointer("paths", template, method.lower(), "responses", str(status), "content",
                                      "application/json", "schema")
    jsonschema.Draft202012Validator({"$ref": ref}, registry=_REGISTRY).validate(body)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = self.body["error"]
        return err


@dataclass
class Api:
    proxy: Proxy
    moto: Moto
    token: str | None = TOKEN
    seen: list[str] = field(default_factory=list)  # every answer's text, checked for secrets at the end

    @property
    def url(self) -> str:
        assert self.proxy.admin is not None
        return self.proxy.admin

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = "default",
             headers: dict[str, str] | None = None, raw: bytes | None = None) -> Answer:
        sent = {"Content-Type": "application/json"} if body is not None or raw is not None else {}
        token = self.token if token == "default" else token
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        sent.update(headers or {})
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, got, text = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            status, got, text = exc.code, dict(exc.headers), exc.read()
        self.seen.append(text.decode())
        parsed = json.loads(text) if text else None
        if path.startswith("/v1"):
            assert got.get("Cache-Control") == "no-store", (path, got)
            if status != 404 or parsed.get("error", {}).get("code") != "not_found" or _known(path):
                check_schema(path, method, status, parsed)
        return Answer(status, got, parsed)


def _known(path: str) -> bool:
    try:
        _template(path.split("?", 1)[0])
    except AssertionError:
        return False
    return True


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("AWS_", "SIGPROXY_")) and not k.upper().endswith("_PROXY")}
    return {**env, "STATE_DIRECTORY": str(tmp / "state"), "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}


def start(tmp: Path, text: str, *, admin_listen: str = "127.0.0.1:0") -> Proxy:
    path = tmp / "sigproxy.toml"
    path.write_text(text)
    return _start_proxy(path, _env(tmp), ["--listen", "127.0.0.1:0", "--log-level", "info",
                                          "--admin-listen", admin_listen, "--workers", "1"])


@pytest.fixture(scope="module")
def api(moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("admin-api")
    proxy = start(tmp, f"""
[proxy]
auth_failures = 1000

[admin]
token = "{TOKEN}"

[onboarding]
principal = "{moto.user_arn}"
require_role_path = "/sigproxy-assumable/"
{platform(moto)}""")
    try:
        yield Api(proxy, moto)
    finally:
        proxy.stop()


def iam(moto: Moto) -> Any:
    return boto3.client("iam", endpoint_url=moto.endpoint, region_name="us-east-1",
                        aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)


def customer_role(moto: Moto, trust: dict[str, Any], path: str) -> str:
    """A customer's role in moto with ``trust`` as its trust policy and every permission; its ARN."""
    name = f"customer-{uuid.uuid4().hex[:8]}"
    role = iam(moto).create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    iam(moto).put_role_policy(RoleName=name, PolicyName="all", PolicyDocument=ALLOW_ALL)
    arn: str = role["Arn"]
    return arn


def tenant(moto: Moto, name: str, **extra: Any) -> dict[str, Any]:
    """A pending tenant connection: its role is assumed with the platform's keys (file connection)."""
    return {"name": name, "region": "us-east-1", "hosts": ["127.0.0.1:*"], "sts_endpoint_url": moto.endpoint,
            "credentials": {"source": "assume_role", "base": "platform"}, **extra}


def static(moto: Moto, name: str, *, secret: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "region": "us-east-1", "hosts": ["127.0.0.1:*"], "sts_endpoint_url": moto.endpoint,
            "credentials": {"source": "static", "access_key_id": moto.access_key,
                            "secret_access_key": secret or moto.secret_key}, **extra}


def cli(api: Api, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    """``sigproxy connections ARGS`` in this process (``cli.main``; the API is the real process), URL and
    token from the environment."""
    env = {"SIGPROXY_ADMIN_URL": api.url, **({"SIGPROXY_ADMIN_TOKEN": token} if token is not None else {})}
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.pop(k, None) for k in ("SIGPROXY_ADMIN_URL", "SIGPROXY_ADMIN_TOKEN")}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli_main(["connections", *args])
            except SystemExit as exc:  # argparse's usage errors
                code = int(exc.code or 0)
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update({k: v for k, v in saved.items() if v is not None})
    return subprocess.CompletedProcess(["sigproxy", "connections", *args], code, out.getvalue(), err.getvalue())


# ---------------------------------------------------------------------------------------------- the document


def test_openapi_document_is_valid_and_served(api: Api) -> None:
    validate_openapi(OPENAPI)
    r = api.call("GET", "/v1/openapi.json")
    assert r.status == 200
    assert r.body == OPENAPI
    for path in OPENAPI["paths"]:
        assert path.startswith("/v1/")


# ---------------------------------------------------------------------------------------------- auth


class TestAuth:
    def test_no_token_wrong_token_right_token(self, api: Api) -> None:
        r = api.call("GET", "/v1/connections", token=None)
        assert r.status == 401
        assert r.error["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = api.call("GET", "/v1/connections", token=TOKEN + "x")
        assert r.status == 401
        assert "wrong" in r.error["message"]
        r = api.call("GET", "/v1/connections", headers={"Authorization": f"Basic {TOKEN}"}, token=None)
        assert r.status == 401
        assert api.call("GET", "/v1/connections").status == 200
        assert api.call("GET", "/v1/connections", token=None,
                        headers={"Authorization": f"bearer {TOKEN}"}).status == 200

    def test_health_and_metrics_stay_open(self, api: Api) -> None:
        for path in ("/healthz", "/readyz", "/metrics"):
            with urllib.request.urlopen(api.url + path, timeout=10) as response:
                assert response.status == 200
        with urllib.request.urlopen(api.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        failures = re.search(r"^sigproxy_admin_auth_failures_total (\d+)", text, re.M)
        assert failures is not None and int(failures.group(1)) >= 2

    def test_token_is_compared_in_constant_time(self) -> None:
        """The comparison is hmac.compare_digest on bytes, whatever the length or scheme spelling."""
        assert api_auth.compare_digest is hmac.compare_digest
        assert api_auth.bearer_matches("Bearer abc", "abc")
        assert api_auth.bearer_matches("BEARER abc", "abc")
        assert not api_auth.bearer_matches("Bearer abcd", "abc")
        assert not api_auth.bearer_matches("Bearer ab", "abc")
        assert not api_auth.bearer_matches("Bearer \udcff", "abc")
        assert not api_auth.bearer_matches(None, "abc")
        assert not api_auth.bearer_matches("Basic abc", "abc")


def test_failures_are_counted_then_429(moto: Moto, tmp_path: Path) -> None:
    """Past [proxy] auth_failures wrong tokens from one address, even the right token gets 429 + Retry-After;
    a reload (SIGHUP) rotates the token."""
    proxy = start(tmp_path, f'[proxy]\nauth_failures = 3\nauth_failure_window = 60\n[admin]\ntoken = "{TOKEN}"\n'
                  + platform(moto))
    try:
        small = Api(proxy, moto)
        assert small.call("GET", "/v1/connections").status == 200
        for _ in range(3):
            assert small.call("GET", "/v1/connections", token="wrong-token-0123456789").status == 401
        r = small.call("GET", "/v1/connections")
        assert r.status == 429
        assert r.error["code"] == "too_many_auth_failures"
        assert int(r.headers["Retry-After"]) >= 1
        with urllib.request.urlopen(small.url + "/metrics", timeout=10) as response:
            assert "sigproxy_admin_auth_failures_total 3" in response.read().decode()
    finally:
        out = proxy.stop()
    assert TOKEN not in out
    assert "wrong-token-0123456789" not in out


def test_token_rotates_on_reload(moto: Moto, tmp_path: Path) -> None:
    new = "rotated-" + uuid.uuid4().hex
    proxy = start(tmp_path, f'[admin]\ntoken = "{TOKEN}"\n' + platform(moto))
    try:
        api = Api(proxy, moto)
        assert api.call("GET", "/v1/connections").status == 200
        proxy.config.write_text(f'[admin]\ntoken = "{new}"\n' + platform(moto))
        proxy.proc.send_signal(1)  # SIGHUP
        deadline = time.monotonic() + 10
        while api.call("GET", "/v1/connections", token=new).status != 200:
            assert time.monotonic() < deadline, "the new token was never accepted"
            time.sleep(0.1)
        assert api.call("GET", "/v1/connections").status == 401
    finally:
        proxy.stop()


def test_api_off_without_token_off_loopback(moto: Moto, tmp_path: Path) -> None:
    """Admin listener on 0.0.0.0 without [admin] token: /v1 answers 403 api_off saying why; health stays."""
    proxy = start(tmp_path, platform(moto), admin_listen="0.0.0.0:0")
    try:
        assert proxy.admin is not None
        proxy.admin = proxy.admin.replace("0.0.0.0", "127.0.0.1")
        api = Api(proxy, moto, token=None)
        r = api.call("GET", "/v1/connections")
        assert r.status == 403
        assert r.error["code"] == "api_off"
        assert "[admin] token" in r.error["message"]
        assert api.call("POST", "/v1/connections", {"name": "x"}).status == 403
        with urllib.request.urlopen(proxy.admin + "/healthz", timeout=10) as response:
            assert response.status == 200
    finally:
        out = proxy.stop()
    assert "the admin API (/v1) is off" in out


def test_no_token_on_loopback_is_served_with_a_warning(moto: Moto, tmp_path: Path) -> None:
    proxy = start(tmp_path, platform(moto))
    try:
        assert Api(proxy, moto, token=None).call("GET", "/v1/connections").status == 200
    finally:
        out = proxy.stop()
    assert re.search(r'"level": ?"(WARNING|warning)".*without a token', out), out


# ---------------------------------------------------------------------------------------------- CRUD


class TestConnections:
    def test_create_get_delete(self, api: Api) -> None:
        r = api.call("POST", "/v1/connections", static(api.moto, "crud-one"))
        assert r.status == 201, r.body
        assert r.headers["Location"] == "/v1/connections/crud-one"
        assert r.body["origin"] == "store"
        assert r.body["state"] == "active"
        assert r.body["credentials"]["secret_access_key"] == "***"
        got = api.call("GET", "/v1/connections/crud-one")
        assert got.status == 200
        assert got.body == r.body
        assert api.call("POST", "/v1/connections", static(api.moto, "crud-one")).status == 409
        d = api.call("DELETE", "/v1/connections/crud-one")
        assert d.status == 204
        assert d.body is None
        r = api.call("GET", "/v1/connections/crud-one")
        assert r.status == 404
        assert r.error == {"code": "not_found", "message": "no connection named 'crud-one'", "field": "name"}
        assert api.call("DELETE", "/v1/connections/crud-one").status == 404

    def test_file_connection_is_read_only(self, api: Api) -> None:
        r = api.call("GET", "/v1/connections/platform")
        assert r.body["origin"] == "file"
        assert r.body["credentials"]["secret_access_key"] == "***"
        r = api.call("POST", "/v1/connections", static(api.moto, "platform"))
        assert r.status == 409
        assert r.error["field"] == "name"
        assert "config file" in r.error["message"]
        r = api.call("PATCH", "/v1/connections/platform", {"region": "eu-west-1"})
        assert (r.status, r.error["code"]) == (409, "read_only")
        assert api.call("DELETE", "/v1/connections/platform").error["code"] == "read_only"

    def test_paging_prefix_state_cursor(self, api: Api) -> None:
        names = [f"page-{i:02d}" for i in range(5)]
        for name in names:
            assert api.call("POST", "/v1/connections", static(api.moto, name)).status == 201
        assert api.call("POST", "/v1/connections", tenant(api.moto, "page-pending")).status == 201
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            query = "?prefix=page-&limit=2" + (f"&cursor={cursor}" if cursor else "")
            r = api.call("GET", f"/v1/connections{query}")
            assert r.status == 200
            assert len(r.body["connections"]) <= 2
            seen += [c["name"] for c in r.body["connections"]]
            pages += 1
            cursor = r.body["next_cursor"]
            if cursor is None:
                break
        assert seen == [*names, "page-pending"]
        assert pages == 3
        pending = api.call("GET", "/v1/connections?prefix=page-&state=pending").body["connections"]
        assert [c["name"] for c in pending] == ["page-pending"]
        active = api.call("GET", "/v1/connections?prefix=page-&state=active").body["connections"]
        assert [c["name"] for c in active] == names
        everything = api.call("GET", "/v1/connections").body["connections"]
        assert "platform" in [c["name"] for c in everything]

    @pytest.mark.parametrize(("query", "field"), [
        ("limit=abc", "limit"), ("limit=0", "limit"), ("limit=1001", "limit"), ("state=gone", "state"),
        ("cursor=%25%25", "cursor"), ("colour=red", "colour"),
    ])
    def test_bad_list_parameters(self, api: Api, query: str, field: str) -> None:
        r = api.call("GET", f"/v1/connections?{query}")
        assert r.status == 422
        assert r.error["field"] == field

    def test_patch_is_a_merge_patch(self, api: Api) -> None:
        body = static(api.moto, "merge", secret=STATIC_SECRET, token=PROXY_TOKEN, service="s3")
        assert api.call("POST", "/v1/connections", body).status == 201
        r = api.call("PATCH", "/v1/connections/merge", {"credentials": {"session_token": SESSION_TOKEN}},
                     headers={"Content-Type": "application/merge-patch+json"})
        assert r.status == 200, r.body
        creds = r.body["credentials"]
        assert creds == {"source": "static", "access_key_id": api.moto.access_key, "secret_access_key": "***",
                         "session_token": "***"}
        assert "identity" not in r.body
        r = api.call("PATCH", "/v1/connections/merge", {"service": None, "credentials": {"session_token": None}})
        assert "service" not in r.body
        assert "session_token" not in r.body["credentials"]
        assert r.body["token"] == "***"
        # A client that read, edited and wrote the whole object back: "***" keeps the secret.
        whole = {**r.body, "region": "eu-west-1"}
        r = api.call("PATCH", "/v1/connections/merge", whole)
        assert r.status == 200, r.body
        assert r.body["region"] == "eu-west-1"

    @pytest.mark.parametrize(("body", "field"), [
        ({"hosts": ["127.0.0.1:*"], "credentials": {"source": "assume_role"}}, "name"),
        ({"name": "bad name!", "hosts": ["x"], "credentials": {"source": "assume_role"}}, "name"),
        ({"name": "v1", "credentials": {"source": "assume_role"}}, "hosts"),
        ({"name": "v2", "hosts": ["127.0.0.1:*"]}, "credentials"),
        ({"name": "v3", "hosts": ["127.0.0.1:*"], "credentials": {"source": "chain"}}, "credentials.source"),
        ({"name": "v4", "hosts": ["127.0.0.1:*"], "credentials": {"source": "assume_role", "role_arn": "nope"}},
         "credentials.role_arn"),
        ({"name": "v5", "hosts": ["127.0.0.1:*"], "credentials": {"source": "assume_role",
                                                                 "duration_seconds": 5}},
         "credentials.duration_seconds"),
        ({"name": "v6", "hosts": ["127.0.0.1:*"], "colour": "red", "credentials": {"source": "assume_role"}},
         "colour"),
        ({"name": "v7", "hosts": ["127.0.0.1:*"], "state": "active", "credentials": {"source": "assume_role"}},
         "state"),
        ({"name": "v8", "hosts": ["127.0.0.1:*"], "credentials": {"source": "static", "access_key_id": "A",
                                                                 "secret_access_key": "${env:HOME}"}},
         "credentials.secret_access_key"),
    ])
    def test_validation_errors_name_the_field(self, api: Api, body: dict[str, Any], field: str) -> None:
        r = api.call("POST", "/v1/connections", body)
        assert r.status == 422, r.body
        assert r.error["field"] == field, r.error
        assert r.error["message"]

    def test_bad_bodies(self, api: Api) -> None:
        r = api.call("POST", "/v1/connections", raw=b"{not json")
        assert (r.status, r.error["code"]) == (400, "bad_json")
        r = api.call("POST", "/v1/connections", raw=b"[1, 2]")
        assert (r.status, r.error["code"]) == (400, "bad_json")
        r = api.call("POST", "/v1/connections", raw=b"")
        assert r.status == 400
        r = api.call("POST", "/v1/connections", raw=b"{}", headers={"Content-Type": "text/plain"})
        assert r.status == 415
        r = api.call("POST", "/v1/connections", raw=b'{"name": "' + b"x" * (1024 * 1024) + b'"}')
        assert (r.status, r.error["code"]) == (413, "body_too_large")

    def test_unknown_route_and_method_are_json(self, api: Api) -> None:
        r = api.call("GET", "/v1/nothing")
        assert (r.status, r.error["code"]) == (404, "not_found")
        r = api.call("PUT", "/v1/connections", {})
        assert (r.status, r.error["code"]) == (405, "method_not_allowed")
        assert "GET" in r.headers["Allow"]


# ---------------------------------------------------------------------------------------------- onboarding


class TestOnboarding:
    def test_whole_flow_against_moto(self, api: Api) -> None:
        """Mint, trust policy, a role created in moto with it, a wrong role refused (AccessDenied, still pending),
        the right one validated (active, identity), a proxied S3 call as the role, /check, reconnect."""
        moto = api.moto
        r = api.call("POST", "/v1/connections", tenant(moto, "acme"),
                     headers={"X-Sigproxy-Actor": "alice\t" + "x" * 200})
        assert r.status == 201, r.body
        assert r.body["state"] == "pending"
        external_id = r.body["credentials"]["external_id"]
        assert uuid.UUID(external_id).version == 4
        assert "role_arn" not in r.body["credentials"]
        assert api.call("POST", "/v1/connections/acme/check").error["code"] == "pending"

        t = api.call("GET", "/v1/connections/acme/trust-policy")
        assert t.status == 200, t.body
        assert t.body["external_ids"] == [external_id]
        assert t.body["principal"] == moto.user_arn
        assert t.body["role_path"] == "/sigproxy-assumable/"
        statement = t.body["trust_policy"]["Statement"][0]
        assert statement["Principal"] == {"AWS": moto.user_arn}
        assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": external_id}}
        assert any("aws iam create-role" in c and "--path /sigproxy-assumable/" in c for c in t.body["aws_cli"])

        # The customer pasted another tenant's ExternalId: moto evaluates StringEquals on sts:ExternalId.
        wrong = json.loads(json.dumps(t.body["trust_policy"]))
        wrong["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] = "someone-elses-id"
        wrong_arn = customer_role(moto, wrong, t.body["role_path"])
        r = api.call("PATCH", "/v1/connections/acme", {"credentials": {"role_arn": wrong_arn}})
        assert r.status == 422, r.body
        assert r.error["code"] == "AccessDenied"
        assert r.error["field"] == "credentials.role_arn"
        assert external_id in r.error["message"]
        now = api.call("GET", "/v1/connections/acme").body
        assert now["state"] == "pending"
        assert "role_arn" not in now["credentials"]

        role_arn = customer_role(moto, t.body["trust_policy"], t.body["role_path"])
        r = api.call("PATCH", "/v1/connections/acme", {"credentials": {"role_arn": role_arn}},
                     headers={"Content-Type": "application/merge-patch+json"})
        assert r.status == 200, r.body
        assert r.body["state"] == "active"
        role_name = role_arn.rsplit("/", 1)[1]
        assert r.body["identity"]["arn"] == f"arn:aws:sts::{moto.account_id}:assumed-role/{role_name}/sigproxy-acme"
        assert r.body["credentials"]["external_id"] == external_id

        s3 = curl(api.proxy, "-H", "X-Sigproxy-Connection: acme", "-H", "X-Sigproxy-Service: s3",
                  f"{moto.endpoint}/")
        assert status_of(s3) == 200, s3
        assert moto.bucket in s3.stdout

        # The same connection signs for a program that sends its own request (temporary credentials + token).
        signed = api.call("POST", "/v1/sign", {"connection": "acme", "method": "GET", "url": f"{moto.endpoint}/",
                                               "service": "s3"})
        assert signed.status == 200, signed.body
        assert "X-Amz-Security-Token" in signed.body["headers"]
        assert moto.bucket in send(signed.body)

        c = api.call("POST", "/v1/connections/acme/check")
        assert c.body == {"ok": True, "arn": r.body["identity"]["arn"]}

        # Reconnect: the customer's role is gone (role_arn removed: pending again), then a new role trusting
        # the same ExternalId.
        r = api.call("PATCH", "/v1/connections/acme", {"credentials": {"role_arn": None}})
        assert (r.body["state"], r.body["credentials"]["external_id"]) == ("pending", external_id)
        again = api.call("GET", "/v1/connections/acme/trust-policy").body
        assert again["external_ids"] == [external_id]
        new_arn = customer_role(moto, again["trust_policy"], again["role_path"])
        r = api.call("PATCH", "/v1/connections/acme", {"credentials": {"role_arn": new_arn}})
        assert (r.status, r.body["state"]) == (200, "active")
        assert r.body["credentials"]["external_id"] == external_id

    def test_seeded_external_id_and_extra_ids(self, api: Api) -> None:
        body = tenant(api.moto, "nintex")
        body["credentials"]["external_id"] = "site-one"
        r = api.call("POST", "/v1/connections", body)
        assert r.body["credentials"]["external_id"] == "site-one"
        t = api.call("GET", "/v1/connections/nintex/trust-policy?external_id=site-two&external_id=site-three")
        assert t.body["external_ids"] == ["site-one", "site-two", "site-three"]
        condition = t.body["trust_policy"]["Statement"][0]["Condition"]["StringEquals"]
        assert condition == {"sts:ExternalId": ["site-one", "site-two", "site-three"]}
        t = api.call("GET", "/v1/connections/nintex/trust-policy?principal=111122223333")
        assert t.body["principal"] == "arn:aws:iam::111122223333:root"
        r = api.call("GET", "/v1/connections/nintex/trust-policy?principal=nobody")
        assert (r.status, r.error["field"]) == (422, "principal")
        r = api.call("GET", "/v1/connections/nintex/trust-policy?external_id=x")
        assert (r.status, r.error["field"]) == (422, "external_id")

    def test_cloudformation(self, api: Api) -> None:
        assert api.call("POST", "/v1/connections", tenant(api.moto, "cfn")).status == 201
        external_id = api.call("GET", "/v1/connections/cfn").body["credentials"]["external_id"]
        r = api.call("GET", "/v1/connections/cfn/cloudformation")
        assert r.status == 200, r.body
        template = r.body["template"]
        role = template["Resources"]["Role"]
        assert role["Type"] == "AWS::IAM::Role"
        assert role["Properties"]["Path"] == "/sigproxy-assumable/"
        condition = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]
        assert condition == {"StringEquals": {"sts:ExternalId": external_id}}
        assert template["Parameters"]["RoleName"]["Default"] == "sigproxy-cfn"
        assert template["Parameters"]["ManagedPolicyArns"]["Type"] == "CommaDelimitedList"
        assert template["Outputs"]["RoleArn"]["Value"] == {"Fn::GetAtt": ["Role", "Arn"]}
        assert r.body["parameters"] == [{"ParameterKey": "RoleName", "ParameterValue": "sigproxy-cfn"}]
        # The customer runs the template (moto's CloudFormation), then gives back the stack's RoleArn output.
        cfn = boto3.client("cloudformation", endpoint_url=api.moto.endpoint, region_name="us-east-1",
                           aws_access_key_id=api.moto.access_key, aws_secret_access_key=api.moto.secret_key)
        role_name = f"cfn-{uuid.uuid4().hex[:8]}"
        r = api.call("GET", f"/v1/connections/cfn/cloudformation?role_name={role_name}")
        cfn.create_stack(StackName=role_name, TemplateBody=json.dumps(r.body["template"]),
                         Parameters=r.body["parameters"], Capabilities=["CAPABILITY_NAMED_IAM"])
        stack = cfn.describe_stacks(StackName=role_name)["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        (output,) = stack["Outputs"]
        assert output["OutputValue"].endswith(f":role/sigproxy-assumable/{role_name}")
        r = api.call("PATCH", "/v1/connections/cfn", {"credentials": {"role_arn": output["OutputValue"]}})
        assert (r.status, r.body["state"]) == (200, "active"), r.body
        assert f"assumed-role/{role_name}/" in r.body["identity"]["arn"]
        r = api.call("GET", "/v1/connections/cfn/cloudformation?role_name=bad%20name")
        assert (r.status, r.error["field"]) == (422, "role_name")

    def test_trust_policy_of_a_static_connection(self, api: Api) -> None:
        r = api.call("GET", "/v1/connections/platform/trust-policy")
        assert (r.status, r.error["code"]) == (409, "not_assume_role")

    def test_check_failing(self, api: Api) -> None:
        assert api.call("POST", "/v1/connections", static(api.moto, "badkeys", secret="wrong-secret")).status == 201
        r = api.call("POST", "/v1/connections/badkeys/check")
        assert r.status == 200
        assert r.body["ok"] is False
        assert r.body["code"]
        assert r.body["message"]
        assert "wrong-secret" not in json.dumps(r.body)
        ok = api.call("POST", "/v1/connections/platform/check")
        assert ok.body == {"ok": True, "arn": api.moto.user_arn}
        assert api.call("POST", "/v1/connections/nobody/check").status == 404


def send(signed: dict[str, Any], method: str = "GET", data: bytes | None = None) -> str:
    """Send a /v1/sign answer as it is (as a program would) and return the response body; fails unless 200."""
    request = urllib.request.Request(signed["url"], data=data, method=method, headers=signed["headers"])
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return str(response.read().decode())


class TestSign:
    def test_headers_and_presigned_url_are_accepted_by_moto(self, api: Api) -> None:
        moto = api.moto
        r = api.call("POST", "/v1/sign", {"connection": "platform", "method": "POST", "url": f"{moto.endpoint}/",
                                          "service": "sts", "headers": {"Content-Type":
                                                                        "application/x-www-form-urlencoded"},
                                          "payload": "Action=GetCallerIdentity&Version=2011-06-15"})
        assert r.status == 200, r.body
        assert set(r.body) == {"url", "headers"}
        assert r.body["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
        body = send(r.body, "POST", b"Action=GetCallerIdentity&Version=2011-06-15")
        assert moto.user_arn in body
        r = api.call("POST", "/v1/sign", {"connection": "platform", "method": "GET", "host": moto.endpoint[7:],
                                          "scheme": "http", "path": f"/{moto.bucket}", "params": {"list-type": "2"},
                                          "service": "s3", "presign": 300})
        assert r.status == 200, r.body
        assert "X-Amz-Signature=" in r.body["url"]
        assert r.body["url"].startswith(f"{moto.endpoint}/{moto.bucket}?")
        # (moto with IAM checks on reads only the Authorization header: presigned URLs are sent to RGW in
        # tests/integration/test_sign_api.py.)

    def test_refusals(self, api: Api) -> None:
        moto = api.moto
        base = {"connection": "platform", "method": "GET", "url": f"{moto.endpoint}/", "service": "s3"}
        assert api.call("POST", "/v1/connections", tenant(moto, "sign-pending")).status == 201
        r = api.call("POST", "/v1/sign", {**base, "connection": "sign-pending"})
        assert (r.status, r.error["code"]) == (409, "pending")
        r = api.call("POST", "/v1/sign", {**base, "connection": "nobody"})
        assert (r.status, r.error["field"]) == (404, "name")
        r = api.call("POST", "/v1/sign", {k: v for k, v in base.items() if k != "connection"})
        assert (r.status, r.error["field"]) == (422, "connection")
        r = api.call("POST", "/v1/sign", {**base, "method": 7})
        assert (r.status, r.error["field"]) == (422, "method")
        r = api.call("POST", "/v1/sign", {**base, "presign": 10**9})
        assert (r.status, r.error["field"]) == (422, "presign")
        r = api.call("POST", "/v1/sign", {**base, "url": "https://example.com/"})
        assert (r.status, r.error["code"]) == (403, "host_not_allowed")


def test_without_onboarding_principal(moto: Moto, tmp_path: Path) -> None:
    """No [onboarding] principal and no ?principal=: 422 naming the config key."""
    proxy = start(tmp_path, f'[admin]\ntoken = "{TOKEN}"\n' + platform(moto))
    try:
        api = Api(proxy, moto)
        assert api.call("POST", "/v1/connections", tenant(moto, "t")).status == 201
        r = api.call("GET", "/v1/connections/t/trust-policy")
        assert (r.status, r.error["field"]) == (422, "principal")
        assert "[onboarding] principal" in r.error["message"]
        assert api.call("GET", "/v1/connections/t/trust-policy?principal=123456789012").status == 200
        assert api.call("GET", "/v1/connections/t/cloudformation").error["field"] == "principal"
    finally:
        proxy.stop()


# ---------------------------------------------------------------------------------------------- the CLI


class TestCli:
    def test_add_show_update_list_check_rm(self, api: Api) -> None:
        r = cli(api, "add", "cli-one", "--region", "us-east-1", "--host", "127.0.0.1:*", "--json",
                "--data", json.dumps({"sts_endpoint_url": api.moto.endpoint, "credentials": {"base": "platform"}}),
                "--source", "assume_role")
        assert r.returncode == 0, r.stderr
        made = json.loads(r.stdout)
        assert made["state"] == "pending"
        r = cli(api, "show", "cli-one")
        assert r.returncode == 0, r.stderr
        assert "state:" in r.stdout and "pending" in r.stdout
        assert "credentials.external_id:" in r.stdout
        r = cli(api, "update", "cli-one", "--data", '{"region": "eu-west-1"}', "--json")
        assert json.loads(r.stdout)["region"] == "eu-west-1"
        r = cli(api, "list", "--prefix", "cli-", "--limit", "1", "--all")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0].split()[:3] == ["NAME", "STATE", "ORIGIN"]
        assert "cli-one" in r.stdout
        r = cli(api, "list", "--state", "pending", "--all", "--json")
        assert "cli-one" in [c["name"] for c in json.loads(r.stdout)["connections"]]
        r = cli(api, "check", "cli-one")
        assert r.returncode == 1
        assert "pending" in r.stderr
        r = cli(api, "check", "platform")
        assert (r.returncode, r.stdout.split()[:2]) == (0, ["platform", "OK"])
        r = cli(api, "rm", "cli-one")
        assert (r.returncode, r.stdout.strip()) == (0, "deleted cli-one")

    def test_errors(self, api: Api, tmp_path: Path) -> None:
        r = cli(api, "add", "bad", "--data", '{"credentials": {"source": "chain"}, "hosts": ["x"]}')
        assert r.returncode == 1
        assert "invalid_field" in r.stderr and "(field: credentials.source)" in r.stderr
        r = cli(api, "add", "bad", "--data", "{nope")
        assert r.returncode == 2
        r = cli(api, "list", token="wrong-token-0123456789")
        assert r.returncode == 1
        assert "unauthorized" in r.stderr
        assert "wrong-token" not in r.stderr
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        r = cli(api, "list", "--token-file", str(token_file), token=None)
        assert r.returncode == 0, r.stderr
        r = cli(api, "list", "--url", "http://127.0.0.1:9", token=None)
        assert (r.returncode, "unreachable" in r.stderr) == (1, True)
        r = cli(api, "frobnicate")
        assert r.returncode == 2

    def test_entry_point(self, api: Api) -> None:
        """The installed command line: `python -m sigproxy connections list --json` with --url and --token."""
        r = subprocess.run([sys.executable, "-m", "sigproxy", "connections", "list", "--json", "--url", api.url,
                            "--token", TOKEN, "--prefix", "platform"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        assert [c["name"] for c in json.loads(r.stdout)["connections"]] == ["platform"]


# ---------------------------------------------------------------------------------------------- last: secrets


def test_zz_no_secret_in_any_answer_or_log(api: Api) -> None:
    """Every answer this module received, and everything the process wrote (audit lines included), lacks the
    secrets sent in (static keys, proxy token, session token) and the admin token."""
    assert api.seen
    out = "".join(api.proxy.output)
    assert "sigproxy.audit" in out or "actor=" in out
    assert re.search(r'actor=\\"api 127\.0\.0\.1 alicex{123}\\"', out)  # printable only, 128 characters
    for secret in (STATIC_SECRET, PROXY_TOKEN, SESSION_TOKEN, TOKEN, api.moto.secret_key, "wrong-secret"):
        for text in api.seen:
            assert secret not in text
        assert secret not in out, secret
