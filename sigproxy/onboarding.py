"""Pure helpers for onboarding a customer account: a fresh ExternalId, the trust policy to paste into the
customer's IAM role, a CloudFormation template that creates that role, and the AWS CLI commands that do the
same (the flow SaaS platforms such as Nango, Nintex and Workato document).

Must not: do I/O or call AWS.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from typing import Any

__all__ = ["new_external_id", "trust_policy", "normalize_principal", "cloudformation_template",
           "create_role_commands", "hosted_template", "is_external_id", "DEFAULT_ROLE_NAME"]

DEFAULT_ROLE_NAME = "sigproxy-access"
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_ROLE_PATH = re.compile(r"^/(?:[\x21-\x7e]{1,510}/)?$")  # IAM: "/" or "/" + printable ASCII + "/"

_ACCOUNT = re.compile(r"^\d{12}$")
_PRINCIPAL_ARN = re.compile(r"^arn:aws(?:-[a-z]+)*:(?:iam|sts)::\d{12}:(?:root|user/.+|role/.+|assumed-role/.+)$")
# AWS allows 2-1224 characters of [\w+=,.@:/-] in an ExternalId.
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")


def new_external_id() -> str:
    """A fresh random ExternalId (a UUID4), unguessable by other tenants."""
    return str(uuid.uuid4())


def is_external_id(value: object) -> bool:
    """``value`` is an ExternalId AWS accepts (2-1224 characters of letters, digits and ``+=,.@:/-``)."""
    return isinstance(value, str) and _EXTERNAL_ID.match(value) is not None


def normalize_principal(principal: str) -> str:
    """``principal`` as a trust policy names it: an account id becomes its root ARN. Raises
    :class:`ValueError` unless it is a 12-digit account id or an IAM/STS ARN."""
    if _ACCOUNT.match(principal):
        return f"arn:aws:iam::{principal}:root"
    if not _PRINCIPAL_ARN.match(principal):
        raise ValueError(f"--principal must be a 12-digit account id or an IAM ARN, got {principal!r}")
    return principal


def _check_role(role_path: str | None, role_name: str) -> None:
    if role_path is not None and not _ROLE_PATH.match(role_path):
        raise ValueError(f"role path {role_path!r} must start and end with '/' (e.g. '/sigproxy-assumable/')")
    if not _ROLE_NAME.match(role_name):
        raise ValueError(f"role name {role_name!r} must be 1-64 characters of letters, digits and +=,.@_-")


def trust_policy(principal: str, external_ids: list[str], *, tags: bool = False,
                 source_identity: bool = False) -> dict[str, Any]:
    """The trust policy letting ``principal`` (an account id or an IAM ARN) assume the role only with one of
    ``external_ids``. Raises :class:`ValueError` naming what is wrong."""
    principal = normalize_principal(principal)
    if not external_ids:
        raise ValueError("at least one --external-id is required")
    for ext in external_ids:
        if not _EXTERNAL_ID.match(ext):
            raise ValueError(f"external id {ext!r} must be 2-1224 characters of letters, digits and +=,.@:/-")
    actions = ["sts:AssumeRole"]
    if tags:
        actions.append("sts:TagSession")
    if source_identity:
        actions.append("sts:SetSourceIdentity")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": principal},
                "Action": actions,
                "Condition": {
                    "StringEquals": {"sts:ExternalId": external_ids[0] if len(external_ids) == 1 else external_ids}
                },
            }
        ],
    }


def cloudformation_template(principal: str, external_ids: list[str], *, role_path: str | None = None,
                            role_name: str | None = None) -> dict[str, Any]:
    """A CloudFormation template (JSON) creating the customer's role: an ``AWS::IAM::Role`` whose trust policy
    is :func:`trust_policy` (``principal``, ``external_ids``), under ``role_path`` (default ``/``), with the
    parameters ``RoleName`` (default ``role_name`` or :data:`DEFAULT_ROLE_NAME`) and ``ManagedPolicyArns``
    (a comma-separated list of the permissions to grant, default none), and the output ``RoleArn``: the ARN
    to give back to the platform.

    Raises :class:`ValueError` naming what is wrong (principal, ExternalId, path, name).
    """
    name = role_name or DEFAULT_ROLE_NAME
    _check_role(role_path, name)
    policy = trust_policy(principal, external_ids)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "An IAM role the platform assumes through sigproxy, only with its ExternalId.",
        "Parameters": {
            "RoleName": {"Type": "String", "Default": name, "AllowedPattern": r"[\w+=,.@-]{1,64}",
                         "Description": "Name of the role to create."},
            "ManagedPolicyArns": {"Type": "CommaDelimitedList", "Default": "",
                                  "Description": "ARNs of the managed policies granting what the platform may do "
                                                 "(e.g. arn:aws:iam::aws:policy/ReadOnlyAccess); empty: none."},
        },
        "Conditions": {
            "HasManagedPolicies": {"Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "ManagedPolicyArns"}]},
                                                               ""]}]},
        },
        "Resources": {
            "Role": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": {"Ref": "RoleName"},
                    "Path": role_path or "/",
                    "AssumeRolePolicyDocument": policy,
                    "ManagedPolicyArns": {"Fn::If": ["HasManagedPolicies", {"Ref": "ManagedPolicyArns"},
                                                     {"Ref": "AWS::NoValue"}]},
                },
            },
        },
        "Outputs": {
            "RoleArn": {"Description": "Give this ARN back to the platform.", "Value": {"Fn::GetAtt": ["Role", "Arn"]}},
        },
    }


def create_role_commands(principal: str, external_ids: list[str], *, role_path: str | None = None,
                         role_name: str | None = None, policy_arns: tuple[str, ...] = ()) -> list[str]:
    """The shell commands (AWS CLI) creating the same role as :func:`cloudformation_template`: write the trust
    policy to ``trust-policy.json``, ``aws iam create-role`` (printing the role's ARN), then one
    ``aws iam attach-role-policy`` per ARN of ``policy_arns``. Raises :class:`ValueError` like it."""
    name = role_name or DEFAULT_ROLE_NAME
    _check_role(role_path, name)
    policy = json.dumps(trust_policy(principal, external_ids), indent=2)
    commands = [
        f"cat > trust-policy.json <<'EOF'\n{policy}\nEOF",
        f"aws iam create-role --role-name {shlex.quote(name)} --path {shlex.quote(role_path or '/')} "
        "--assume-role-policy-document file://trust-policy.json --query Role.Arn --output text",
    ]
    commands += [f"aws iam attach-role-policy --role-name {shlex.quote(name)} --policy-arn {shlex.quote(arn)}"
                 for arn in policy_arns]
    return commands


def hosted_template(principal: str, *, role_path: str | None = None) -> dict[str, Any]:
    """The generic CloudFormation template an operator uploads to S3 once (``[connect] template_url``) for
    the console's quick-create link: :func:`cloudformation_template` with the ExternalId a parameter instead
    of a constant. Parameters: ``ExternalId`` (required), ``RoleName`` (default :data:`DEFAULT_ROLE_NAME`),
    ``ManagedPolicyArns`` (default none); output ``RoleArn``. The principal and the role path are the
    operator's, fixed in the template. Raises :class:`ValueError` like :func:`cloudformation_template`."""
    template = cloudformation_template(principal, ["placeholder"], role_path=role_path)
    template["Description"] = ("An IAM role the platform assumes through sigproxy, only with the ExternalId the "
                               "platform gave you.")
    template["Parameters"] = {
        "ExternalId": {"Type": "String", "AllowedPattern": r"[\w+=,.@:/-]{2,1224}",
                       "Description": "The ExternalId the platform's connect page shows you."},
        **template["Parameters"],
    }
    statement = template["Resources"]["Role"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    statement["Condition"] = {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    return template
