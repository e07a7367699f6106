"""``user_header = true``: the end user's ``X-Sigproxy-User`` id becomes the role session name (and source
identity, session policy, tags) per user, cached per user -- against moto's real STS (its IAM checks on), a
recording STS that shows the exact AssumeRole parameters, and the custom STS endpoint stand-in."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Proxy
from tests.errorbody import error_body
from tests.integration.test_moto_clients import curl, status_of
from tests.servers.moto_server import EXTERNAL_ID, Moto
from tests.servers.sts_endpoint import StsEndpoint, start_sts_endpoint

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
USER = "${sigproxy:user}"
AUTH0 = "google-oauth2|113015401123457192604"  # an Auth0 subject: connection|id


def whoami(proxy: Proxy, endpoint: str, connection: str, *user: str, extra: tuple[str, ...] = ()
           ) -> Any:
    """STS GetCallerIdentity through the proxy with ``X-Sigproxy-User: user`` (none if not given)."""
    headers = [a for u in user for a in ("-H", f"X-Sigproxy-User: {u}")]
    return curl(proxy, "-i", "-H", f"X-Sigproxy-Connection: {connection}", "-H", "X-Sigproxy-Service: sts",
                *headers, *extra, "--data", "Action=GetCallerIdentity&Version=2011-06-15", f"{endpoint}/")


def metric(proxy: Proxy, name: str) -> float:
    assert proxy.admin is not None
    admin = proxy.admin if proxy.admin.startswith("http") else f"http://{proxy.admin}"
    with NO_PROXY.open(f"{admin}/metrics", timeout=15) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, text
    return float(m.group(1))


def access_log(proxy: Proxy, expected: int = 0) -> list[dict[str, Any]]:
    """The access lines so far (waiting up to 10 s for ``expected`` of them: each is written just after its
    response)."""
    deadline = time.monotonic() + 10
    while len(_access_lines(proxy)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return _access_lines(proxy)


def _access_lines(proxy: Proxy) -> list[dict[str, Any]]:
    entries = []
    for line in proxy.output:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("logger") == "sigproxy.access":
            entries.append(entry)
    return entries


def moto_tenant(moto: Moto, extra: str = "") -> str:
    """A static platform connection and a per-user ``tenant`` assuming moto's tenant role."""
    return f"""
[connections.platform]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
sts_endpoint_url = "{moto.endpoint}"
[connections.platform.credentials]
source = "static"
access_key_id = "{moto.access_key}"
secret_access_key = "{moto.secret_key}"

[connections.tenant]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
sts_endpoint_url = "{moto.endpoint}"
user_header = true
[connections.tenant.credentials]
source = "assume_role"
role_arn = "{moto.role_arn}"
external_id = "{EXTERNAL_ID}"
base = "platform"
{extra}
"""


def sha(user: str) -> str:
    """The first 16 hex digits of SHA-256 of the id's UTF-8 bytes: the suffix of a mapped id."""
    return hashlib.sha256(user.encode()).hexdigest()[:16]


def bad_request(r: Any) -> dict[str, Any]:
    assert status_of(r) == 400, r
    assert re.search(r"^X-Sigproxy-Error: bad_request\r?$", r.stdout, re.M | re.I), r.stdout
    body = re.split(r"\r?\n\r?\n", r.stdout.rsplit("\n", 1)[0], maxsplit=1)[1]
    error = error_body(body)
    assert error["format"] == "query" and error["aws_code"] == "SigproxyBadRequest", error  # STS's protocol
    return error


