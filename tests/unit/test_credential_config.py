"""Config for the expiring credential sources, the custom STS endpoint's answers, and onboarding helpers."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from sigproxy.config import loads
from sigproxy.credentials import sts_endpoint_for
from sigproxy.errors import ConfigError, CredentialsUnavailable
from sigproxy.onboarding import new_external_id, trust_policy
from sigproxy.stsendpoint import parse_sts_endpoint_answer

ROLE = "arn:aws:iam::111122223333:role/sigproxy-assumable/tenant"


def conf(creds: str, *, connection: str = "", more: str = "") -> str:
    return f"""
[connections.t]
hosts = ["*.amazonaws.com"]
region = "eu-west-1"
{connection}
[connections.t.credentials]
{creds}
[connections.base]
hosts = ["*.amazonaws.com"]
[connections.base.credentials]
source = "chain"
{more}
"""


class TestAssumeRoleConfig:
    def test_all_keys(self) -> None:
        """Every assume_role key parses into the dataclass; defaults fill the rest."""
        cfg = loads(conf(f'''source = "assume_role"
role_arn = "{ROLE}"
external_id = "${{env:EXT}}"
source_identity = "alice"
duration_seconds = 1800
policy = '{{"Version": "2012-10-17", "Statement": []}}'
policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
transitive_tag_keys = ["team"]
base = "base"
[connections.t.credentials.tags]
team = "data"
''', connection='require_role_path = "/sigproxy-assumable/"'), env={"EXT": "ext-9"})
        c = cfg.connections["t"].credentials
        assert (c.source, c.role_arn, c.external_id, c.base) == ("assume_role", ROLE, "ext-9", "base")
        assert c.session_name == "sigproxy-t"
        assert c.duration_seconds == 1800
        assert c.tags == (("team", "data"),)
        assert c.policy_arns == ("arn:aws:iam::aws:policy/ReadOnlyAccess",)

    @pytest.mark.parametrize(
        ("creds", "needle"),
        [
            ('source = "assume_role"', "credentials.role_arn: is required"),
            ('source = "assume_role"\nrole_arn = "nope"', "expected an IAM role ARN"),
            (f'source = "assume_role"\nrole_arn = "{ROLE}"\nduration_seconds = 60', "between 900 and 43200"),
            (f'source = "assume_role"\nrole_arn = "{ROLE}"\npolicy = "{{not json"', "policy: is not valid JSON"),
            (f'source = "assume_role"\nrole_arn = "{ROLE}"\nbase = "ghost"', "unknown connection 'ghost'"),
            (f'source = "assume_role"\nrole_arn = "{ROLE}"\nsession_name = "x"', "session_name"),
            (f'source = "assume_role"\nrole_arn = "{ROLE}"\ntoken_file = "/t"', "token_file: is not used by"),
            ('source = "web_identity"\nrole_arn = "' + ROLE + '"', "token_file: is required"),
            ('source = "sts_endpoint"\nurl = "https://x"\nrole_arn = "' + ROLE + '"\nauth = "api_key"',
             "api_key: is required"),
            ('source = "sts_endpoint"\nurl = "ftp://x"\nrole_arn = "' + ROLE + '"\nauth = "basic"', "URL"),
            ('source = "nope"', "expected one of static, chain, assume_role, web_identity, sts_endpoint"),
        ],
    )
    def test_errors_name_the_key(self, creds: str, needle: str) -> None:
        """Each mistake is a ConfigError naming its key path."""
        with pytest.raises(ConfigError) as err:
            loads(conf(creds))
        assert needle in str(err.value)
        assert "connections.t" in str(err.value)

    def test_cycle_is_an_error(self) -> None:
        """Role chains must not loop."""
        text = f"""
