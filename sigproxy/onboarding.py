"""Pure helpers for onboarding a customer account: a fresh ExternalId and the trust policy to paste into
the customer's IAM role (the flow SaaS platforms such as Nango, Nintex and Workato document).

Must not: do I/O or call AWS.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

__all__ = ["new_external_id", "trust_policy"]

_ACCOUNT = re.compile(r"^\d{12}$")
_PRINCIPAL_ARN = re.compile(r"^arn:aws(?:-[a-z]+)*:(?:iam|sts)::\d{12}:(?:root|user/.+|role/.+|assumed-role/.+)$")
# AWS allows 2-1224 characters of [\w+=,.@:/-] in an ExternalId.
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")


def new_external_id() -> str:
    """A fresh random ExternalId (a UUID4), unguessable by other tenants."""
    return str(uuid.uuid4())


def trust_policy(principal: str, external_ids: list[str], *, tags: bool = False,
                 source_identity: bool = False) -> dict[str, Any]:
    """The trust policy letting ``principal`` (an account id or an IAM ARN) assume the role only with one of
    ``external_ids``. Raises :class:`ValueError` naming what is wrong."""
    if _ACCOUNT.match(principal):
        principal = f"arn:aws:iam::{principal}:root"
    elif not _PRINCIPAL_ARN.match(principal):
        raise ValueError(f"--principal must be a 12-digit account id or an IAM ARN, got {principal!r}")
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
