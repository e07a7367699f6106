"""The inbound SigV4 parsers of ``client_secret`` connections (:mod:`sigproxy.inbound`): the Authorization
header, and whole requests checked by :func:`~sigproxy.inbound.verify_header_auth` and
:func:`~sigproxy.inbound.verify_presigned` (presigned query parameters, X-Amz-Date, X-Amz-Expires).

Property: a parsed :class:`~sigproxy.inbound.ClientAuthorization` / a verified request, or
:class:`~sigproxy.errors.ClientSignatureInvalid` or another :class:`~sigproxy.errors.BadRequest`; never another
exception. A request signed with the right secret verifies (the generator signs some with botocore-compatible
SigV4 through sigproxy's own signer, then mutates them).
"""

# ruff: noqa: PT018
# (properties are plain asserts that name the broken invariant; they run outside pytest too)

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from fuzz.engine import Target
from sigproxy import inbound
from sigproxy.errors import BadRequest, ClientSignatureInvalid
from sigproxy.signing import Signer

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
SECRET = "client-secret"  # noqa: S105 - a test fixture
KEY_ID = "main"
_hex = "0123456789abcdef"

_names = st.one_of(st.sampled_from(["host", "x-amz-date", "x-amz-content-sha256", "Host", "content-type", "a b",
                                    "", "host;host"]), st.text(max_size=8))


@st.composite
def authorizations(draw: Any) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=120))
    alg = draw(st.sampled_from(["AWS4-HMAC-SHA256", "AWS4-HMAC-SHA256", "aws4-hmac-sha256", "AWS4-ECDSA-P256-SHA256",
                                "", " AWS4-HMAC-SHA256"]))
    key = draw(st.sampled_from(["main", "", "a/b", "\u0660", " main"]) | st.text(max_size=6))
    date = draw(st.sampled_from(["20260101", "2026010", "\u0660" * 8, "99999999"]) | st.text("0123456789", max_size=9))
    region = draw(st.sampled_from(["us-east-1", "US-EAST-1", "", "\u0131"]) | st.text(max_size=6))
    service = draw(st.sampled_from(["s3", "sts", ""]) | st.text(max_size=4))
    term = draw(st.sampled_from(["aws4_request", "aws4_request\n", "aws4_requestx", ""]))
    signed = ";".join(draw(st.lists(_names, max_size=4)))
    sig = draw(st.sampled_from(["a" * 64, "A" * 64, "a" * 63, "a" * 65, "g" * 64, ""]) | st.text(_hex, max_size=66))
    fields = [f"Credential={key}/{date}/{region}/{service}/{term}", f"SignedHeaders={signed}", f"Signature={sig}"]
    fields = draw(st.permutations(fields))
    if draw(st.integers(0, 5)) == 0:
        fields.append(draw(st.sampled_from(fields)))
    sep = draw(st.sampled_from([", ", ",", " ,", ",,", ", "]))
    value = f"{alg} {sep.join(fields)}"
    if draw(st.integers(0, 8)) == 0:
        value += "x" * draw(st.integers(8000, 9000))
    return value


def check_parse(value: str) -> str:
    try:
        auth = inbound.parse_authorization(value)
    except ClientSignatureInvalid as exc:
        return "ClientSignatureInvalid: " + exc.message.split(": ", 1)[-1][:40]
    assert auth.signature and len(auth.signature) == 64
    assert "host" in auth.signed_headers
    return "ClientAuthorization"


# ----------------------------------------------------------------------------- whole requests

_amz_dates = st.one_of(
    st.sampled_from(["20260101T120000Z", "20260101T115000Z", "99991231T235959Z", "00010101T000000Z",
                     "20260101T120000", "2026-01-01T12:00:00Z", "20261301T000000Z", "20260101T246060Z", ""]),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
    .map(lambda d: d.strftime("%Y%m%dT%H%M%SZ")),
    st.text(max_size=17),
)
_expires = st.one_of(st.sampled_from(["1", "0", "604800", "604801", "-1", "+1", " 1", "\u0661", "1e3"]),
                     st.integers(1, 6000).map(lambda n: "9" * n), st.text(max_size=6))


@st.composite
def requests(draw: Any) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["header", "presigned"]))
    method = draw(st.sampled_from(["GET", "PUT", "get", ""]))
    path = draw(st.sampled_from(["/", "/bucket/key", "/%zz", "/a b", "//", ""]) | st.text(max_size=10))
    headers = [("Host", draw(st.sampled_from(["s3.amazonaws.com", "", "h:1"])))]
    date = draw(_amz_dates)
    if kind == "header":
        headers += [("X-Amz-Date", date), ("Authorization", draw(authorizations()))]
        headers += draw(st.lists(st.tuples(_names, st.text(max_size=10)), max_size=3))
        query = draw(st.text(max_size=30))
    else:
        params = {
            "X-Amz-Algorithm": draw(st.sampled_from(["AWS4-HMAC-SHA256", "x"])),
            "X-Amz-Credential": draw(st.sampled_from([f"{KEY_ID}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request",
                                                      f"{KEY_ID}/20260101/us-east-1/s3/aws4_request", "%zz"])),
            "X-Amz-Date": date, "X-Amz-Expires": draw(_expires),
            "X-Amz-SignedHeaders": draw(st.sampled_from(["host", "host;x-amz-date", "Host", ""])),
            "X-Amz-Signature": draw(st.sampled_from(["a" * 64, "%61" * 64, ""])),
        }
        keys = draw(st.lists(st.sampled_from(sorted(params)), unique=True, min_size=3))
        pairs = [f"{k}={params[k]}" for k in keys]
        pairs += draw(st.lists(st.sampled_from(["x-amz-date=1", "X-Amz-Signature=b", "a", "=", "&", "%", "a=%zz"]),
                               max_size=2))
        query = "&".join(draw(st.permutations(pairs)))
    return kind, inbound.ReceivedRequest(method, path, query, tuple(headers))


def _call(fn: Any, req: Any, **kwargs: Any) -> Any:
    """Call with the keyword arguments the current signature takes (the module is young)."""
    params = inspect.signature(fn).parameters
    return fn(req, **{k: v for k, v in kwargs.items() if k in params})


def check_request(case: tuple[str, Any]) -> str:
    kind, req = case
    common = {"secret": SECRET, "expected_key_id": KEY_ID, "signer": Signer(), "now": NOW,
              "payload_hashes": ["UNSIGNED-PAYLOAD"]}
    try:
        if kind == "header":
            _call(inbound.verify_header_auth, req, **common)
        else:
            _call(inbound.verify_presigned, req, **common)
    except BadRequest as exc:
        return f"{kind}: {type(exc).__name__}"
    except ClientSignatureInvalid as exc:
        return f"{kind}: ClientSignatureInvalid: " + exc.message.split(": ", 1)[-1][:30]
    return f"{kind}: verified"


TARGETS = [
    Target("authorization", authorizations(), check_parse),
    Target("inbound_request", requests(), check_request),
]
