"""The WebSocket handshake rules (:mod:`sigproxy.websocket`): which upgrades are relayed, how each service's
handshake is signed, and the hop-by-hop headers put back; and IoT's presigned form checked against botocore."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from multidict import CIMultiDict

from sigproxy.config import loads
from sigproxy.errors import BadRequest, PolicyRefused, UnsupportedRequest
from sigproxy.prepare import presign_request
from sigproxy.routing import Target, check_policy
from sigproxy.signing import Credentials, Signer
from sigproxy.websocket import (
    is_websocket_switch,
    signing_for,
    switch_response_headers,
    upgrade_request_headers,
    websocket_upgrade,
)

HANDSHAKE = {"Host": "x.execute-api.us-east-1.amazonaws.com", "Upgrade": "websocket", "Connection": "Upgrade",
             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}


def headers(**changes: str | None) -> CIMultiDict[str]:
    out = CIMultiDict(HANDSHAKE)
    for key, value in changes.items():
        name = key.replace("_", "-")
        out.popall(name, None)
        if value is not None:
            out[name] = value
    return out


class TestWebsocketUpgrade:
    def test_a_plain_request_is_not_one(self) -> None:
        assert websocket_upgrade("GET", "1.1", headers(Upgrade=None), body=False) is False

    @pytest.mark.parametrize("connection", ["Upgrade", "keep-alive, Upgrade", "upgrade", "Keep-Alive,upgrade"])
    @pytest.mark.parametrize("upgrade", ["websocket", "WebSocket", " websocket "])
    def test_a_handshake_is_one(self, connection: str, upgrade: str) -> None:
        assert websocket_upgrade("GET", "1.1", headers(Connection=connection, Upgrade=upgrade), body=False)

    @pytest.mark.parametrize("upgrade", ["h2c", "HTTP/2.0", "websocket, h2c", "TLS/1.2", "foo"])
    def test_other_upgrades_are_refused_as_before(self, upgrade: str) -> None:
        with pytest.raises(UnsupportedRequest, match="send the request without Upgrade"):
            websocket_upgrade("GET", "1.1", headers(Upgrade=upgrade), body=False)

    def test_h2c_gets_the_curl_hint(self) -> None:
        with pytest.raises(UnsupportedRequest, match=r"curl: drop --http2"):
            websocket_upgrade("GET", "1.1", headers(Upgrade="h2c"), body=False)

    def test_repeated_upgrade_headers_are_all_named(self) -> None:
        """``Upgrade: websocket`` and ``Upgrade: h2c`` on two lines: the refusal names both (not "websocket
        is not proxied") and gives the h2c hint."""
        both = headers()
        both.add("Upgrade", "h2c")
        with pytest.raises(UnsupportedRequest, match=r"\(websocket, h2c\) are not proxied.*curl: drop --http2"):
            websocket_upgrade("GET", "1.1", both, body=False)

    @pytest.mark.parametrize(("method", "version", "body", "connection", "words"), [
        ("POST", "1.1", False, "Upgrade", "GET over HTTP/1.1"),
        ("GET", "1.0", False, "Upgrade", "GET over HTTP/1.1"),
        ("GET", "1.1", True, "Upgrade", "no body"),
        ("GET", "1.1", False, "keep-alive", "Connection: Upgrade"),
        ("GET", "1.1", False, None, "Connection: Upgrade"),
    ])
    def test_handshakes_rfc6455_forbids_are_bad_requests(self, method: str, version: str, body: bool,
                                                         connection: str | None, words: str) -> None:
        with pytest.raises(BadRequest, match=words):
            websocket_upgrade(method, version, headers(Connection=connection), body=body)


class TestSigningFor:
    def test_iot_data_endpoints_take_a_presigned_url_for_the_device_gateway(self) -> None:
        how = signing_for("iotdata")
        assert (how.service, how.form, how.token_after_signing) == ("iotdevicegateway", "query", True)
        assert signing_for("iotdevicegateway") == how

    @pytest.mark.parametrize("service", ["execute-api", "appsync", "s3", "es"])
    def test_others_take_header_auth(self, service: str) -> None:
        how = signing_for(service)
        assert (how.service, how.form, how.token_after_signing) == (service, "header", False)


def test_upgrade_headers_go_back_on_unsigned() -> None:
    assert upgrade_request_headers(headers()) == [("Connection", "Upgrade"), ("Upgrade", "websocket")]


def test_the_switch_keeps_end_to_end_headers_and_sets_the_hop_by_hop_ones() -> None:
    upstream = [("Upgrade", "websocket"), ("Connection", "upgrade"),
                ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), ("Sec-WebSocket-Protocol", "mqtt"),
                ("Keep-Alive", "timeout=5"), ("X-Amzn-RequestId", "r1")]
    assert switch_response_headers(upstream) == [
        ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), ("Sec-WebSocket-Protocol", "mqtt"),
        ("X-Amzn-RequestId", "r1"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]