class TestMoto:
    def test_session_per_user_cached_per_user(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """alice and bob each act as their own role session (two AssumeRole calls); alice again is a cache hit."""
        proxy = sigproxy_factory(moto_tenant(moto), admin=True)
        account = moto.account_id
        r = whoami(proxy, moto.endpoint, "tenant", "alice")
        assert status_of(r) == 200, r
        assert f"<Arn>arn:aws:sts::{account}:assumed-role/tenant/alice</Arn>" in r.stdout
        r = whoami(proxy, moto.endpoint, "tenant", "bob")
        assert status_of(r) == 200, r
        assert f"<Arn>arn:aws:sts::{account}:assumed-role/tenant/bob</Arn>" in r.stdout
        assert metric(proxy, "sigproxy_credential_fetches_total") == 2
        r = whoami(proxy, moto.endpoint, "tenant", "alice")
        assert status_of(r) == 200 and "assumed-role/tenant/alice</Arn>" in r.stdout
        assert metric(proxy, "sigproxy_credential_fetches_total") == 2
        log = [(e.get("user"), e.get("cred_cache"), e.get("status")) for e in access_log(proxy, 3)]
        assert log == [("alice", "miss", 200), ("bob", "miss", 200), ("alice", "hit", 200)]

    def test_audit_fields_in_the_access_line(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """Who (client address, connection, how selected), what (service, region, method, host, path with the
        query's keys but not its values) and as whom (role ARN and session name; key id for static keys)."""
        proxy = sigproxy_factory(moto_tenant(moto))
        assert status_of(whoami(proxy, moto.endpoint, "tenant", "alice")) == 200
        r = curl(proxy, "-H", "X-Sigproxy-Connection: platform", "-H", "X-Sigproxy-Service: s3",
                 f"{moto.endpoint}/{moto.bucket}?list-type=2&prefix=private-value-42")
        assert status_of(r) == 200, r
        tenant, platform = access_log(proxy, 2)[-2:]
        assert tenant["client"] == "127.0.0.1" and tenant["selected_by"] == "header"
        assert (tenant["connection"], tenant["service"], tenant["method"]) == ("tenant", "sts", "POST")
        assert tenant["role_arn"] == moto.role_arn and tenant["session_name"] == "alice"
        assert tenant["user"] == "alice" and tenant["path"] == "/"
        assert platform["path"] == f"/{moto.bucket}?list-type&prefix"
        assert platform["key_id"] == moto.access_key and "role_arn" not in platform
        assert (platform["service"], platform["region"], platform["host"]) == ("s3", "us-east-1", "127.0.0.1")
        assert "private-value-42" not in "".join(proxy.output)

    def test_identity_provider_ids_each_get_their_own_session(self, moto: Moto,
                                                              sigproxy_factory: Callable[..., Proxy]) -> None:
        """An Auth0 subject, an email address and a non-ASCII name (UTF-8 header bytes) each act as their own
        role session at moto; the session name is the id where STS takes it, else a readable form plus the
        first 16 hex of SHA-256 of the id; the access log has the exact id."""
        proxy = sigproxy_factory(moto_tenant(moto), admin=True)
        users = {
            AUTH0: f"google-oauth2_113015401123457192604-{sha(AUTH0)}",
            "jane.doe+aws@example.com": "jane.doe+aws@example.com",
            "Zoë Ångström": f"Zoe_Angstrom-{sha('Zoë Ångström')}",
            "Zoë_Ångström": f"Zoe_Angstrom-{sha('Zoë_Ångström')}",
        }
        for user, name in users.items():
            r = whoami(proxy, moto.endpoint, "tenant", user)
            assert status_of(r) == 200, r
            assert f"<Arn>arn:aws:sts::{moto.account_id}:assumed-role/tenant/{name}</Arn>" in r.stdout
        assert metric(proxy, "sigproxy_credential_fetches_total") == len(users)
        assert status_of(whoami(proxy, moto.endpoint, "tenant", "Zoë Ångström")) == 200
        assert metric(proxy, "sigproxy_credential_fetches_total") == len(users)  # cached under the exact id
        log = [(e["user"], e["session_name"], e["cred_cache"]) for e in access_log(proxy, len(users) + 1)]
        assert log == [(u, n, "miss") for u, n in users.items()] + [("Zoë Ångström", users["Zoë Ångström"], "hit")]

    def test_missing_or_invalid_id_is_400_without_sts(self, moto: Moto,
                                                      sigproxy_factory: Callable[..., Proxy]) -> None:
        """No X-Sigproxy-User, an empty one, one sent twice, over 1024 bytes, with a control character or not
        UTF-8: 400 bad_request, and STS is never asked. Ids refused before (spaces, 65 characters, non-ASCII,
        one character) now pass."""
        proxy = sigproxy_factory(moto_tenant(moto), admin=True)
        err = bad_request(whoami(proxy, moto.endpoint, "tenant"))
        assert err["message"] == "connection 'tenant' needs X-Sigproxy-User: ID (user_header = true)"
        empty = whoami(proxy, moto.endpoint, "tenant", extra=("-H", "X-Sigproxy-User;"))
        assert "needs X-Sigproxy-User" in bad_request(empty)["message"]
        twice = bad_request(whoami(proxy, moto.endpoint, "tenant", "alice", "bob"))["message"]
        assert twice == "X-Sigproxy-User was sent 2 times; send the end user's id once"
        long = bad_request(whoami(proxy, moto.endpoint, "tenant", "ü" * 513))["message"]
        assert long == "X-Sigproxy-User is 1026 bytes long; an id has at most 1024 (UTF-8)"
        tab = bad_request(whoami(proxy, moto.endpoint, "tenant", "a\tb"))["message"]
        assert tab == "X-Sigproxy-User has a control character (U+0009) at position 2"
        latin1 = bad_request(whoami(proxy, moto.endpoint, "tenant", os.fsdecode(b"m\xfcller")))["message"]
        assert latin1 == "X-Sigproxy-User is not UTF-8 (byte 2); send the id as UTF-8 bytes"
        assert metric(proxy, "sigproxy_credential_fetches_total") == 0
        assert metric(proxy, "sigproxy_credential_cache_misses_total") == 0
        for user in ("a b", "x" * 65, "ü", "a", "x" * 1024):
            assert status_of(whoami(proxy, moto.endpoint, "tenant", user)) == 200, user

    def test_other_connections_ignore_the_header(self, moto: Moto, sigproxy_factory: Callable[..., Proxy]) -> None:
        """Without user_header the header changes nothing (and is never forwarded); the connections' health
        check resolves a user_header connection without a user."""
        proxy = sigproxy_factory(moto_tenant(moto), admin=True)
        r = whoami(proxy, moto.endpoint, "platform", "alice")
        assert status_of(r) == 200 and moto.user_arn in r.stdout
        assert "user" not in access_log(proxy, 1)[-1]
        assert proxy.admin is not None
        admin = proxy.admin if proxy.admin.startswith("http") else f"http://{proxy.admin}"
        with NO_PROXY.open(f"{admin}/health/connections", timeout=30) as resp:
            assert json.loads(resp.read())["connections"] == {"platform": "ok", "tenant": "ok"}


# ------------------------------------------------------------------ what exactly reaches STS


POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": "s3:*",
    "Resource": [f"arn:aws:s3:::data/home/{USER}/*", "arn:aws:s3:::data/team/${aws:username}/*"]}]})


