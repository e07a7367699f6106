"""sigproxy.connection: one parser for file and store connections, their JSON form, and the store's rules;
sigproxy.control.merge_patch (RFC 7396)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from sigproxy.config import loads
from sigproxy.configtable import Table
from sigproxy.connection import (
    SECRET_PATHS,
    SECRET_SHOWN,
    ConnectionConfig,
    connection_json,
    parse_connection,
)
from sigproxy.control import merge_patch
from sigproxy.errors import ConfigError
from sigproxy.hostglobs import ANSWERS_KEPT, compile_host_globs

SECRETS = {
    ("token",): "proxy-password-123456",
    ("client_secret",): "client-secret-abcdef",
    ("credentials", "secret_access_key"): "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ("credentials", "session_token"): "FwoGZXIvYXdzEXAMPLESESSIONTOKEN",
    ("credentials", "api_key"): "api-key-0123456789",
    ("credentials", "password"): "endpoint-password-xyz",
}

RICH = """
[connections.static]
region = "eu-west-1"
service = "s3"
hosts = ["*.amazonaws.com", "127.0.0.1:*"]
token = "proxy-password-123456"
client_secret = "client-secret-abcdef"
sts_endpoint_url = "http://127.0.0.1:5000"
upstream_scheme = "https"
verify_tls = false
s3_payload = "unsigned"
allowed_services = ["s3"]
allowed_regions = ["eu-west-1"]
read_only = true
deny_amz_headers = ["x-amz-acl"]
presigned = "passthrough"
private_networks = ["10.0.0.0/8"]
[connections.static.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
session_token = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"

[connections.role]
hosts = ["*.amazonaws.com"]
require_role_path = "/sigproxy-assumable/"
user_header = true
[connections.role.credentials]
source = "assume_role"
role_arn = "arn:aws:iam::111122223333:role/sigproxy-assumable/tenant"
external_id = "ext-1234"
source_identity = "${sigproxy:user}"
duration_seconds = 1800
policy = '{"Version": "2012-10-17", "Statement": []}'
policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
transitive_tag_keys = ["tenant"]
base = "static"
[connections.role.credentials.tags]
tenant = "acme"
user = "${sigproxy:user}"

[connections.endpoint]
hosts = ["*.amazonaws.com"]
[connections.endpoint.credentials]
source = "sts_endpoint"
url = "https://sts.example.com/credentials"
role_arn = "arn:aws:iam::111122223333:role/tenant"
auth = "basic"
username = "me"
password = "endpoint-password-xyz"

[connections.keyed]
hosts = ["*.amazonaws.com"]
[connections.keyed.credentials]
source = "sts_endpoint"
url = "https://sts.example.com/credentials"
role_arn = "arn:aws:iam::111122223333:role/tenant"
auth = "api_key"
api_key = "api-key-0123456789"
"""


def _put(table: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    node = table
    for key in path[:-1]:
        node = node[key]
    if path[-1] in node:
        node[path[-1]] = value


def store_parse(name: str, data: dict[str, Any]) -> ConnectionConfig:
    return parse_connection(name, Table(data, "", {}, references=False), origin="store")


@pytest.mark.parametrize("name", ["static", "role", "endpoint", "keyed"])
def test_json_round_trip(name: str) -> None:
    """connection_json's table, secrets given back, parses to an equal connection; secrets show as ***."""
    conn = loads(RICH).connections[name]
    shown = connection_json(conn)
    text = json.dumps(shown)
    for secret in SECRETS.values():
        assert secret not in text
    assert shown["name"] == name and shown["origin"] == "file" and shown["state"] == "active"
    table = json.loads(text)
    for key in ("name", "origin", "state"):
        del table[key]
    for path, secret in SECRETS.items():
        _put(table, path, secret)
    again = parse_connection(name, Table(table, "", {}))
    assert again == conn


def test_every_secret_path_masked() -> None:
    """Every key in SECRET_PATHS is shown as *** wherever a connection of the rich config holds it."""
    config = loads(RICH)
    seen = set()
    for conn in config.connections.values():
        shown = connection_json(conn)
        for path in SECRET_PATHS:
            node: Any = shown
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if node is not None:
                assert node == SECRET_SHOWN
                seen.add(path)
    assert seen == set(SECRET_PATHS)


def test_store_pending_assume_role() -> None:
    conn = store_parse("acme", {"hosts": ["*.amazonaws.com"],
                                "credentials": {"source": "assume_role", "external_id": "ext-1"}})
    assert conn.state == "pending" and conn.origin == "store" and conn.credentials.role_arn is None
    active = store_parse("acme", {"hosts": ["*.amazonaws.com"], "credentials": {
        "source": "assume_role", "external_id": "ext-1", "role_arn": "arn:aws:iam::111122223333:role/x"}})
    assert active.state == "active"


@pytest.mark.parametrize("source", ["chain", "web_identity"])
def test_store_refuses_host_sources(source: str) -> None:
    with pytest.raises(ConfigError) as info:
        store_parse("acme", {"hosts": ["*.amazonaws.com"], "credentials": {"source": source}})
    assert info.value.path == "credentials.source"
    assert "config file" in info.value.problem


@pytest.mark.parametrize(("path", "data"), [
    ("credentials.secret_access_key", {"source": "static", "access_key_id": "AKID",
                                       "secret_access_key": "${env:HOME}"}),
    ("credentials.external_id", {"source": "assume_role", "external_id": "${file:/etc/passwd}"}),
])
def test_store_refuses_references(path: str, data: dict[str, str]) -> None:
    """API input can't read the proxy host's environment or files through ${env:}/${file:}."""
    with pytest.raises(ConfigError) as info:
        store_parse("acme", {"hosts": ["*.amazonaws.com"], "credentials": data})
    assert info.value.path == path
    assert "config file" in info.value.problem


def test_file_pending_refused() -> None:
    """Only store connections may be pending: a file assume_role needs its role_arn."""
    with pytest.raises(ConfigError) as info:
        loads('[connections.a]\nhosts = ["*.amazonaws.com"]\n[connections.a.credentials]\nsource = "assume_role"\n')
    assert info.value.path == "connections.a.credentials.role_arn"


@pytest.mark.parametrize(("target", "patch", "result"), [
    ({"a": 1}, {"a": 2}, {"a": 2}),
    ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),
    ({"c": {"x": 1, "y": 2}}, {"c": {"y": None, "z": 3}}, {"c": {"x": 1, "z": 3}}),
    ({"c": {"x": 1}}, {"c": [1, 2]}, {"c": [1, 2]}),
    ({"c": [1]}, {"c": {"x": 1}}, {"c": {"x": 1}}),
    ({}, {"a": {"b": None}}, {"a": {}}),
    ({"a": "x"}, {"a": {"b": "c"}}, {"a": {"b": "c"}}),
])
def test_merge_patch_rfc7396(target: dict[str, Any], patch: dict[str, Any], result: dict[str, Any]) -> None:
    """Examples from RFC 7396 appendix A (a subset) and nested merges."""
    before = json.dumps(target)
    assert merge_patch(target, patch) == result
    assert json.dumps(target) == before  # the target is not modified