@pytest.mark.parametrize(("status", "upgrade", "switched"), [
    (101, "websocket", True), (101, "WebSocket", True), (101, "h2c", False), (200, "websocket", False),
    (403, None, False)])
def test_only_a_101_to_websocket_switches(status: int, upgrade: str | None, switched: bool) -> None:
    given = [("Upgrade", upgrade)] if upgrade else []
    assert is_websocket_switch(status, given) is switched


def test_iot_presigned_url_matches_botocore_with_the_token_appended_after() -> None:
    """botocore's SigV4QueryAuth signs the same URL without a token; sigproxy's is that URL with the token
    appended (AWS IoT's rule), so the signature is botocore's own."""
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "tok/en+==")
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    host = "abc123-ats.iot.eu-west-1.amazonaws.com"
    signed = presign_request(Signer(), creds, method="GET", target=Target("https", host, 443, "/mqtt", ""),
                             headers=[("Host", host), ("Sec-WebSocket-Key", "k"), ("Sec-WebSocket-Protocol", "mqtt")],
                             service="iotdevicegateway", region="eu-west-1", now=now, expires=300,
                             token_after_signing=True)
    query = signed.url.split("?", 1)[1]
    assert query.endswith("&X-Amz-Security-Token=tok%2Fen%2B%3D%3D")
    without_token = query.rsplit("&X-Amz-Security-Token=", 1)[0]
    assert "X-Amz-Security-Token" not in without_token

    request = AWSRequest("GET", f"https://{host}/mqtt", headers={"Host": host})
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=now.replace(tzinfo=None)):
        SigV4QueryAuth(BotoCredentials(creds.access_key_id, creds.secret_access_key), "iotdevicegateway",
                       "eu-west-1", expires=300).add_auth(request)
    assert dict(parse_qsl(urlsplit(request.url).query)) == dict(parse_qsl(without_token))


@pytest.mark.parametrize(("policy", "refused"), [
    ("read_only = true", "read_only"),
    ('allowed_methods = ["GET", "HEAD", "OPTIONS"]', "allowed_methods"),
    ('allowed_methods = ["GET", "POST"]', None),
    ("", None),
])
def test_a_websocket_needs_a_connection_that_may_write(policy: str, refused: str | None) -> None:
    """A WebSocket's messages may write whatever its handshake's method: a connection that signs no write method
    refuses the handshake (fail closed), naming its rule; a plain GET on it is still fine."""
    config = loads(f"""
[connections.main]
hosts = ["*.amazonaws.com"]
{policy}
[connections.main.credentials]
source = "chain"
""")
    conn = config.connections["main"]
    check_policy(conn, "GET", "execute-api", "us-east-1", [])
    if refused is None:
        check_policy(conn, "GET", "execute-api", "us-east-1", [], websocket=True)
    else:
        with pytest.raises(PolicyRefused, match=rf"WebSocket's messages may write.*\({refused}\)"):
            check_policy(conn, "GET", "execute-api", "us-east-1", [], websocket=True)