def recorded_config(url: str, *, chained: bool = False) -> str:
    text = f"""
[connections.base]
region = "eu-west-1"
hosts = ["127.0.0.1:*"]
[connections.base.credentials]
source = "static"
access_key_id = "AKIDBASE"
secret_access_key = "base-secret"

[connections.acme]
region = "eu-west-1"
hosts = ["127.0.0.1:*"]
sts_endpoint_url = "{url}"
user_header = true
[connections.acme.credentials]
source = "assume_role"
role_arn = "arn:aws:iam::111122223333:role/sigproxy-assumable/acme"
session_name = "app-{USER}"
source_identity = "{USER}"
policy = '{POLICY}'
base = "base"
[connections.acme.credentials.tags]
end-user = "{USER}"
tier = "gold"
"""
    if chained:
        text += f"""
[connections.hop]
region = "eu-west-1"
hosts = ["127.0.0.1:*"]
sts_endpoint_url = "{url}"
user_header = true
[connections.hop.credentials]
source = "assume_role"
role_arn = "arn:aws:iam::111122223333:role/sigproxy-assumable/hop"
base = "acme"
"""
    return text


def test_assume_role_parameters_per_user(recording_sts: tuple[str, list[dict[str, Any]]],
                                         sigproxy_factory: Callable[..., Proxy]) -> None:
    """RoleSessionName, SourceIdentity, the session policy and tag values carry the id; IAM's own
    ${aws:username} reaches STS literally; X-Sigproxy-User itself never goes upstream."""
    url, calls = recording_sts
    proxy = sigproxy_factory(recorded_config(url))
    r = whoami(proxy, url, "acme", "alice")
    assert status_of(r) == 200, r
    assert "assumed-role/r/app-alice</Arn>" in r.stdout
    (assume,) = [c for c in calls if c["Action"] == ["AssumeRole"]]
    assert assume["RoleSessionName"] == ["app-alice"]
    assert assume["SourceIdentity"] == ["alice"]
    (policy,) = assume["Policy"]
    assert "${aws:username}" in policy and USER not in policy
    assert json.loads(policy)["Statement"][0]["Resource"] == [
        "arn:aws:s3:::data/home/alice/*", "arn:aws:s3:::data/team/${aws:username}/*"]
    assert (assume["Tags.member.1.Key"], assume["Tags.member.1.Value"]) == (["end-user"], ["alice"])
    assert (assume["Tags.member.2.Key"], assume["Tags.member.2.Value"]) == (["tier"], ["gold"])
    assert "Credential=AKIDBASE/" in assume["_authorization"]
    (forwarded,) = [c for c in calls if c["Action"] == ["GetCallerIdentity"]]
    assert "Credential=ASIAapp-alice/" in forwarded["_authorization"]
    assert not [h for h in forwarded["_headers"] if h.startswith("x-sigproxy-")], forwarded["_headers"]
    assert "x-sigproxy-user" not in forwarded["_authorization"].lower()  # not signed either

    assert status_of(whoami(proxy, url, "acme", "bob")) == 200
    sessions = [c["RoleSessionName"][0] for c in calls if c["Action"] == ["AssumeRole"]]
    assert sessions == ["app-alice", "app-bob"]


