"""The start-up warning about listeners open to the network (sigproxy/exposure.py), from config text."""

from __future__ import annotations

import pytest

from sigproxy.config import loads
from sigproxy.exposure import is_loopback, open_listener_warnings

CONN = """
[connections.main]
hosts = ["*.amazonaws.com"]
{extra}
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "secret"
"""


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("proxy.internal", False),
])
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def warnings(proxy: str = "", extra: str = "", listen: str = "0.0.0.0:8080") -> list[str]:
    return open_listener_warnings(loads(f'[proxy]\nlisten = "{listen}"\n{proxy}\n' + CONN.format(extra=extra)))


def test_an_open_forward_listener_is_named_with_the_keys_that_fix_it() -> None:
    [warning] = warnings()
    assert warning.startswith("proxy.listen = '0.0.0.0:8080' is not loopback")
    assert "'main'" in warning and "token or client_secret" in warning and "[proxy] clients" in warning


@pytest.mark.parametrize(("proxy", "extra", "listen"), [
    ("", "", "127.0.0.1:8080"),
    ("", "", "[::1]:8080"),
    ('clients = ["10.0.0.0/8"]', "", "0.0.0.0:8080"),
    ("", 'token = "a-token-1234"', "0.0.0.0:8080"),
    ("", 'client_secret = "a-client-secret-1234"', "[::]:8080"),
])
def test_guarded_listeners_are_not_warned_about(proxy: str, extra: str, listen: str) -> None:
    assert warnings(proxy, extra, listen) == []


def test_reverse_listeners_are_judged_each_by_its_clients() -> None:
    text = ('[proxy]\nlisten = "127.0.0.1:8080"\n'
            '[[reverse]]\nlisten = "0.0.0.0:9000"\nupstream = "https://s3.amazonaws.com"\n'
            '[[reverse]]\nlisten = "0.0.0.0:9001"\nupstream = "https://s3.amazonaws.com"\nclients = ["10.0.0.0/8"]\n'
            + CONN.format(extra=""))
    [warning] = open_listener_warnings(loads(text))
    assert warning.startswith("reverse[0].listen = '0.0.0.0:9000'") and "(reverse[0])" in warning