[connections.a]
hosts = ["x.com"]
[connections.a.credentials]
source = "assume_role"
role_arn = "{ROLE}"
base = "b"
[connections.b]
hosts = ["x.com"]
[connections.b.credentials]
source = "assume_role"
role_arn = "{ROLE}"
base = "a"
"""
        with pytest.raises(ConfigError, match=r"cycle: a -> b -> a"):
            loads(text)

    def test_require_role_path_refuses_other_roles(self) -> None:
        """require_role_path: a role outside that path is a config error, for every role-taking source."""
        other = "arn:aws:iam::111122223333:role/admin"
        path = 'require_role_path = "/sigproxy-assumable/"'
        for source in ('source = "assume_role"', 'source = "web_identity"\ntoken_file = "/t"',
                       'source = "sts_endpoint"\nurl = "https://x"\nauth = "basic"\nusername = "u"\npassword = "p"'):
            with pytest.raises(ConfigError, match="require_role_path"):
                loads(conf(f'{source}\nrole_arn = "{other}"', connection=path))
        loads(conf(f'source = "assume_role"\nrole_arn = "{ROLE}"', connection=path))


class TestStsEndpointAnswer:
    NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    @pytest.mark.parametrize("wrapped", [False, True])
    @pytest.mark.parametrize("field", ["expiresAt", "expires_at", "expiration"])
    @pytest.mark.parametrize("fmt", ["iso", "isoZ", "unix"])
    def test_shapes(self, wrapped: bool, field: str, fmt: str) -> None:
        """Flat or wrapped, any of the three expiry names, ISO-8601 or Unix seconds."""
        when = self.NOW + timedelta(minutes=30)
        value: object = {"iso": when.isoformat(), "isoZ": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "unix": when.timestamp()}[fmt]
        inner = {"accessKeyId": "AK", "secretAccessKey": "SK", "sessionToken": "TOK", field: value}
        creds = parse_sts_endpoint_answer({"credentials": inner} if wrapped else inner, self.NOW)
        assert (creds.access_key_id, creds.secret_access_key, creds.session_token) == ("AK", "SK", "TOK")
        assert creds.expires_at == when

    def test_missing_expiry_means_one_hour(self) -> None:
        """No expiry: one hour from now."""
        creds = parse_sts_endpoint_answer({"accessKeyId": "AK", "secretAccessKey": "SK"}, self.NOW)
        assert creds.expires_at == self.NOW + timedelta(hours=1)
        assert creds.session_token is None

    @pytest.mark.parametrize(
        ("answer", "needle"),
        [
            ({"secretAccessKey": "SK-VALUE"}, "no accessKeyId"),
            ({"accessKeyId": "AK"}, "no secretAccessKey"),
            ({}, "no accessKeyId and no secretAccessKey"),
            ([1, 2], "not a JSON object"),
            ({"accessKeyId": "AK", "secretAccessKey": "SK-VALUE", "expiresAt": "tomorrow"}, "not ISO-8601"),
            ({"accessKeyId": "AK", "secretAccessKey": "SK-VALUE", "expiresAt": 1}, "already expired"),
            ({"accessKeyId": "AK", "secretAccessKey": "SK-VALUE", "sessionToken": 5}, "sessionToken"),
        ],
    )
    def test_malformed_names_what_is_missing(self, answer: object, needle: str) -> None:
        """A malformed answer names what is wrong and never echoes a secret from it."""
        with pytest.raises(CredentialsUnavailable) as err:
            parse_sts_endpoint_answer(answer, self.NOW)
        assert needle in err.value.message
        assert "SK-VALUE" not in err.value.message


def test_sts_endpoint_by_partition() -> None:
    """STS calls go to the regional endpoint of the region's partition."""
    assert sts_endpoint_for("eu-west-1") == "https://sts.eu-west-1.amazonaws.com"
    assert sts_endpoint_for("cn-north-1") == "https://sts.cn-north-1.amazonaws.com.cn"
    assert sts_endpoint_for("us-gov-west-1") == "https://sts.us-gov-west-1.amazonaws.com"


class TestOnboarding:
    def test_external_id_is_uuid4(self) -> None:
        """A fresh ExternalId is a random UUID4, different each time."""
        a, b = new_external_id(), new_external_id()
        assert uuid.UUID(a).version == 4 and a != b

    def test_trust_policy_shape(self) -> None:
        """One ExternalId: a string condition; an account id becomes its root ARN."""
        policy = json.loads(json.dumps(trust_policy("111122223333", ["ext-1"])))
        (stmt,) = policy["Statement"]
        assert policy["Version"] == "2012-10-17"
        assert stmt["Effect"] == "Allow"
        assert stmt["Principal"] == {"AWS": "arn:aws:iam::111122223333:root"}
        assert stmt["Action"] == ["sts:AssumeRole"]
        assert stmt["Condition"] == {"StringEquals": {"sts:ExternalId": "ext-1"}}

    def test_trust_policy_many_ids_tags_source_identity(self) -> None:
        """Several ids: a list; --tags and --source-identity add their actions."""
        policy = trust_policy("arn:aws:iam::111122223333:role/platform", ["a-1", "b-2"], tags=True,
                              source_identity=True)
        (stmt,) = policy["Statement"]
        assert stmt["Action"] == ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]
        assert stmt["Condition"]["StringEquals"]["sts:ExternalId"] == ["a-1", "b-2"]

    @pytest.mark.parametrize(("principal", "ids"), [("12345", ["ok-1"]), ("111122223333", ["x"]),
                                                     ("111122223333", [])])
    def test_trust_policy_refuses_bad_input(self, principal: str, ids: list[str]) -> None:
        """Bad principals and ExternalIds are refused."""
        with pytest.raises(ValueError):
            trust_policy(principal, ids)


def test_file_reference_with_variable_in_path(tmp_path: pytest.TempPathFactory) -> None:
    """${file:${CREDENTIALS_DIRECTORY}/x} (systemd LoadCredential=) and ${file:${env:X}/x} read the file;
    an unset variable names itself."""
    from pathlib import Path

    creds_dir = Path(str(tmp_path))
    (creds_dir / "main_secret").write_text("s3cr3t\n")
    for ref in ("${file:${CREDENTIALS_DIRECTORY}/main_secret}", "${file:${env:CREDENTIALS_DIRECTORY}/main_secret}"):
        text = conf(f'source = "static"\naccess_key_id = "AK"\nsecret_access_key = "{ref}"')
        cfg = loads(text, env={"CREDENTIALS_DIRECTORY": str(creds_dir)})
        secret = cfg.connections["t"].credentials.secret_access_key
        assert secret is not None and secret.reveal() == "s3cr3t"
    with pytest.raises(ConfigError, match="'CREDENTIALS_DIRECTORY' is not set"):
        loads(conf('source = "static"\naccess_key_id = "AK"\nsecret_access_key = "${file:${CREDENTIALS_DIRECTORY}/x}"'),
              env={})
