"""Per-end-user identity (``user_header = true``): the X-Sigproxy-User id, ``${sigproxy:user}`` in the config,
its rendering into session name, source identity, session policy and tags, and the per-user cache bound."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sigproxy import credentials as credentials_module
from sigproxy.config import USER_VAR, loads
from sigproxy.credcache import CredentialCache
from sigproxy.credentials import NO_USER, Identity, Providers
from sigproxy.errors import BadRequest, ConfigError
from sigproxy.observability import _TextFormatter
from sigproxy.signing import Credentials
from sigproxy.users import parse_user

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
    @pytest.mark.parametrize("value", [
        "alice", "a", "bob.smith@example.com", "u+1=2,3_4-5", "x" * 64,
        # what identity providers really send: Auth0 subjects, UUIDs, SAML NameIDs, long OIDC subs, any script
        "google-oauth2|113015401123457192604", "auth0|5f7c8ec7c33c6c004bbafe82", "f47ac10b-58cc-4372-a567-0e02b2c3d479",
        "CN=Jane Doe,OU=Users,DC=example,DC=com", "ZAq+/w==_persistent", "s" * 255, "Zoë Ångström", "山田太郎",
        'a "quoted" *id* ${aws:username}', "x" * 1024, "ü" * 512,
    ])
    def test_valid(self, value: str) -> None:
        assert parse_user([value], "t") == value

    @pytest.mark.parametrize("value", [[], [""]])
    def test_missing_names_connection_and_header(self, value: list[str]) -> None:
        with pytest.raises(BadRequest) as err:
            parse_user(value, "t")
        assert err.value.status == 400 and err.value.code == "bad_request"
        assert err.value.message == "connection 't' needs X-Sigproxy-User: ID (user_header = true)"

    @pytest.mark.parametrize(("value", "needle"), [
        (["x" * 1025], "1025 bytes long; an id has at most 1024"), (["ü" * 513], "1026 bytes long"),
        (["a\tb"], "control character (U+0009) at position 2"), (["a\r\nb"], "(U+000D)"), (["\x00"], "(U+0000)"),
        (["a\x7f"], "(U+007F)"), (["a\x85"], "(U+0085)"), (["a\u2028b"], "(U+2028)"),
        # aiohttp hands bytes that are not UTF-8 over as lone surrogates (surrogateescape)
        (["m\udcfcller"], "not UTF-8 (byte 2)"),
        (["alice", "bob"], "sent 2 times"), (["alice", ""], "sent 2 times"),
    ])
    def test_invalid(self, value: list[str], needle: str) -> None:
        with pytest.raises(BadRequest, match="X-Sigproxy-User") as err:
            parse_user(value, "t")
        assert needle in err.value.message
        assert repr(value[0]) not in err.value.message and value[0] not in err.value.message  # never echoed


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
        # room for any id: "-" and 16 hex digits at least (users.py)
        (f'session_name = "{"x" * 48}{USER_VAR}"', "leaves 16 of the 64 characters for the id"),
        (f'session_name = "{USER_VAR}{USER_VAR}{USER_VAR}{USER_VAR}"', "leaves 16 of the 64"),
        (f'[connections.t.credentials.tags]\nu = "{"t" * 240}{USER_VAR}"', "tags.u: the text around"),
        # STS's rules for session tags: keys, literal values, their number (tagKeyType, tagValueType, tagListType)
        ('[connections.t.credentials.tags]\n"a|b" = "x"', "tags.a|b: tag key 'a|b': expected 1-128"),
        ('[connections.t.credentials.tags]\n"aws:x" = "x"', "not beginning 'aws:'"),
        (f'[connections.t.credentials.tags]\n"{"k" * 129}" = "x"', "expected 1-128"),
        ('[connections.t.credentials.tags]\nt = "a|b"', "tags.t: expected 0-256 letters, numbers"),
        (f'[connections.t.credentials.tags]\nt = "aws:{USER_VAR}"', "tags.t: expected 0-256"),
        ("[connections.t.credentials.tags]\n" + "".join(f't{i} = "v"\n' for i in range(51)), "at most 50"),
        # the session policy: STS's characters, and its 2048 with the longest mapped id in place
        ("policy = '{\"Resource\": \"\u0101\"}'", "policy: has 'ā': STS takes only"),
        ("policy = '" + json.dumps({"Resource": [f"a/{USER_VAR}"] * 40}) + "'",  # 894 characters as written
         f"policy: is {894 + 40 * 48} characters long with a 64-character id in place of each {USER_VAR}"),
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
    def test_rendered_once_per_user_while_kept(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A per-user identity is rendered once per (connection, id) and kept as long as the cache keeps end
        users (its templates' STS rules cost microseconds a request, issue 15); each id gets its own; the
        least recently used go past the bound."""
        rendered: list[str | None] = []
        real = credentials_module._identity

        def counting(conn: Any, user: str | None) -> Identity:
            rendered.append(user)
            return real(conn, user)

        monkeypatch.setattr(credentials_module, "_identity", counting)
        p = providers_for(f'session_name = "app-{USER_VAR}"', cache=CredentialCache(max_user_keys=2))
        p.cache.configure(connections=2, users=2)
        p = p.successor(p.connections)  # sized from the cache's bound, as a reload makes them
        for _ in range(3):
            assert p.identity("t", user="alice") == Identity(ROLE, "app-alice", None)
            assert p.identity("t", user="bob") == Identity(ROLE, "app-bob", None)
        assert rendered == ["alice", "bob"]
        p.identity("t", user="carol")  # a third id: the least recently used (alice) goes
        p.identity("t", user="alice")
        assert rendered == ["alice", "bob", "carol", "alice"]

    def test_rendered_per_user(self) -> None:
        p = providers_for(f'session_name = "app-{USER_VAR}"\nsource_identity = "{USER_VAR}"')
        assert p.identity("t", user="alice") == Identity(ROLE, "app-alice", "alice")
        assert p.identity("t", user="bob") == Identity(ROLE, "app-bob", "bob")
        assert p.identity("t") == Identity(ROLE, f"app-{NO_USER}", NO_USER)
        assert p.identity("plain", user="alice") == Identity(None, None, None)

    def test_ids_fitting_the_session_name_stay_as_they_are(self) -> None:
        """Today's ids keep their session names: assumed-role/tenant/alice stays."""
        p = providers_for("")
        for user in ("alice", "al", "bob.smith@example.com", "u+1=2,3_4-5", "x" * 64,
                     "f47ac10b-58cc-4372-a567-0e02b2c3d479"):
            assert p.identity("t", user=user) == Identity(ROLE, user, None)

    @pytest.mark.parametrize(("user", "readable"), [
        ("google-oauth2|113015401123457192604", "google-oauth2_113015401123457192604"),
        ("CN=Jane Doe,OU=Users,DC=example,DC=com", "CN=Jane_Doe,OU=Users,DC=example,DC=com"),
        ("Zoë Ångström", "Zoe_Angstrom"),
        ("山田太郎", "____"),
        ("x" * 65, "x" * 47),
        ("a/../b", "a_.._b"),
        ("x-0123456789abcdef", "x-0123456789abcdef"),  # looks like a hashed name: hashed again
    ])
    def test_other_ids_get_a_readable_name_and_a_hash(self, user: str, readable: str) -> None:
        """Ids STS would refuse as a session name: readable stand-in, '-', the first 16 hex of SHA-256."""
        digest = hashlib.sha256(user.encode()).hexdigest()[:16]
        p = providers_for(f'session_name = "app-{USER_VAR}"\nsource_identity = "{USER_VAR}"')
        app = f"app-{readable[:43]}-{digest}"
        assert p.identity("t", user=user) == Identity(ROLE, app, f"{readable}-{digest}")

    def test_one_character_id(self) -> None:
        """STS wants 2 characters at least: "a" alone is hashed, "app-a" is fine as it is."""
        digest = hashlib.sha256(b"a").hexdigest()[:16]
        assert providers_for("").identity("t", user="a") == Identity(ROLE, f"a-{digest}", None)
        assert providers_for(f'session_name = "app-{USER_VAR}"').identity("t", user="a").session_name == "app-a"

    def test_long_source_identity_template(self) -> None:
        p = providers_for(f'session_name = "s-{USER_VAR}"\nsource_identity = "{"p" * 10}-{USER_VAR}"')
        assert p.identity("t", user="x" * 53).source_identity == f"{'p' * 10}-{'x' * 53}"
        digest = hashlib.sha256(b"x" * 54).hexdigest()[:16]
        assert p.identity("t", user="x" * 54).source_identity == f"{'p' * 10}-{'x' * 36}-{digest}"

    def test_web_identity_and_sts_endpoint(self) -> None:
        web = providers_for('token_file = "/t"', source="web_identity")
        assert web.identity("t", user="alice") == Identity(ROLE, "alice", None)
        sts = providers_for('url = "https://sts.example"\nauth = "basic"\nusername = "u"\npassword = "p"',
                            source="sts_endpoint")
        assert sts.identity("t", user="alice") == Identity(ROLE, None, None)

    async def test_cache_keys_on_the_exact_id(self) -> None:
        """Each distinct id is its own cache entry and fetch, even ids whose mapped names look alike."""
        fetched: list[str | None] = []

        class Recording:
            async def fetch(self, user: str | None = None) -> Credentials:
                fetched.append(user)
                return Credentials(f"AK{len(fetched)}", "secret", "token", datetime.now(UTC) + timedelta(hours=1))

        ids = ["a b", "a_b", "a|b", "A B", "a b "]
        async with providers_for("") as p:
            p._by_name["t"] = Recording()
            keys = {(await p.get("t", user=user))[0].access_key_id for user in ids}
            assert (await p.get("t", user="a|b"))[1]  # a hit
            assert fetched == ids and len(keys) == len(ids) and p.cache.size() == len(ids)

    def test_assume_role_parameters(self) -> None:
        """Session name, source identity, policy and tag values get the id; IAM's variables stay literal."""
        p = providers_for(f"""source_identity = "{USER_VAR}"
policy = '{POLICY}'
[connections.t.credentials.tags]
end-user = "{USER_VAR}"
team = "data"
""")
        provider: Any = p._provider_for("t")
        params = provider.params("alice")
        assert params["RoleSessionName"] == "alice" and params["SourceIdentity"] == "alice"
        resources = json.loads(params["Policy"])["Statement"][0]["Resource"]
        assert resources == ["arn:aws:s3:::data/home/alice/*", "arn:aws:s3:::data/team/${aws:username}/*"]
        assert params["Tags"] == [{"Key": "end-user", "Value": "alice"}, {"Key": "team", "Value": "data"}]
        assert provider.params()["RoleSessionName"] == NO_USER

    @pytest.mark.parametrize(("user", "tag", "name"), [
        # the tag holds the exact id where STS's tag characters allow it, the mapped one where not ('|', ',')
        ("google-oauth2|113015401123457192604", "google-oauth2_113015401123457192604-{h}",
         "google-oauth2_113015401123457192604-{h}"),
        ("jane doe@example.com", "jane doe@example.com", "jane_doe@example.com-{h}"),
        ("Zoë Ångström", "Zoë Ångström", "Zoe_Angstrom-{h}"),
        ("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
         "urn_uuid_f81d4fae-7dec-11d0-a765-00a0c91e6bf6-{h}"),
        ("aws:root", "aws_root-{h}", "aws_root-{h}"),  # 'aws:' is reserved in tag values
        # hostile: can't close the JSON string, add a wildcard or a variable, or reach into another user's path
        ('x"}],"Resource":"*', "x_____Resource_:__-{h}", "x___,_Resource____-{h}"),
        ("*", "_-{h}", "_-{h}"),
        ("${aws:username}", "__aws:username_-{h}", "__aws_username_-{h}"),
        ("alice/..", "alice/..", "alice_..-{h}"),
    ])
    def test_assume_role_parameters_for_identity_provider_ids(self, user: str, tag: str, name: str) -> None:
        """Real identity providers' ids: each field gets the id mapped into its own STS rule."""
        h = hashlib.sha256(user.encode()).hexdigest()[:16]
        tag, name = tag.format(h=h), name.format(h=h)
        p = providers_for(f"""source_identity = "{USER_VAR}"
policy = '{POLICY}'
[connections.t.credentials.tags]
end-user = "{USER_VAR}"
""")
        provider: Any = p._provider_for("t")
        params = provider.params(user)
        assert params["RoleSessionName"] == params["SourceIdentity"] == name
        policy = json.loads(params["Policy"])
        assert policy["Statement"][0]["Resource"] == [f"arn:aws:s3:::data/home/{name}/*",
                                                      "arn:aws:s3:::data/team/${aws:username}/*"]
        assert len(policy["Statement"]) == 1 and policy["Statement"][0]["Effect"] == "Allow"
        assert params["Tags"] == [{"Key": "end-user", "Value": tag}]


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


def test_text_access_line_quotes_what_clients_choose() -> None:
    """In text logs an id can't add fields or lines: values that are not plain come JSON-quoted."""

    hostile = 'alice status=200 role_arn=arn:aws:iam::1:role/admin "x\u2028forged line'
    record = logging.LogRecord("sigproxy.access", logging.INFO, __file__, 1, "POST h 403", None, None)
    record.access = {"method": "POST", "host": "h", "user": hostile, "status": 403,
                     "session_name": "alice_status_200-0123456789abcdef"}  # as log_access makes it
    line = _TextFormatter("%(message)s").format(record)
    assert line == ("POST h 403 user=" + json.dumps(hostile) + " status=403"
                    " session_name=alice_status_200-0123456789abcdef")
    fields = re.findall(r' (\w+)=("(?:[^"\\]|\\.)*"|[^ "]+)', line)
    assert [k for k, _ in fields] == ["user", "status", "session_name"] and len(line.splitlines()) == 1
    assert json.loads(fields[0][1]) == hostile