def test_assume_role_parameters_for_identity_provider_ids(recording_sts: tuple[str, list[dict[str, Any]]],
                                                          sigproxy_factory: Callable[..., Proxy]) -> None:
    """Each field gets the id in its own STS rule: the tag value the exact id where tag characters allow it
    (not '|' or '"'), session name and source identity the mapped name, the policy the mapped name as one
    plain path segment (a hostile id can't widen it)."""
    url, calls = recording_sts
    proxy = sigproxy_factory(recorded_config(url))
    hostile = 'x"}],"Resource":"*'
    cases = [  # id, RoleSessionName without "app-", tag value
        (AUTH0, f"google-oauth2_113015401123457192604-{sha(AUTH0)}",
         f"google-oauth2_113015401123457192604-{sha(AUTH0)}"),
        ("Zoë Ångström", f"Zoe_Angstrom-{sha('Zoë Ångström')}", "Zoë Ångström"),
        ("jane doe@example.com", f"jane_doe@example.com-{sha('jane doe@example.com')}", "jane doe@example.com"),
        (hostile, f"x___,_Resource____-{sha(hostile)}", f"x_____Resource_:__-{sha(hostile)}"),
    ]
    for user, name, _ in cases:
        r = whoami(proxy, url, "acme", user)
        assert status_of(r) == 200, r
        assert f"assumed-role/r/app-{name}</Arn>" in r.stdout
    assumed = [c for c in calls if c["Action"] == ["AssumeRole"]]
    assert len(assumed) == len(cases)
    for call, (_, name, tag) in zip(assumed, cases, strict=True):
        assert call["RoleSessionName"] == [f"app-{name}"] and call["SourceIdentity"] == [name]
        assert (call["Tags.member.1.Key"], call["Tags.member.1.Value"]) == (["end-user"], [tag])
        (statement,) = json.loads(call["Policy"][0])["Statement"]
        assert statement["Resource"] == [f"arn:aws:s3:::data/home/{name}/*",
                                         "arn:aws:s3:::data/team/${aws:username}/*"]
    assert [e["user"] for e in access_log(proxy, len(cases))] == [user for user, _, _ in cases]


def test_role_chain_base_is_fetched_without_a_user(recording_sts: tuple[str, list[dict[str, Any]]],
                                                   sigproxy_factory: Callable[..., Proxy]) -> None:
    """A user_header connection as another's base: the base session is the stand-in user "sigproxy", fetched
    once; the chained session is per user."""
    url, calls = recording_sts
    proxy = sigproxy_factory(recorded_config(url, chained=True))
    for user in ("alice", "bob"):
        r = whoami(proxy, url, "hop", user)
        assert status_of(r) == 200, r
        assert f"assumed-role/r/{user}</Arn>" in r.stdout
    assumed = [(c["RoleArn"][0].rsplit("/", 1)[1], c["RoleSessionName"][0], c.get("SourceIdentity"))
               for c in calls if c["Action"] == ["AssumeRole"]]
    assert assumed == [("acme", "app-sigproxy", ["sigproxy"]), ("hop", "alice", None), ("hop", "bob", None)]
    hops = [c for c in calls if c["Action"] == ["AssumeRole"] and c["RoleArn"][0].endswith("/hop")]
    assert all("Credential=ASIAapp-sigproxy/" in c["_authorization"] for c in hops)


# ------------------------------------------------------------------ the custom STS endpoint


@pytest.fixture
def sts_endpoint(moto: Moto) -> Iterator[StsEndpoint]:
    endpoint, stop = start_sts_endpoint(auth=("api_key", "X-Api-Key", "test-api-key"))
    endpoint.credentials = (moto.access_key, moto.secret_key, None)
    try:
        yield endpoint
    finally:
        stop()


def test_sts_endpoint_receives_the_user(moto: Moto, sts_endpoint: StsEndpoint,
                                        sigproxy_factory: Callable[..., Proxy]) -> None:
    """sts_endpoint with user_header: the POSTed JSON carries "user"; each user is fetched (and cached) apart."""
    proxy = sigproxy_factory(f"""
[connections.custom]
region = "us-east-1"
hosts = ["127.0.0.1:*"]
user_header = true
[connections.custom.credentials]
source = "sts_endpoint"
url = "{sts_endpoint.url}"
role_arn = "arn:aws:iam::123456789012:role/customer"
external_id = "ext-777"
auth = "api_key"
api_key = "test-api-key"
""")
    for user in ("alice", "bob", "alice", AUTH0, "Zoë Ångström"):
        r = whoami(proxy, moto.endpoint, "custom", user)
        assert status_of(r) == 200, r
    bad_request(whoami(proxy, moto.endpoint, "custom"))
    bodies = [c["body"] for c in sts_endpoint.calls]
    base = {"role_arn": "arn:aws:iam::123456789012:role/customer", "external_id": "ext-777",
            "region": "us-east-1", "service": None}
    # the endpoint is ours: it gets the exact id
    assert bodies == [{**base, "user": u} for u in ("alice", "bob", AUTH0, "Zoë Ångström")]
