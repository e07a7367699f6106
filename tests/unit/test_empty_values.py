"""Empty and zero values do what their documentation says (issue 12, part 5).

Each row of :data:`DOCUMENTED` is one key or setting whose documentation (``config.example.toml``, README,
docstrings) says what an empty or zero value means, with where it says so; the test checks the value does that
(the behaviour, not only the parsed field). Any other string key refuses ``""`` instead of silently acting as
its default or as nothing (:func:`test_other_empty_strings_are_refused`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sigproxy.config import Config, client_allowed, default_state_dir, find_config, loads
from sigproxy.egress import EgressPolicy, EgressResolver
from sigproxy.errors import AddressNotAllowed, ConfigError
from sigproxy.routing import check_policy
from sigproxy.sdnotify import Notifier

CONN = """
[connections.main]
hosts = ["*.amazonaws.com"]
{conn}
[connections.main.credentials]
source = "chain"
"""


def config(proxy: str = "", conn: str = "", more: str = "", admin_listen: str | None = None) -> Config:
    return loads(f"[proxy]\n{proxy}\n" + CONN.format(conn=conn) + more, env={}, admin_listen=admin_listen)


def _admin_off_in_file() -> None:
    assert config('admin_listen = ""').proxy.admin_listen is None


def _admin_off_on_command_line() -> None:
    assert config('admin_listen = "127.0.0.1:9901"', admin_listen="").proxy.admin_listen is None


def _proxy_clients_empty() -> None:
    assert client_allowed(config("clients = []").proxy.clients, "203.0.113.9")


def _reverse_clients_empty() -> None:
    rev = '[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "http://127.0.0.1:9"\nclients = []\n'
    assert client_allowed(config(more=rev).reverse[0].clients, "198.51.100.7")


def _passthrough_empty() -> None:
    assert not config("passthrough = []").proxy.passes_through("example.com", 443)


def _connect_ports_empty() -> None:
    assert config("connect_ports = []").proxy.connect_ports == ()  # every CONNECT: 403 (connect.py)


def _policy_lists_empty() -> None:
    conn = config(conn="allowed_services = []\nallowed_regions = []\nallowed_methods = []\n"
                  "deny_amz_headers = []").connections["main"]
    check_policy(conn, "DELETE", "iam", "cn-north-1", [("x-amz-acl", "public-read")])  # nothing refused


def _private_networks_empty() -> None:
    conn = config(conn="private_networks = []").connections["main"]
    policy = EgressPolicy.for_connection(conn.name, conn.hosts, conn.private_networks)
    with pytest.raises(AddressNotAllowed):
        policy.check("s3.amazonaws.com", 443, "10.0.0.5")


def _listen_port_zero() -> None:
    rev = '[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "http://127.0.0.1:9"\n'
    c = config('listen = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"', more=rev + rev)
    assert {c.proxy.listen.port, c.reverse[0].listen.port, c.reverse[1].listen.port} == {0}


def _state_directory_empty() -> None:
    assert default_state_dir({"STATE_DIRECTORY": "", "HOME": "/home/u"}) == Path("/home/u/.local/share/sigproxy")


def _sigproxy_config_empty() -> None:
    assert find_config(None, {"SIGPROXY_CONFIG": "", "HOME": "/h"}, exists=lambda p: True) == Path("sigproxy.toml")


def _watchdog_usec_zero() -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "0"}) as notifier:
        assert notifier.watchdog_interval is None


def _resolver_cache_ttl_zero() -> None:
    calls: list[str] = []

    async def lookup(host: str, family: int) -> list[tuple[int, str]]:
        calls.append(host)
        return [(2, "52.216.0.1")]

    async def twice() -> None:
        resolver = EgressResolver(lookup=lookup, cache_ttl=0)
        policy = EgressPolicy.for_connection("main", ("*.amazonaws.com",), ())
        for _ in range(2):
            await resolver.checked("s3.amazonaws.com", 443, policy)
        await resolver.close()

    asyncio.run(twice())
    assert calls == ["s3.amazonaws.com"] * 2


@dataclass(frozen=True)
class Documented:
    setting: str
    value: str
    means: str
    source: str
    check: Callable[[], None]


DOCUMENTED = [
    Documented("[proxy] admin_listen", '""', "no admin listener",
               "config.example.toml, README (Operations), ProxyConfig.admin_listen", _admin_off_in_file),
    Documented("--admin-listen", "''", "no admin listener", "cli.py --admin-listen help", _admin_off_on_command_line),
    Documented("[proxy] clients", "[]", "any client that can reach the listener",
               "config.example.toml, ProxyConfig.clients, config.client_allowed", _proxy_clients_empty),
    Documented("[[reverse]] clients", "[]", "any client that can reach the listener",
               "ReverseListener.clients", _reverse_clients_empty),
    Documented("[proxy] passthrough", "[]", "no host is tunnelled blindly", "config.example.toml",
               _passthrough_empty),
    Documented("[proxy] connect_ports", "[]", "every CONNECT is refused", "config.example.toml",
               _connect_ports_empty),
    Documented("allowed_services, allowed_regions, allowed_methods, deny_amz_headers", "[]", "nothing refused",
               "config.example.toml, ConnectionConfig docstrings", _policy_lists_empty),
    Documented("private_networks", "[]", "no non-public network beyond hosts named exactly",
               "config.example.toml, README (SSRF guard)", _private_networks_empty),
    Documented("listen, admin_listen, [[reverse]] listen", "port 0", "any free port, several listeners may use it",
               "config.example.toml", _listen_port_zero),
    Documented("$STATE_DIRECTORY", '""', "~/.local/share/sigproxy", "config.default_state_dir",
               _state_directory_empty),
    Documented("$SIGPROXY_CONFIG", '""', "as if unset: the search path", "config.find_config",
               _sigproxy_config_empty),
    Documented("$WATCHDOG_USEC", "0", "no watchdog pings", "Notifier.from_environ", _watchdog_usec_zero),
    Documented("EgressResolver(cache_ttl=...)", "0", "no DNS answer cache", "EgressResolver docstring",
               _resolver_cache_ttl_zero),
]


@pytest.mark.parametrize("row", DOCUMENTED, ids=[f"{d.setting}={d.value}" for d in DOCUMENTED])
def test_documented_empty_or_zero(row: Documented) -> None:
    """The empty or zero value means what its documentation says (``row.source``)."""
    row.check()


# Every string key but admin_listen and tag values: (where in the TOML, the key). "" would act as the default
# (session_name, base, api_key_header), as nothing (external_id, source_identity: never sent to STS), or fail
# much later (region, profile) -- so it is refused with the key path.
ASSUME = '[connections.main.credentials]\nsource = "assume_role"\nrole_arn = "arn:aws:iam::111122223333:role/r"\n'
EMPTY_STRING_CASES = [
    ("[proxy]\ndefault_connection = {v}\n" + CONN.format(conn=""), "proxy.default_connection"),
    ("[proxy]\nstate_dir = {v}\n" + CONN.format(conn=""), "proxy.state_dir"),
    ("[proxy]\nupstream_ca_file = {v}\n" + CONN.format(conn=""), "proxy.upstream_ca_file"),
    (CONN.format(conn="region = {v}"), "connections.main.region"),
    (CONN.format(conn="service = {v}"), "connections.main.service"),
    (CONN.format(conn="token = {v}"), "connections.main.token"),
    (CONN.format(conn="client_secret = {v}"), "connections.main.client_secret"),
    (CONN.format(conn="").replace('source = "chain"', 'source = "chain"\nprofile = {v}'),
     "connections.main.credentials.profile"),
    (CONN.format(conn="").replace('source = "chain"', 'source = "static"\naccess_key_id = {v}\n'
                                  'secret_access_key = "s"'), "connections.main.credentials.access_key_id"),
    *[(CONN.format(conn="").split("[connections.main.credentials]")[0] + ASSUME + f"{key} = {{v}}\n",
       f"connections.main.credentials.{key}")
      for key in ("external_id", "session_name", "source_identity", "base", "policy")],
    (CONN.format(conn="").split("[connections.main.credentials]")[0]
     + '[connections.main.credentials]\nsource = "sts_endpoint"\nurl = "https://sts.example"\n'
       'role_arn = "arn:aws:iam::111122223333:role/r"\nauth = "api_key"\napi_key = "k"\napi_key_header = {v}\n',
     "connections.main.credentials.api_key_header"),
    (CONN.format(conn="") + '[[routes]]\nhost = "*.es.amazonaws.com"\nconnection = {v}\n', "routes[0].connection"),
    (CONN.format(conn="") + '[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "http://127.0.0.1:9"\n'
                            "connection = {v}\n", "reverse[0].connection"),
]


@pytest.mark.parametrize(("text", "path"), EMPTY_STRING_CASES, ids=[p for _, p in EMPTY_STRING_CASES])
def test_other_empty_strings_are_refused(text: str, path: str) -> None:
    """A string key whose documentation gives "" no meaning refuses it, naming the key path -- also when a
    reference resolves to nothing (an empty ${env:...} must not drop an ExternalId)."""
    with pytest.raises(ConfigError) as literal:
        loads(text.replace("{v}", '""'), env={})
    assert (literal.value.path, literal.value.problem.split(":")[0]) == (path, "is empty")
    with pytest.raises(ConfigError) as via_env:
        loads(text.replace("{v}", '"${env:EMPTY}"'), env={"EMPTY": ""})
    assert via_env.value.path == path
    assert "'${env:EMPTY}' resolved to nothing" in via_env.value.problem


def test_tag_values_may_be_empty() -> None:
    """STS allows an empty session tag value, so a tag value may be ""."""
    text = (CONN.format(conn="").split("[connections.main.credentials]")[0] + ASSUME
            + '[connections.main.credentials.tags]\nteam = ""\n')
    assert loads(text, env={}).connections["main"].credentials.tags == (("team", ""),)
