"""Pure: a proxy error in the error format of the AWS protocol the request speaks, so that SDKs and the AWS CLI
print sigproxy's code and message (``An error occurred (SigproxyHostNotAllowed) when calling ...``).

Two steps, both without I/O:

* :func:`protocol_for` works the protocol out: the request's own hints first (``X-Amz-Target`` or an
  ``application/x-amz-json-1.x`` body: ``json``; ``smithy-protocol: rpc-v2-cbor`` or ``application/cbor``:
  ``smithy-rpc-v2-cbor``; ``Action=`` in the query or a form-encoded POST: ``query``, ``ec2`` for EC2), then the
  signing name in ``data/protocols.json`` (generated from botocore's service models by
  ``scripts/gen_protocols.py``); ``None`` when neither says (curl to a non-AWS host: the caller keeps its JSON).
* :func:`render` writes the body and headers the way botocore's parsers (``botocore/parsers.py``)
  read them: ``RestXMLParser`` (S3's bare ``<Error>``, other rest-xml services' ``<ErrorResponse>``),
  ``QueryParser``, ``EC2QueryParser``, ``JSONParser`` (``__type``), ``RestJSONParser`` (``x-amzn-ErrorType``),
  ``RpcV2CBORParser``. Request ids go where AWS puts them (``x-amz-request-id`` for S3, ``x-amzn-RequestId`` for
  the JSON protocols, ``<RequestId>``/``<RequestID>`` in the XML ones).

Must not: do I/O, know about connections or error classes beyond the code and message given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from importlib.resources import files
from typing import Final
from xml.etree import ElementTree as ET

import cbor2

from .endpoints import parse_host
from .routing import parse_client_scope

__all__ = ["PROTOCOLS", "AwsErrorBody", "protocol_for", "render", "signing_name_for"]

PROTOCOLS: Final[Mapping[str, str]] = json.loads(
    files("sigproxy.data").joinpath("protocols.json").read_text(encoding="utf-8"))
"""Signing name -> the protocol botocore's clients speak to it (``rest-xml``, ``query``, ``ec2``, ``json``,
``rest-json``, ``smithy-rpc-v2-cbor``). Where a signing name has several (SQS: ``json`` and ``query``), the
request's hints decide and this is the default."""

AwsErrorBody = tuple[str, list[tuple[str, str]], bytes]
"""(Content-Type, extra headers, body)."""


def signing_name_for(service: str | None, authorization: str | None, query: str, host: str) -> str | None:
    """The signing name to look the protocol up by: the resolved ``service`` if routing got that far, else the
    client's own credential scope (``Authorization`` or ``X-Amz-Credential``), else the host
    (:func:`sigproxy.endpoints.parse_host`); ``None`` when none of them names one."""
    if service:
        return service
    scope = parse_client_scope(authorization, query)
    if scope is not None and scope.service:
        return scope.service
    return parse_host(host).service if host else None


def _query_keys(query: str) -> set[str]:
    return {part.partition("=")[0] for part in query.split("&") if part}


def protocol_for(headers: Mapping[str, str], method: str, query: str, signing_name: str | None) -> str | None:
    """The AWS protocol a request speaks, or ``None`` when it can't be told (answer in sigproxy's JSON).

    ``headers``: case-insensitive (a ``CIMultiDict``); ``query``: the raw query string; ``signing_name``: from
    :func:`signing_name_for`. Hints in the request win over the table (SQS speaks ``json`` and ``query``).
    """
    content_type = headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if "X-Amz-Target" in headers or content_type.startswith("application/x-amz-json-"):
        return "json"
    if headers.get("smithy-protocol", "").lower() == "rpc-v2-cbor" or content_type == "application/cbor":
        return "smithy-rpc-v2-cbor"
    if "Action" in _query_keys(query) or (method == "POST" and content_type == "application/x-www-form-urlencoded"):
        return "ec2" if signing_name == "ec2" else "query"
    protocol = PROTOCOLS.get(signing_name) if signing_name else None
    return protocol if protocol in _RENDERERS else None  # a protocol newer than this module: sigproxy's JSON


