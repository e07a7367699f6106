"""Reading sigproxy's error answers in tests, whatever format they came in: sigproxy's JSON
(``{"error": {"code", "message", "request_id"}}``) or an AWS protocol's (S3's ``<Error>``, the query protocol's
``<ErrorResponse>``, EC2's ``<Response><Errors>``, the JSON protocols' ``__type``/``code`` and ``message``)."""

from __future__ import annotations

import inspect
import json
from typing import Any
from xml.etree import ElementTree as ET

from sigproxy import errors

# AWS code -> snake code, from the classes themselves (both credentials codes map to credentials_unavailable).
SNAKE = {cls.aws_code: cls.code for _, cls in inspect.getmembers(errors, inspect.isclass)
         if issubclass(cls, errors.SigproxyError)}


def error_body(body: str | bytes) -> dict[str, Any]:
    """``{"format", "code" (snake), "aws_code" (None for sigproxy's JSON), "message", "request_id"}``.
    Raises ValueError when ``body`` is none of the formats."""
    text = body.decode() if isinstance(body, bytes) else body
    text = text.strip()
    if text.startswith("<"):
        root = ET.fromstring(text.encode())
        error = root if root.tag == "Error" else root.find(".//Error")
        if error is None:
            raise ValueError(f"no <Error> in {text[:200]!r}")
        aws_code = error.findtext("Code")
        request_id = root.findtext("RequestId") or root.findtext("RequestID") or error.findtext("RequestId")
        fmt = {"Error": "rest-xml", "ErrorResponse": "query", "Response": "ec2"}[root.tag]
        return {"format": fmt, "code": SNAKE[str(aws_code)], "aws_code": aws_code,
                "message": error.findtext("Message"), "request_id": request_id}
    data = json.loads(text)
    if "error" in data:
        e = data["error"]
        return {"format": "sigproxy-json", "code": e["code"], "aws_code": None, "message": e["message"],
                "request_id": e.get("request_id")}
    aws_code = data.get("__type") or data.get("code")
    if aws_code is None:
        raise ValueError(f"no error code in {text[:200]!r}")
    return {"format": "aws-json", "code": SNAKE[aws_code], "aws_code": aws_code, "message": data.get("message"),
            "request_id": None}
