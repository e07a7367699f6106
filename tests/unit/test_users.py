"""sigproxy.users: every id an identity provider may send maps into each STS field's published rule, one-to-one.

The oracles here are AWS's own rules, written out independently of the module (botocore's STS model,
``sts/2011-06-15/service-2.json``): ``roleSessionNameType``/``sourceIdentityType`` 2-64 of ``[\\w+=,.@-]*``
(Java's ``\\w`` is ASCII), ``tagValueType`` 0-256 of ``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*`` (checked with this
Python's current Unicode database, length in UTF-16 units as Java counts), ``sessionPolicyDocumentType``
1-2048 of ``[\\u0009\\u000A\\u000D\\u0020-\\u00FF]+``; ``aws:`` is reserved at the start.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import unicodedata
import warnings
from collections.abc import Iterator

import coverage
import pytest
from coverage.exceptions import CoverageWarning
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigproxy.errors import BadRequest
from sigproxy.users import (
    ROLE_SESSION,
    TAG_VALUE,
    USER_VAR,
    Field,
    parse_user,
    render,
    render_policy,
    template_problem,
)

SESSION_RE = re.compile(r"[\w+=,.@-]*", re.ASCII)
POLICY_RE = re.compile(r"[\u0009\u000A\u000D\u0020-\u00FF]+")


def sts_session_ok(value: str) -> bool:
    return 2 <= len(value) <= 64 and bool(SESSION_RE.fullmatch(value)) and not value.lower().startswith("aws:")


def sts_tag_char(c: str) -> bool:
    return unicodedata.category(c)[0] in "LZN" or c in "_.:/=+-@"


def sts_tag_value_ok(value: str) -> bool:
    utf16 = len(value.encode("utf-16-le")) // 2
    return utf16 <= 256 and all(map(sts_tag_char, value)) and not value.lower().startswith("aws:")


def digest(user: str) -> str:
    return hashlib.sha256(user.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- ids

# Anything parse_user accepts: no surrogates (not UTF-8), no C0/DEL/C1 controls, no U+2028/U+2029.
any_char = st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\u2028\u2029")
LEGAL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+=,.@-"
ids = st.one_of(
    st.text(any_char, min_size=1, max_size=300),
    st.text(LEGAL, min_size=1, max_size=80),
    st.emails(),
    st.uuids().map(str),
    st.builds(lambda p, n: f"{p}|{n}", st.sampled_from(["auth0", "google-oauth2", "samlp|acme", "waad"]),
              st.integers(0, 10**30)),
    st.builds(lambda cn, ou: f"CN={cn},OU={ou},DC=example,DC=com", st.text(any_char, min_size=1, max_size=20),
              st.text(LEGAL, min_size=1, max_size=10)),
    # shaped like a hashed name, or starting like AWS's reserved prefix
    st.builds(lambda t, h: f"{t}-{h}", st.text(LEGAL, max_size=40), st.text("0123456789abcdefABCDEF", min_size=16,
                                                                            max_size=16)),
    st.builds(lambda a, t: a + t, st.sampled_from(["aws:", "AWS:", "s:", ":", "ws:", "Aws:x"]),
              st.text(any_char, max_size=20)),
).filter(lambda u: 0 < len(u.encode()) <= 1024)

session_fixed = st.text(LEGAL, max_size=47)
tag_fixed = st.text(st.sampled_from("abcXYZ 09_.:/=+-@é山"), max_size=120)


def session_templates() -> st.SearchStrategy[str]:
    # Only templates the config accepts (room for 17 characters per variable: the hashed form's '-' + 16 hex).
    # `len(t) <= 64` let a 48-character fixed part through: 16 characters of room, refused by the config, and
    # rendered one character too long -- a Hypothesis "flake" that was the generator's boundary, not render's.
    one = st.builds(lambda a, b: a + USER_VAR + b, session_fixed, session_fixed).filter(
        lambda t: template_problem(t, ROLE_SESSION) is None)
    two = st.builds(lambda a: USER_VAR + a + USER_VAR, st.text(LEGAL, max_size=30))
    return st.one_of(st.just(USER_VAR), one, two)


def tag_templates() -> st.SearchStrategy[str]:
    prefixes = st.one_of(st.sampled_from(["", "a", "aw", "aws", "AW", "Aws"]), tag_fixed)
    return st.builds(lambda a, b: a + USER_VAR + b, prefixes, tag_fixed).filter(
        lambda t: not t.lower().startswith("aws:"))


class TestParseUserAccepts:
    @given(ids)
    def test_every_generated_id_is_accepted(self, user: str) -> None:
        assert parse_user([user]) == user

    @given(st.text(any_char, max_size=10), st.characters(codec="latin-1", categories=("Cc",)),
           st.text(any_char, max_size=10))
    def test_control_characters_are_refused(self, a: str, c: str, b: str) -> None:
        with pytest.raises(BadRequest, match="control character"):
            parse_user([a + c + b])


# ---------------------------------------------------------------- every field's rule


class TestEveryMappedValueIsLegal:
    @given(ids, session_templates())
    @settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
    def test_role_session_name_and_source_identity(self, user: str, template: str) -> None:
        assert sts_session_ok(render(template, user, ROLE_SESSION))

    @given(ids, tag_templates())
    @settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
    def test_session_tag_value(self, user: str, template: str) -> None:
        assert sts_tag_value_ok(render(template, user, TAG_VALUE))

    @given(ids)
    @settings(max_examples=400)
    def test_policy_is_legal_and_never_wider(self, user: str) -> None:
        """The id lands as one plain path segment: the policy stays one statement, the resource keeps only the
        template's own wildcard, no IAM variable or JSON break-out gets in."""
        template = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::data/home/{USER_VAR}/*",
            "Condition": {"StringEquals": {"aws:PrincipalTag/u": USER_VAR}}}]})
        text = render_policy(template, user)
        assert POLICY_RE.fullmatch(text) and len(text) <= 2048
        (statement,) = json.loads(text)["Statement"]
        name = render(USER_VAR, user, ROLE_SESSION)
        assert statement["Resource"] == f"arn:aws:s3:::data/home/{name}/*"
        assert statement["Condition"] == {"StringEquals": {"aws:PrincipalTag/u": name}}
        assert not set(name) & set("*?$/\\\"{}:")

    @given(st.text(LEGAL, min_size=2, max_size=64).filter(lambda u: not re.search(r"-[0-9a-fA-F]{16}\Z", u)))
    def test_ids_already_legal_map_to_themselves(self, user: str) -> None:
        assert render(USER_VAR, user, ROLE_SESSION) == user
        if "," not in user:  # the one session-name character tag values lack
            assert render(USER_VAR, user, TAG_VALUE) == user
        assert render_policy(f'"{USER_VAR}"', user) == f'"{user}"'

    @given(ids)
    def test_a_lossy_mapping_ends_in_the_ids_hash(self, user: str) -> None:
        for field in (ROLE_SESSION, TAG_VALUE):
            mapped = render(USER_VAR, user, field)
            assert mapped == user or mapped.endswith(f"-{digest(user)}")

    def test_tag_characters_are_letters_numbers_and_separators_today(self) -> None:
        """Every character the mapping keeps in a tag value is still \\p{L}, \\p{N} or \\p{Z} in this Python's
        Unicode (catches a character reclassed by a later Unicode version, like U+200B in 4.0.1)."""
        bmp = (chr(i) for i in range(0x10000) if not 0xD800 <= i <= 0xDFFF)
        kept = [c for c in bmp if render(USER_VAR, c, TAG_VALUE) == c]
        assert len(kept) > 40000
        assert [hex(ord(c)) for c in kept if not sts_tag_char(c)] == []


# ---------------------------------------------------------------- one-to-one


@functools.cache
def crafted_ids() -> tuple[str, ...]:
    """Ids built to collide under a lossy mapping: the same readable form, the same first 47 characters, case,
    and every id's own mapped names sent as ids of their own (an attacker choosing an id equal to a victim's
    session name)."""
    base = ["alice", "a", "Alice", "google-oauth2|113015401123457192604", "CN=Jane Doe,OU=Users,DC=example,DC=com",
            "Zoë", "Zoe", "Zoë", "山田", "jane doe@example.com", "aws:x", "x" * 64, "x" * 65, "x" * 300]
    out = list(base)
    out += [f"a{c}b" for c in "|# !?*/\\\"'`~^%&()[]{}<>;:ß€ \u00a0\u3000"]  # differ only where the mapping loses
    out += [f"{'p' * 47}{i}" for i in range(1000)]  # differ only after the readable part is cut
    out += [f"{'p' * 60}{i:05d}" for i in range(3000)]
    out += [f"user{i}|x" for i in range(3000)]
    out += [f"User{i}|X" for i in range(1000)]
    for template in (USER_VAR, f"app-{USER_VAR}"):
        out += [render(template, u, ROLE_SESSION) for u in list(out)]
    out += [render(USER_VAR, u, TAG_VALUE) for u in list(out)]
    return tuple(dict.fromkeys(out))


