"""The pure onboarding helpers: trust policy, CloudFormation template, AWS CLI commands."""

from __future__ import annotations

import json
import shlex

import pytest

from sigproxy.onboarding import (
    DEFAULT_ROLE_NAME,
    cloudformation_template,
    create_role_commands,
    normalize_principal,
    trust_policy,
)

PLATFORM = "arn:aws:iam::111122223333:role/platform"


def test_principal_account_id_becomes_root() -> None:
    assert normalize_principal("111122223333") == "arn:aws:iam::111122223333:root"
    assert normalize_principal(PLATFORM) == PLATFORM
    with pytest.raises(ValueError, match="account id or an IAM ARN"):
        normalize_principal("arn:aws:s3:::bucket")


def test_template_role_is_the_trust_policy() -> None:
    t = cloudformation_template(PLATFORM, ["ext-1", "ext-2"], role_path="/sigproxy-assumable/", role_name="acme")
    role = t["Resources"]["Role"]
    assert role["Type"] == "AWS::IAM::Role"
    props = role["Properties"]
    assert props["AssumeRolePolicyDocument"] == trust_policy(PLATFORM, ["ext-1", "ext-2"])
    assert props["Path"] == "/sigproxy-assumable/"
    assert props["RoleName"] == {"Ref": "RoleName"}
    assert t["Parameters"]["RoleName"]["Default"] == "acme"
    assert t["Parameters"]["ManagedPolicyArns"] == {
        "Type": "CommaDelimitedList", "Default": "", "Description": t["Parameters"]["ManagedPolicyArns"]["Description"]}
    # an empty list attaches nothing (AWS::NoValue), a given one is attached
    assert props["ManagedPolicyArns"]["Fn::If"][0] == "HasManagedPolicies"
    assert "HasManagedPolicies" in t["Conditions"]
    assert t["Outputs"]["RoleArn"]["Value"] == {"Fn::GetAtt": ["Role", "Arn"]}
    json.dumps(t)  # JSON all the way down


def test_template_defaults() -> None:
    t = cloudformation_template("111122223333", ["ext-1"])
    assert t["Resources"]["Role"]["Properties"]["Path"] == "/"
    assert t["Parameters"]["RoleName"]["Default"] == DEFAULT_ROLE_NAME
    statement = t["Resources"]["Role"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"AWS": "arn:aws:iam::111122223333:root"}
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": "ext-1"}}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"role_path": "no-slashes"}, "role path"),
    ({"role_path": "//"}, "role path"),
    ({"role_name": "a b"}, "role name"),
    ({"role_name": "x" * 65}, "role name"),
])
def test_template_refuses_bad_role(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cloudformation_template(PLATFORM, ["ext-1"], **kwargs)


def test_template_refuses_bad_external_id() -> None:
    with pytest.raises(ValueError, match="external id"):
        cloudformation_template(PLATFORM, ["a b"])
    with pytest.raises(ValueError, match="at least one"):
        cloudformation_template(PLATFORM, [])


def test_create_role_commands() -> None:
    cmds = create_role_commands(PLATFORM, ["ext-1"], role_path="/sigproxy-assumable/", role_name="acme",
                                policy_arns=("arn:aws:iam::aws:policy/ReadOnlyAccess",))
    heredoc, create, attach = cmds
    assert heredoc.startswith("cat > trust-policy.json <<'EOF'\n") and heredoc.endswith("\nEOF")
    assert json.loads(heredoc.split("\n", 1)[1].rsplit("\n", 1)[0]) == trust_policy(PLATFORM, ["ext-1"])
    argv = shlex.split(create)
    assert argv[:3] == ["aws", "iam", "create-role"]
    assert argv[argv.index("--role-name") + 1] == "acme"
    assert argv[argv.index("--path") + 1] == "/sigproxy-assumable/"
    assert argv[argv.index("--assume-role-policy-document") + 1] == "file://trust-policy.json"
    assert shlex.split(attach)[-1] == "arn:aws:iam::aws:policy/ReadOnlyAccess"
    assert len(create_role_commands(PLATFORM, ["ext-1"])) == 2