def test_allows_keeps_its_answers_and_stays_bounded() -> None:
    """ConnectionConfig.allows answers from what its HostSet kept as the glob match would, case-insensitively,
    and keeps at most ANSWERS_KEPT answers however many hosts a client makes up."""
    conn = loads('[connections.c]\nregion = "us-east-1"\nhosts = ["*.s3.amazonaws.com", "127.0.0.1:9000", '
                 '"[::1]:*"]\n[connections.c.credentials]\nsource = "chain"\n').connections["c"]
    pattern: re.Pattern[str] = compile_host_globs(conn.hosts)
    cases = [("b.s3.amazonaws.com", 443), ("B.S3.AMAZONAWS.COM", 443), ("s3.amazonaws.com", 443),
             ("127.0.0.1", 9000), ("127.0.0.1", 9001), ("::1", 1), ("evil.com", 443)]
    for _ in range(2):  # the second round answers from what the first kept
        for host, port in cases:
            assert conn.allows(host, port) is (pattern.fullmatch(f"{host.lower()}:{port}") is not None)
    assert conn.allows("B.S3.AMAZONAWS.COM", 443) and not conn.allows("evil.com", 443)
    assert conn.host_set.kept == len(cases)
    for n in range(3 * ANSWERS_KEPT):
        conn.allows(f"h{n}.example", 443)
        assert conn.host_set.kept <= ANSWERS_KEPT
    assert conn.allows("b.s3.amazonaws.com", 443) and not conn.allows("evil.com", 443)
