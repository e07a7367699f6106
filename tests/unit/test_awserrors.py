"""Proxy errors in the AWS protocol the request speaks: the protocol table against botocore's models, the
protocol worked out from each hint, and every rendering read back by botocore's own parsers."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.parsers import create_parser
from multidict import CIMultiDict

from sigproxy import errors
from sigproxy.awserrors import PROTOCOLS, protocol_for, render, signing_name_for
from sigproxy.errors import CredentialsTemporarilyUnavailable, CredentialsUnavailable, HostNotAllowed, SigproxyError
from sigproxy.handler import AwsDialect, error_response
from sigproxy.workers.wire import error_from_json, error_to_json

SESSION = botocore.session.get_session()
ROOT = Path(__file__).resolve().parents[2]


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_protocols", ROOT / "scripts" / "gen_protocols.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestTable:
    @pytest.mark.parametrize(("signing_name", "botocore_name", "protocol"), [
        ("s3", "s3", "rest-xml"), ("sts", "sts", "query"), ("iam", "iam", "query"), ("sqs", "sqs", "json"),
        ("sns", "sns", "query"), ("dynamodb", "dynamodb", "json"), ("lambda", "lambda", "rest-json"),
        ("ec2", "ec2", "ec2"), ("kms", "kms", "json"), ("secretsmanager", "secretsmanager", "json"),
    ])
    def test_named_services_agree_with_botocore(self, signing_name: str, botocore_name: str, protocol: str) -> None:
        """The services the docs and tests name: the shipped table says what botocore's client speaks."""
        model = SESSION.get_service_model(botocore_name)
        assert model.signing_name == signing_name
        assert PROTOCOLS[signing_name] == model.resolved_protocol == protocol

    def test_whole_table_is_what_the_generator_makes_from_the_installed_botocore(self) -> None:
        """Every entry still agrees with botocore (regenerate with scripts/gen_protocols.py when this fails
        after a botocore upgrade)."""
        made = {name: protocol for name, (protocol, _) in _generator().model_protocols().items()}
        assert dict(PROTOCOLS) == made

    def test_values_are_protocols_render_knows(self) -> None:
        for protocol in set(PROTOCOLS.values()):
            render(protocol, code="SigproxyX", message="m", request_id="r", status=400)


def _headers(**kw: str) -> CIMultiDict[str]:
    return CIMultiDict({k.replace("_", "-"): v for k, v in kw.items()})