# Characters XML 1.0 cannot carry even escaped (XML 1.0 section 2.2); a message never needs them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(root: str, error_parent: str | None, fields: list[tuple[str, str]],
         after: list[tuple[str, str]]) -> bytes:
    """``<root>[<error_parent>]<Error><k>v</k>...</Error>[</error_parent>]<k>v</k>...</root>``, escaped by
    ElementTree."""
    top = ET.Element(root)
    parent = ET.SubElement(top, error_parent) if error_parent else top
    error = top if root == "Error" else ET.SubElement(parent, "Error")
    for name, value in fields:
        ET.SubElement(error, name).text = _NOT_XML.sub("\ufffd", value)
    for name, value in after:
        ET.SubElement(top, name).text = _NOT_XML.sub("\ufffd", value)
    return bytes(ET.tostring(top, encoding="utf-8", xml_declaration=True))


def _rest_xml(code: str, message: str, request_id: str, status: int, signing_name: str | None) -> AwsErrorBody:
    headers = [("x-amz-request-id", request_id)]
    if signing_name is not None and signing_name.startswith("s3"):
        # S3: a bare <Error> root; botocore takes the request id from the header.
        body = _xml("Error", None, [("Code", code), ("Message", message), ("RequestId", request_id)], [])
    else:  # route53, cloudfront: <ErrorResponse><Error>...</Error><RequestId>
        body = _xml("ErrorResponse", None, [("Type", _fault(status)), ("Code", code), ("Message", message)],
                    [("RequestId", request_id)])
    return "application/xml", headers, body


def _query(code: str, message: str, request_id: str, status: int, signing_name: str | None) -> AwsErrorBody:
    body = _xml("ErrorResponse", None, [("Type", _fault(status)), ("Code", code), ("Message", message)],
                [("RequestId", request_id)])
    return "text/xml", [("x-amzn-RequestId", request_id)], body


def _ec2(code: str, message: str, request_id: str, status: int, signing_name: str | None) -> AwsErrorBody:
    body = _xml("Response", "Errors", [("Code", code), ("Message", message)], [("RequestID", request_id)])
    return "text/xml", [], body


def _json(code: str, message: str, request_id: str, status: int, signing_name: str | None) -> AwsErrorBody:
    body = json.dumps({"__type": code, "message": message}).encode()
    return ("application/x-amz-json-1.1", [("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", code)], body)


def _rest_json(code: str, message: str, request_id: str, status: int, signing_name: str | None) -> AwsErrorBody:
    body = json.dumps({"code": code, "message": message}).encode()
    return "application/json", [("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", code)], body


def _cbor(code: str, message: str, request_id: str, status: int, signing_name: str | None) -> AwsErrorBody:
    body = cbor2.dumps({"__type": code, "message": message})
    return "application/cbor", [("smithy-protocol", "rpc-v2-cbor"), ("x-amzn-RequestId", request_id)], body


def _fault(status: int) -> str:
    """The query protocol's ``<Type>``: ``Sender`` for a 4xx, ``Receiver`` for a 5xx."""
    return "Receiver" if status >= 500 else "Sender"


_RENDERERS: Final[dict[str, Callable[[str, str, str, int, str | None], AwsErrorBody]]] = {
    "rest-xml": _rest_xml,
    "query": _query,
    "ec2": _ec2,
    "json": _json,
    "rest-json": _rest_json,
    "smithy-rpc-v2-cbor": _cbor,
}


def render(protocol: str, *, code: str, message: str, request_id: str, status: int,
           signing_name: str | None = None) -> AwsErrorBody:
    """The error as ``protocol`` (one of :data:`PROTOCOLS`' values) answers it: (Content-Type, headers, body).

    ``code``: the AWS error code (``SigproxyHostNotAllowed``); ``status``: the HTTP status (picks the query
    protocol's ``Sender``/``Receiver``); ``signing_name``: tells S3's bare ``<Error>`` from other rest-xml
    services'. Raises ``KeyError`` for a protocol it does not know.
    """
    return _RENDERERS[protocol](code, message, request_id, status, signing_name)
