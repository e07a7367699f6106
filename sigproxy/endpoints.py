"""Pure: an AWS host name -> (signing service, region).

Owns the knowledge of AWS endpoint shapes: regional (``sqs.eu-west-1.amazonaws.com``), S3 virtual-host
and path style, legacy ``s3-REGION`` and ``s3-external-1``, dualstack and FIPS, ``*.api.aws``, global
services that sign in their partition's first region, the ``aws-cn`` and ``aws-us-gov`` partitions,
``execute-api``, OpenSearch (``es``, ``aoss``), ``aps-workspaces``, Lambda function URLs, and endpoint
prefixes whose signing name differs (``bedrock-runtime`` signs as ``bedrock``).
Must not: do I/O, know about connections or requests.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

__all__ = ["Endpoint", "MRAP_SIGNING_REGION_SET", "is_mrap_host", "parse_host"]

_REGION: Final = re.compile(r"^(?:[a-z]{2}|us-gov|us-iso[a-z]?|eu-isoe?)-[a-z]+-\d{1,2}$")

# (suffix, partition's signing region for global endpoints); longest first.
_SUFFIXES: Final[tuple[tuple[str, str], ...]] = (
    (".amazonaws.com.cn", "cn-north-1"),
    (".api.amazonwebservices.com.cn", "cn-north-1"),
    (".amazonaws.com", "us-east-1"),
    (".api.aws", "us-east-1"),
    (".on.aws", "us-east-1"),
)

# Endpoint prefix -> signing name, where they differ.
_SIGNING_NAMES: Final[dict[str, str]] = {
    "bedrock-runtime": "bedrock",
    "bedrock-agent-runtime": "bedrock",
    "bedrock-agent": "bedrock",
    "aps-workspaces": "aps",
    "runtime.sagemaker": "sagemaker",
    "runtime-v2-lex": "lex",
    "runtime.lex": "lex",
    "email": "ses",
    "streams.dynamodb": "dynamodb",
    "api.ecr": "ecr",
    "data.iot": "iotdata",
    "data-ats.iot": "iotdata",
    "appsync-api": "appsync",
    "lambda-url": "lambda",
    "api.pricing": "pricing",
    "api.sagemaker": "sagemaker",
    "sts-fips": "sts",
    # Checked against botocore's service models (``signingName``) and endpoints.json (``credentialScope``).
    "aos": "es",
    "appconfigdata": "appconfig",
    "appstream2": "appstream",
    "cassandra-streams": "cassandra",
    "cloudhsmv2": "cloudhsm",
    "contact-lens": "connect",
    "eventsv2": "events",
    "forecastquery": "forecast",
    "identity-chime": "chime",
    "media-pipelines-chime": "chime",
    "meetings-chime": "chime",
    "messaging-chime": "chime",
    "voice-chime": "chime",
    "ivsrealtime": "ivs",
    "mail-manager": "ses",
    "memory-db": "memorydb",
    "migrationhub-config": "mgh",
    "models-v2-lex": "lex",
    "participant.connect": "execute-api",
    "personalize-events": "personalize",
    "personalize-runtime": "personalize",
    "pinpoint": "mobiletargeting",
    "sms-voice.pinpoint": "sms-voice",
    "servicecatalog-appregistry": "servicecatalog",
    "portal.sso": "awsssoportal",
    "oidc": "sso-oauth",
    "bedrock-data-automation": "bedrock",
    "bedrock-data-automation-runtime": "bedrock",
    "bedrock-agentcore-control": "bedrock-agentcore",
    "agent-registry-control": "agent-registry",
    "cloudwatch-omni": "cloudwatch",
    "iam-toolbox": "iam",
    "partnercentral-prm": "partnercentral",
    "catalog.marketplace": "aws-marketplace",
    "entitlement.marketplace": "aws-marketplace",
    "metering.marketplace": "aws-marketplace",
    "agreement-marketplace": "aws-marketplace",
    "deployment-marketplace": "aws-marketplace",
    "discovery-marketplace": "aws-marketplace",
    "entitlement-marketplace": "aws-marketplace",
    "metering-marketplace": "aws-marketplace",
    "reporting-marketplace": "aws-marketplace",
    "data.ats.iot": "iotdata",
    "data.jobs.iot": "iot-jobs-data",
    "greengrass-ats.iot": "greengrass",
    # Operation host prefixes (``endpoint.hostPrefix``) glued to the endpoint prefix.
    "sync-states": "states",
    "stream-logs": "logs",
    "data-signer": "signer",
    "data-servicediscovery": "servicediscovery",
    "data-lakeformation": "lakeformation",
    "query-lakeformation": "lakeformation",
    "runtime-medical-imaging": "medical-imaging",
    "analytics-omics": "omics",
    "control-storage-omics": "omics",
    "storage-omics": "omics",
    "tags-omics": "omics",
    "workflows-omics": "omics",
    # Global endpoints whose key has more than one label.
    "global.health": "health",
    "iam.global": "iam",
}

# Global endpoints (no region in the name) and where they sign, per partition suffix.
_GLOBAL: Final[dict[str, dict[str, str]]] = {
    ".amazonaws.com": {
        "iam": "us-east-1", "sts": "us-east-1", "route53": "us-east-1", "cloudfront": "us-east-1",
        "organizations": "us-east-1", "waf": "us-east-1", "shield": "us-east-1",
        "globalaccelerator": "us-west-2", "networkmanager": "us-west-2", "importexport": "us-east-1",
        "budgets": "us-east-1", "ce": "us-east-1", "health": "us-east-1", "sdb": "us-east-1",
        "s3": "us-east-1", "s3-external-1": "us-east-1", "savingsplans": "us-east-1",
        "global.health": "us-east-1",
    },
    ".amazonaws.com.cn": {"iam": "cn-north-1", "sts": "cn-north-1", "route53": "cn-northwest-1",
                          "organizations": "cn-northwest-1", "s3": "cn-north-1", "budgets": "cn-northwest-1",
                          "global.health": "cn-northwest-1"},
    ".api.aws": {"iam.global": "us-east-1"},
}
# `iam.us-gov.amazonaws.com`: GovCloud's global IAM endpoint.
_GOV_GLOBAL: Final = {"iam": "us-gov-west-1", "route53": "us-gov-west-1", "organizations": "us-gov-west-1"}
_SKIP: Final = frozenset({"dualstack", "fips"})
# Host names whose answer is kept (a proxy signs for a handful of hosts, again and again), and the longest kept:
# a DNS name has at most 253 characters, so anything longer is worked out each time and never held.
_CACHE_SIZE: Final = 1024
_CACHED_LEN: Final = 254


@dataclass(frozen=True, slots=True)
class Endpoint:
    service: str | None
    region: str | None
    s3_bucket_in_host: bool = False


def _signing_name(prefix: str) -> str:
    if prefix in _SIGNING_NAMES:
        return _SIGNING_NAMES[prefix]
    if prefix.endswith("-fips"):
        prefix = prefix[: -len("-fips")]
    return _SIGNING_NAMES.get(prefix, prefix)


def _s3(labels: list[str], suffix_region: str) -> Endpoint | None:
    """S3 shapes; ``labels`` without the partition suffix. Rightmost ``s3*`` label wins (bucket names may
    contain dots and even the label ``s3``)."""
    for i in range(len(labels) - 1, -1, -1):
        lab = labels[i]
        if lab == "s3" or lab.startswith(("s3-", "s3.")):
            break
    else:
        return None
    bucket = i > 0
    rest = [x for x in labels[i + 1 :] if x not in _SKIP]
    base = lab.removesuffix("-fips")
    if base in ("s3", "s3-accesspoint", "s3-control", "s3-object-lambda", "s3-outposts"):
        region = rest[0] if rest and _REGION.match(rest[0]) else None
        if region is None and rest:
            return None  # something after s3 we don't understand: don't guess
        return Endpoint(base if base in ("s3-object-lambda", "s3-outposts") else "s3",
                        region or suffix_region, bucket)
    if lab == "s3-external-1":
        return Endpoint("s3", "us-east-1", bucket)
    legacy = lab[3:].removeprefix("fips-")
    if _REGION.match(legacy) and not rest:
        return Endpoint("s3", legacy, bucket)
    return None


MRAP_SIGNING_REGION_SET: Final = "*"
"""S3 Multi-Region Access Points (``ALIAS.mrap.accesspoint.s3-global.amazonaws.com``) take SigV4A signed for every
region ("Multi-Region Access Point restrictions and limitations", S3 user guide; botocore's S3 endpoint rules give
``signingRegionSet: ["*"]``)."""


def is_mrap_host(host: str) -> bool:
    """Whether ``host`` is an S3 Multi-Region Access Point endpoint (``*.mrap.accesspoint.s3-global.<partition>``)."""
    return parse_host(host).region == MRAP_SIGNING_REGION_SET


def parse_host(host: str) -> Endpoint:
    """Work out the signing service and region from an AWS host name; fields are ``None`` when unknown."""
    if len(host) <= _CACHED_LEN:
        return _parse_host_cached(host)
    return _parse_host(host)


def _parse_host(host: str) -> Endpoint:
    host = host.lower().rstrip(".")
    match = next(((sfx, reg) for sfx, reg in _SUFFIXES if host.endswith(sfx)), None)
    if match is None:
        return Endpoint(None, None)
    suffix, partition_region = match
    labels = host[: -len(suffix)].split(".")
    if suffix == ".on.aws":
        # Lambda function URLs: <url-id>.lambda-url.<region>.on.aws
        if len(labels) >= 3 and labels[-2] == "lambda-url" and _REGION.match(labels[-1]):
            return Endpoint("lambda", labels[-1])
        return Endpoint(None, None)

    if len(labels) >= 4 and labels[-3:] == ["mrap", "accesspoint", "s3-global"]:
        return Endpoint("s3", "*", False)  # MRAP: no region; SigV4A with region set "*" (MRAP_SIGNING_REGION_SET)
    s3 = _s3(labels, partition_region)
    if s3 is not None:
        return s3

    # GovCloud global IAM: iam.us-gov.amazonaws.com
    if len(labels) == 2 and labels[1] == "us-gov" and labels[0] in _GOV_GLOBAL:
        return Endpoint(labels[0], _GOV_GLOBAL[labels[0]])

    region_idx = next((i for i in range(len(labels) - 1, -1, -1) if _REGION.match(labels[i])), None)
    if region_idx is None:
        globals_ = _GLOBAL.get(suffix, {})
        name = labels[-1] if labels else ""
        key = ".".join(x.removesuffix("-fips") for x in labels)  # iam-fips.amazonaws.com
        if key in globals_:
            return Endpoint(_signing_name(key), globals_[key])
        if name in globals_ and len(labels) == 1:
            return Endpoint(_signing_name(name), globals_[name])
        return Endpoint(None, None)

    region = labels[region_idx]
    after = [x for x in labels[region_idx + 1 :] if x not in _SKIP]
    if after:
        # <domain>.<region>.es.amazonaws.com, <id>.<region>.aoss.amazonaws.com
        return Endpoint(_signing_name(".".join(after)), region)
    # FIPS may mark any label: data.iot-fips, appstream2-fips.
    before = [x.removesuffix("-fips") for x in labels[:region_idx] if x not in _SKIP]
    if not before:
        return Endpoint(None, region)
    if before[-1].startswith("s3express-"):
        # S3 Express One Zone: zonal <bucket>.s3express-<az-id>.<region> and s3express-control.<region>; botocore's
        # S3 endpoint rules give both the signing name "s3express".
        return Endpoint("s3express", region, len(before) > 1)
    # Try three- and two-label prefixes first (data.jobs.iot, runtime.sagemaker, streams.dynamodb, api.ecr).
    for n in (3, 2):
        if len(before) >= n and ".".join(before[-n:]) in _SIGNING_NAMES:
            return Endpoint(_SIGNING_NAMES[".".join(before[-n:])], region)
    return Endpoint(_signing_name(before[-1]), region)


_parse_host_cached: Final = functools.lru_cache(maxsize=_CACHE_SIZE)(_parse_host)