class TestProtocolFor:
    @pytest.mark.parametrize(("headers", "method", "query", "name", "expected"), [
        ({"X-Amz-Target": "DynamoDB_20120810.GetItem"}, "POST", "", None, "json"),
        ({"Content-Type": "application/x-amz-json-1.0"}, "POST", "", "sqs", "json"),  # SQS's JSON protocol
        ({"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, "POST", "", "sqs", "query"),
        ({}, "GET", "Action=GetCallerIdentity&Version=2011-06-15", None, "query"),
        ({}, "GET", "Action=DescribeInstances", "ec2", "ec2"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "POST", "", "ec2", "ec2"),
        ({"smithy-protocol": "rpc-v2-cbor"}, "POST", "", "cloudwatch", "smithy-rpc-v2-cbor"),
        ({"Content-Type": "application/cbor"}, "POST", "", None, "smithy-rpc-v2-cbor"),
        ({}, "GET", "list-type=2", "s3", "rest-xml"),
        ({}, "GET", "", "lambda", "rest-json"),
        ({}, "POST", "", "sts", "query"),  # the table's default for a hint-less request
        ({}, "GET", "", None, None),  # nothing to go by: sigproxy's JSON
        ({}, "GET", "", "no-such-service", None),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "GET", "", None, None),  # a form GET is no hint
        ({}, "GET", "Actions=1&xAction=2", None, None),  # only the exact query key
    ])
    def test_hints_then_table(self, headers: dict[str, str], method: str, query: str, name: str | None,
                              expected: str | None) -> None:
        assert protocol_for(CIMultiDict(headers), method, query, name) == expected

    def test_signing_name_order(self) -> None:
        """Resolved service, else the client's credential scope, else the host, else None."""
        auth = ("AWS4-HMAC-SHA256 Credential=AKID/20250101/eu-west-1/dynamodb/aws4_request, "
                "SignedHeaders=host, Signature=00")
        assert signing_name_for("sqs", auth, "", "sts.amazonaws.com") == "sqs"
        assert signing_name_for(None, auth, "", "sts.amazonaws.com") == "dynamodb"
        presigned = "X-Amz-Credential=AKID%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=00"
        assert signing_name_for(None, None, presigned, "sts.amazonaws.com") == "s3"
        assert signing_name_for(None, None, "", "sts.eu-west-1.amazonaws.com") == "sts"
        assert signing_name_for(None, None, "", "example.com") is None
        assert signing_name_for(None, None, "", "") is None


# (protocol, botocore service, operation, signing name)
CASES = [
    ("rest-xml", "s3", "ListBuckets", "s3"),
    ("rest-xml", "route53", "ListHostedZones", "route53"),  # <ErrorResponse>, not S3's bare <Error>
    ("query", "sts", "GetCallerIdentity", "sts"),
    ("query", "sqs", "ListQueues", "sqs"),  # SQS spoken in its query protocol
    ("ec2", "ec2", "DescribeInstances", "ec2"),
    ("json", "dynamodb", "ListTables", "dynamodb"),
    ("rest-json", "lambda", "ListFunctions", "lambda"),
    ("smithy-rpc-v2-cbor", "cloudwatchomni", "CreateAccessGrant", "cloudwatch"),
]
NASTY = "host 'a<b>&c\"d' is not in hosts ['x']; add it\x01"


@pytest.mark.parametrize(("protocol", "service", "operation", "signing_name"), CASES)
@pytest.mark.parametrize("status", [403, 503])
def test_botocore_reads_code_message_and_request_id(protocol: str, service: str, operation: str,
                                                    signing_name: str, status: int) -> None:
    """botocore's own parser for the protocol, given a real operation model, finds the sigproxy code, the
    message (XML-escaped on the wire, the `<&>"'` intact once parsed) and the request id."""
    content_type, headers, body = render(protocol, code="SigproxyHostNotAllowed", message=NASTY,
                                         request_id="abc-1", status=status, signing_name=signing_name)
    op = SESSION.get_service_model(service).operation_model(operation)
    parsed = create_parser(protocol).parse(
        {"status_code": status, "headers": CIMultiDict([("Content-Type", content_type), *headers]), "body": body},
        op.output_shape,
    )
    assert parsed["Error"]["Code"] == "SigproxyHostNotAllowed"
    xml = protocol in ("rest-xml", "query", "ec2")  # XML 1.0 can't carry \x01 at all: replaced
    assert parsed["Error"]["Message"] == (NASTY.replace("\x01", "\ufffd") if xml else NASTY)
    assert parsed["ResponseMetadata"]["RequestId"] == "abc-1"


def test_xml_is_escaped_and_well_formed() -> None:
    _, _, body = render("query", code="SigproxyX", message="<Error>&amp;</Error>", request_id="r", status=400)
    assert b"<Message>&lt;Error&gt;&amp;amp;&lt;/Error&gt;</Message>" in body
    assert b"<Type>Sender</Type>" in body
    _, _, body = render("query", code="SigproxyX", message="m", request_id="r", status=502)
    assert b"<Type>Receiver</Type>" in body


def test_s3_error_is_a_bare_error_root() -> None:
    _, headers, body = render("rest-xml", code="SigproxyX", message="m", request_id="r", status=403,
                              signing_name="s3")
    assert b"<Error><Code>SigproxyX</Code>" in body and ("x-amz-request-id", "r") in headers


class TestResponse:
    def test_with_a_dialect_the_body_is_the_protocol_and_the_header_stays(self) -> None:
        r = error_response(HostNotAllowed("add it"), "req-1", dialect=AwsDialect("json", "dynamodb"))
        headers = dict(r.headers)
        assert (r.status, headers["X-Sigproxy-Error"], headers["X-Sigproxy-Request-Id"]) == (
            403, "host_not_allowed", "req-1")
        assert headers["x-amzn-ErrorType"] == "SigproxyHostNotAllowed"
        assert headers["Content-Type"] == "application/x-amz-json-1.1"
        assert r.body == b'{"__type": "SigproxyHostNotAllowed", "message": "add it"}'

    def test_without_a_dialect_the_json_body(self) -> None:
        r = error_response(HostNotAllowed("add it"), "req-1")
        assert dict(r.headers)["Content-Type"] == "application/json"
        assert r.body == b'{"error": {"code": "host_not_allowed", "message": "add it", "request_id": "req-1"}}'


# The AWS codes are a fixed interface: renaming one breaks users' error handling. Add, never change.
AWS_CODES = {
    "SigproxyError": (500, "internal_error", "SigproxyInternalError"),
    "BadRequest": (400, "bad_request", "SigproxyBadRequest"),
    "UnresolvableTarget": (400, "unresolvable_target", "SigproxyUnresolvableTarget"),
    "UnsupportedRequest": (400, "unsupported_request", "SigproxyUnsupportedRequest"),
    "Forbidden": (403, "forbidden", "SigproxyForbidden"),
    "HostNotAllowed": (403, "host_not_allowed", "SigproxyHostNotAllowed"),
    "PolicyRefused": (403, "policy_refused", "SigproxyPolicyRefused"),
    "AddressNotAllowed": (403, "address_not_allowed", "SigproxyAddressNotAllowed"),
    "ClientNotAllowed": (403, "client_not_allowed", "SigproxyClientNotAllowed"),
    "ClientSignatureInvalid": (403, "client_signature_invalid", "SigproxyClientSignatureInvalid"),
    "ProxyAuthRequired": (407, "no_connection", "SigproxyNoConnection"),
    "BadProxyToken": (407, "bad_proxy_token", "SigproxyBadProxyToken"),
    "BodyTimeout": (408, "body_timeout", "SigproxyBodyTimeout"),
    "BodyTooLarge": (413, "body_too_large", "SigproxyBodyTooLarge"),
    "TooManyAuthFailures": (429, "too_many_auth_failures", "SigproxyTooManyAuthFailures"),
    "TransferCodingNotImplemented": (501, "unsupported_transfer_coding", "SigproxyUnsupportedTransferCoding"),
    "ClientAborted": (499, "client_aborted", "SigproxyClientAborted"),
    "CredentialsUnavailable": (403, "credentials_unavailable", "SigproxyCredentialsUnavailable"),
    "CredentialsTemporarilyUnavailable": (503, "credentials_unavailable",
                                          "SigproxyCredentialsTemporarilyUnavailable"),
    "TooManyConnections": (503, "too_many_connections", "SigproxyTooManyConnections"),
    "UpstreamError": (502, "upstream_error", "SigproxyUpstreamError"),
    "UpstreamClosed": (502, "upstream_error", "SigproxyUpstreamError"),
    "UpstreamTimeout": (504, "upstream_timeout", "SigproxyUpstreamTimeout"),
}


def test_every_error_has_its_fixed_aws_code() -> None:
    classes = {name: cls for name, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, SigproxyError)}
    assert {name: (cls.status, cls.code, cls.aws_code) for name, cls in classes.items()} == AWS_CODES
    docstring = errors.__doc__ or ""
    assert all(code in docstring for _, _, code in AWS_CODES.values() if code != "SigproxyInternalError")


