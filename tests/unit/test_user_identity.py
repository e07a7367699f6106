"""Per-end-user identity (``user_header = true``): the X-Sigproxy-User id, ``${sigproxy:user}`` in the config,
its rendering into session name, source identity, session policy and tags, and the per-user cache bound."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sigproxy.config import USER_VAR, loads
from sigproxy.credcache import CredentialCache
from sigproxy.credentials import NO_USER, Identity, Providers
from sigproxy.errors import BadRequest, ConfigError
from sigproxy.routing import parse_user
from sigproxy.signing import Credentials

ROLE = "arn:aws:iam::111122223333:role/sigproxy-assumable/tenant"
POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": "s3:*",
    "Resource": [f"arn:aws:s3:::data/home/{USER_VAR}/*", "arn:aws:s3:::data/team/${aws:username}/*"]}]})


def conf(creds: str, *, user_header: bool = True, source: str = "assume_role") -> str:
    return f"""
[connections.t]
hosts = ["*.amazonaws.com"]
region = "eu-west-1"
user_header = {"true" if user_header else "false"}
[connections.t.credentials]
source = "{source}"
{creds}
"""


ASSUME = f'role_arn = "{ROLE}"\n'


class TestParseUser:
    @pytest.mark.parametrize("value", ["alice", "a", "bob.smith@example.com", "u+1=2,3_4-5", "x" * 64])
    def test_valid(self, value: str) -> None:
        assert parse_user(value, "t") == value

    @pytest.mark.parametrize("value", [None, ""])
    def test_missing_names_connection_and_header(self, value: str | None) -> None:
        with pytest.raises(BadRequest) as err:
            parse_user(value, "t")
        assert err.value.status == 400 and err.value.code == "bad_request"
        assert err.value.message == "connection 't' needs X-Sigproxy-User: ID (user_header = true)"

    @pytest.mark.parametrize(("value", "needle"), [
        ("a b", "characters other than"), ("ü", "characters other than"), ("a/b", "characters other than"),
        ("x" * 65, "65 characters long"), ("a\tb", "characters other than"), ("${aws:username}", "other than"),
    ])
    def test_invalid(self, value: str, needle: str) -> None:
        with pytest.raises(BadRequest, match="X-Sigproxy-User") as err:
            parse_user(value, "t")
        assert needle in err.value.message


class TestConfig:
    def test_default_session_name_is_the_user(self) -> None:
        """user_header = true without session_name: the session is named after the end user."""
        c = loads(conf(ASSUME)).connections["t"].credentials
        assert c.session_name == USER_VAR
        web = loads(conf(ASSUME + 'token_file = "/t"', source="web_identity")).connections["t"].credentials
        assert web.session_name == USER_VAR
        # no user_header: the old default
        assert loads(conf(ASSUME, user_header=False)).connections["t"].credentials.session_name == "sigproxy-t"

    def test_templates_kept_and_iam_variables_untouched(self) -> None:
        """${sigproxy:user} and IAM's ${aws:username} reach the config as written; ${env:...} is resolved."""
        text = conf(ASSUME + f"""session_name = "app-{USER_VAR}"
source_identity = "{USER_VAR}"
external_id = "${{env:EXT}}"
policy = '{POLICY}'
[connections.t.credentials.tags]
end-user = "{USER_VAR}"
team = "data"
""")
        c = loads(text, env={"EXT": "ext-1"}).connections["t"].credentials
        assert (c.session_name, c.source_identity, c.external_id) == (f"app-{USER_VAR}", USER_VAR, "ext-1")
        assert c.policy == POLICY and "${aws:username}" in c.policy
        assert c.tags == (("end-user", USER_VAR), ("team", "data"))

    @pytest.mark.parametrize(("creds", "needle"), [
        (f'session_name = "{USER_VAR}"', "needs user_header = true"),
        (f'source_identity = "x-{USER_VAR}"', "needs user_header = true"),
        (f"policy = '{POLICY}'", "needs user_header = true"),
        (f'[connections.t.credentials.tags]\nu = "{USER_VAR}"', "needs user_header = true"),
    ])
    def test_template_without_user_header(self, creds: str, needle: str) -> None:
        with pytest.raises(ConfigError, match=needle) as err:
            loads(conf(ASSUME + creds, user_header=False))
        assert "connections.t.credentials." in str(err.value)

    @pytest.mark.parametrize(("creds", "needle"), [
        ("""policy = '{"Resource": "${sigproxy:username}"}'""", "policy: unknown variable '${sigproxy:username}'"),
        (f'external_id = "{USER_VAR}"', "credentials.external_id: ${sigproxy:user} is only replaced in"),
        (f'policy_arns = ["arn:aws:iam::1:policy/{USER_VAR}"]', "policy_arns[0]: ${sigproxy:user} is only"),
        (f'[connections.t.credentials.tags]\n"{USER_VAR}" = "x"', "is only replaced in"),
        (f'session_name = "bad name {USER_VAR}"', "around ${sigproxy:user}"),
        (f'session_name = "{"x" * 63}{USER_VAR}"', "around ${sigproxy:user}"),
        (f'source_identity = "a/{USER_VAR}"', "credentials.source_identity: expected 2-64 characters"),
        ('source_identity = "x"', "credentials.source_identity: expected 2-64 characters"),
        ('session_name = "${aws:username}"', "credentials.session_name: expected 2-64"),
        ('session_name = "müller"', "credentials.session_name: expected 2-64"),
    ])
    def test_errors(self, creds: str, needle: str) -> None:
        with pytest.raises(ConfigError) as err:
            loads(conf(ASSUME + creds))
        assert needle in str(err.value)

    def test_templated_role_arn_refused(self) -> None:
        with pytest.raises(ConfigError, match="role_arn"):
            loads(conf(f'role_arn = "arn:aws:iam::111122223333:role/{USER_VAR}"'))