@contextlib.contextmanager
def _untraced() -> Iterator[None]:
    """Coverage's tracer paused, when the suite runs under it (coverage.py's documented ``Coverage.current()``):
    the brute-force check below makes over 100,000 renders, about 45 s of the suite traced line by line and a
    third of that untraced. The lines it runs are covered by the other tests here (users.py's coverage from this
    file is the same with and without the pause)."""
    cov = coverage.Coverage.current()
    if cov is not None:
        cov.stop()
    try:
        yield
    finally:
        if cov is not None:
            with warnings.catch_warnings():  # start() again notes every module imported meanwhile: expected here
                warnings.simplefilter("ignore", CoverageWarning)
                cov.start()


@pytest.mark.parametrize(("template", "field"), [
    (USER_VAR, ROLE_SESSION), (f"app-{USER_VAR}", ROLE_SESSION), (f"{'t' * 47}{USER_VAR}", ROLE_SESSION),
    (USER_VAR, TAG_VALUE), (f"team/{USER_VAR}", TAG_VALUE),
])
def test_no_two_ids_share_a_mapped_value(template: str, field: Field) -> None:
    mapped: dict[str, str] = {}
    with _untraced():
        users = crafted_ids()
        for user in users:
            value = render(template, user, field)
            assert mapped.setdefault(value, user) == user, (user, mapped[value], value)
    assert len(users) > 25000 and len(mapped) == len(users)


