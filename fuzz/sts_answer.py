"""A custom STS endpoint's JSON answer (:func:`sigproxy.stsendpoint.parse_sts_endpoint_answer`).

Property: any JSON value (as :func:`json.loads` returns it from the endpoint's bytes, ``NaN`` and
``Infinity`` included) gives :class:`~sigproxy.credentials.Credentials` that expire in the future, with a
time-zone-aware expiry the credential cache can do arithmetic on, or
:class:`~sigproxy.errors.CredentialsUnavailable`; never another exception.
"""

# ruff: noqa: PT018
# (properties are plain asserts that name the broken invariant; they run outside pytest too)

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from fuzz.engine import Target
from sigproxy.credentials import Credentials
from sigproxy.errors import CredentialsUnavailable
from sigproxy.stsendpoint import parse_sts_endpoint_answer

NOW = datetime(2026, 1, 1, tzinfo=UTC)

_numbers = st.one_of(
    st.integers(), st.integers(-(2**70), 2**70), st.floats(),
    st.sampled_from([0, -1, 1767225600, 1767225600.5, 2**31, 2**63, 10**20, 253402300799, 253402300800,
                     -62135596800, -62135596801, 1e300, float("inf"), float("-inf"), float("nan")]),
)
_dates = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(lambda d: d.isoformat()),
    st.sampled_from(["2026-01-01T01:00:00Z", "2026-01-01T01:00:00", "9999-12-31T23:59:59Z",
                     "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "0001-01-01T00:00:00Z",
                     "2026-01-01", "2026-13-01T00:00:00Z", "Z", "", "2026-01-01T00:00:00ZZ",
                     "2026-01-01T00:00:00+99:00", "2026-01-01T25:00:00Z", "20260101T000000Z", " 2026-01-01",
                     "2026-01-01T00:00:00.1234567Z"]),
    st.text(max_size=40),
)
_json = st.recursive(
    st.none() | st.booleans() | _numbers | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
_field = st.one_of(st.text(max_size=30), st.sampled_from(["AKIA", "secret", ""]), _json)
_expiry = st.one_of(_numbers, _dates, _json)


@st.composite
def answers(draw: Any) -> Any:
    kind = draw(st.sampled_from(["shaped", "shaped", "nested", "raw"]))
    if kind == "raw":
        return draw(_json)
    body: dict[str, Any] = {}
    for key in ("accessKeyId", "secretAccessKey", "sessionToken"):
        if draw(st.integers(0, 4)):
            body[key] = draw(_field) if draw(st.integers(0, 2)) == 0 else f"{key}-value"
    for key in draw(st.lists(st.sampled_from(["expiresAt", "expires_at", "expiration"]), max_size=3)):
        body[key] = draw(_expiry)
    if draw(st.booleans()):
        body.update(draw(st.dictionaries(st.text(max_size=10), _json, max_size=3)))
    if kind == "nested":
        return {"credentials": body, **draw(st.dictionaries(st.text(max_size=5), _json, max_size=2))}
    # Through real JSON text, as the endpoint would send it (NaN and Infinity included: json.loads takes them).
    return json.loads(json.dumps(body))


def check(answer: Any) -> str:
    try:
        creds = parse_sts_endpoint_answer(answer, NOW, "fuzz")
    except CredentialsUnavailable as exc:
        return "CredentialsUnavailable: " + exc.message.removeprefix("fuzz").split(":")[-1].strip()[:30]
    assert isinstance(creds, Credentials)
    assert isinstance(creds.access_key_id, str) and creds.access_key_id
    assert isinstance(creds.secret_access_key, str) and creds.secret_access_key
    assert creds.session_token is None or (isinstance(creds.session_token, str) and creds.session_token)
    assert creds.expires_at is not None and creds.expires_at.tzinfo is not None
    assert creds.expires_at > NOW
    # What the credential cache does with it (refresh windows before expiry) must not overflow.
    _ = creds.expires_at - timedelta(minutes=15), creds.expires_at - NOW
    return "Credentials"


TARGETS = [Target("sts_answer", answers(), check)]