def providers_for(creds: str, *, source: str = "assume_role", cache: CredentialCache | None = None) -> Providers:
    text = conf(ASSUME + creds, source=source) + """
[connections.plain]
hosts = ["*.amazonaws.com"]
[connections.plain.credentials]
source = "static"
access_key_id = "AK"
secret_access_key = "SK"
"""
    return Providers(loads(text).connections, cache=cache)


class TestIdentity:
    def test_rendered_per_user(self) -> None:
        p = providers_for(f'session_name = "app-{USER_VAR}"\nsource_identity = "{USER_VAR}"')
        assert p.identity("t", user="alice") == Identity(ROLE, "app-alice", "alice")
        assert p.identity("t", user="bob") == Identity(ROLE, "app-bob", "bob")
        assert p.identity("t") == Identity(ROLE, f"app-{NO_USER}", NO_USER)
        assert p.identity("plain", user="alice") == Identity(None, None, None)

    def test_one_character_id_with_default_session_name_is_400(self) -> None:
        """The default session name is the id itself; STS wants at least 2 characters."""
        p = providers_for("")
        assert p.identity("t", user="al") == Identity(ROLE, "al", None)
        with pytest.raises(BadRequest, match=r"X-Sigproxy-User 'a' makes the role session name 'a'") as err:
            p.identity("t", user="a")
        assert err.value.status == 400

    def test_too_long_rendered_source_identity_is_400(self) -> None:
        p = providers_for(f'session_name = "s-{USER_VAR}"\nsource_identity = "{"p" * 10}-{USER_VAR}"')
        p.identity("t", user="x" * 53)
        with pytest.raises(BadRequest, match="source identity"):
            p.identity("t", user="x" * 54)

    def test_web_identity_and_sts_endpoint(self) -> None:
        web = providers_for('token_file = "/t"', source="web_identity")
        assert web.identity("t", user="alice") == Identity(ROLE, "alice", None)
        sts = providers_for('url = "https://sts.example"\nauth = "basic"\nusername = "u"\npassword = "p"',
                            source="sts_endpoint")
        assert sts.identity("t", user="alice") == Identity(ROLE, None, None)

    async def test_bad_id_fails_before_any_fetch(self) -> None:
        """get() refuses an id STS would refuse without touching the cache or STS."""
        async with providers_for("") as p:
            with pytest.raises(BadRequest):
                await p.get("t", user="a")
            assert p.cache.stats.fetches == 0 and p.cache.size() == 0

    def test_assume_role_parameters(self) -> None:
        """Session name, source identity, policy and tag values get the id; IAM's variables stay literal."""
        p = providers_for(f"""source_identity = "{USER_VAR}"
policy = '{POLICY}'
[connections.t.credentials.tags]
end-user = "{USER_VAR}"
team = "data"
""")
        provider: Any = p._by_name["t"]
        params = provider.params("alice")
        assert params["RoleSessionName"] == "alice" and params["SourceIdentity"] == "alice"
        resources = json.loads(params["Policy"])["Statement"][0]["Resource"]
        assert resources == ["arn:aws:s3:::data/home/alice/*", "arn:aws:s3:::data/team/${aws:username}/*"]
        assert params["Tags"] == [{"Key": "end-user", "Value": "alice"}, {"Key": "team", "Value": "data"}]
        assert provider.params()["RoleSessionName"] == NO_USER


T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_per_user_entries_are_bounded_and_apart() -> None:
    """A stream of distinct user ids stays within max_user_keys and never evicts connection entries; an
    evicted user simply fetches again."""
    calls: list[str] = []

    def fetch_for(who: str) -> Any:
        async def fetch() -> Credentials:
            calls.append(who)
            return Credentials(f"AK-{who}", "secret", "token", T0 + timedelta(hours=1))
        return fetch

    cache = CredentialCache(clock=lambda: T0, max_keys=2, max_user_keys=3)
    try:
        await cache.get(("conn",), fetch_for("conn"), "conn")
        for i in range(50):
            creds, hit = await cache.get(("conn", f"u{i}"), fetch_for(f"u{i}"), f"u{i}", per_user=True)
            assert creds.access_key_id == f"AK-u{i}" and not hit
        assert cache.size() == 1 + 3
        _, hit = await cache.get(("conn",), fetch_for("conn"), "conn")
        assert hit and calls.count("conn") == 1
        _, hit = await cache.get(("conn", "u49"), fetch_for("u49"), "u49", per_user=True)
        assert hit
        _, hit = await cache.get(("conn", "u0"), fetch_for("u0"), "u0", per_user=True)
        assert not hit and calls.count("u0") == 2
    finally:
        await cache.close()