@pytest.mark.parametrize(("sts_code", "transient"), [
    ("AccessDenied", False), ("InvalidClientTokenId", False), ("ValidationError", False), ("ExpiredToken", False),
    ("RegionDisabledException", False), (None, False),
    ("Throttling", True), ("RequestLimitExceeded", True), ("ServiceUnavailable", True), ("InternalFailure", True),
    ("IDPCommunicationError", True),
])
def test_sts_codes_split_permanent_from_transient(sts_code: str | None, transient: bool) -> None:
    exc = CredentialsUnavailable.from_sts("m", sts_code=sts_code)
    assert isinstance(exc, CredentialsTemporarilyUnavailable) is transient
    assert exc.status == (503 if transient else 403)
    assert exc.code == "credentials_unavailable"
    back = error_from_json(error_to_json(exc))  # the worker <-> supervisor wire keeps the kind
    assert type(back) is type(exc) and back.status == exc.status  # type: ignore[attr-defined]


def test_botocore_failures_split_permanent_from_transient() -> None:
    """STS's answer or botocore's exception decides: unreachable or throttled is 503, refused is 403."""
    from botocore.exceptions import EndpointConnectionError, ParamValidationError, ReadTimeoutError

    from sigproxy.credentials import _sts_error

    def refused(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}}, "AssumeRole")

    cases: list[tuple[Exception, int]] = [
        (refused("AccessDenied"), 403), (refused("ValidationError"), 403), (refused("Throttling"), 503),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), 503),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), 503),
        (ParamValidationError(report="RoleArn too short"), 403),
    ]
    for exc, status in cases:
        err = _sts_error("c", "AssumeRole", exc)
        assert (type(exc).__name__, err.status) == (type(exc).__name__, status)