@given(st.lists(ids, unique=True, min_size=2, max_size=60), session_templates())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_generated_ids_never_share_a_role_session_name(users: list[str], template: str) -> None:
    names = [render(template, u, ROLE_SESSION) for u in users]
    assert len(set(names)) == len(users)


# ---------------------------------------------------------------- fixed vectors (the mapping must not drift)


@pytest.mark.parametrize(("user", "name", "tag"), [
    ("alice", "alice", "alice"),
    ("google-oauth2|113015401123457192604", "google-oauth2_113015401123457192604-f8aa0c6921bb75b2",
     "google-oauth2_113015401123457192604-f8aa0c6921bb75b2"),
    ("Zoë Ångström", "Zoe_Angstrom-d91ffefba54d6c10", "Zoë Ångström"),
    ("山田太郎", "____-6b0e1c8cc616be88", "山田太郎"),
    ("CN=Jane Doe,OU=Users,DC=example,DC=com", "CN=Jane_Doe,OU=Users,DC=example,DC=com-4933884bcf2cde7d",
     "CN=Jane Doe_OU=Users_DC=example_DC=com-4933884bcf2cde7d"),
])
def test_known_mappings(user: str, name: str, tag: str) -> None:
    """Sessions, policies and tag conditions are written against these names: they must not change with a
    Python or Unicode upgrade (the readable part uses the frozen Unicode 3.2 database)."""
    assert render(USER_VAR, user, ROLE_SESSION) == name
    assert render(USER_VAR, user, TAG_VALUE) == tag
    assert all(v == user or v.endswith(digest(user)) for v in (name, tag))

