"""End users' ids (``X-Sigproxy-User``) and how they are put into the fields of an STS call.

Ids come from real identity providers and look like ``google-oauth2|113015401123457192604`` (Auth0),
``jane.doe@example.com``, a UUID, a SAML NameID (``CN=Jane Doe,OU=Users,DC=example,DC=com`` or an opaque
persistent id), an OIDC ``sub`` of up to 255 characters, or a name in any script. STS takes far fewer
characters, so ``${sigproxy:user}`` is rendered per field:

=======================================  ======  ===============================================================
field (AWS STS API Reference)            length  characters
=======================================  ======  ===============================================================
``RoleSessionName``, ``SourceIdentity``  2-64    ``[\\w+=,.@-]*`` (ASCII); SourceIdentity can't begin ``aws:``
session tag value (``Tag.Value``)        0-256   ``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*``; ``aws:`` is reserved
inline session ``Policy``                1-2048  ``[\\u0009\\u000A\\u000D\\u0020-\\u00FF]+`` (the whole text)
=======================================  ======  ===============================================================

(botocore's ``sts/2011-06-15/service-2.json`` shapes ``roleSessionNameType``, ``sourceIdentityType``,
``tagValueType``, ``tagKeyType``, ``sessionPolicyDocumentType``; the ``aws:`` rule from the ``SourceIdentity``
parameter's documentation and AWS's tagging rules, "Tag naming limits and requirements".)

The mapping, per field (:func:`render`): an id whose rendering is already legal for the field goes in
unchanged -- ``alice`` stays ``assumed-role/tenant/alice``; any other id becomes a readable stand-in
(characters the field refuses replaced by ``_``, truncated) followed by ``-`` and the first 16 hex digits of
the SHA-256 of the id's UTF-8 bytes. An id that itself ends in ``-`` and 16 hex digits always takes the
hashed form, so an unchanged id can never equal another id's hashed form: the mapping is one-to-one (up to
a 64-bit hash collision, which needs about 2**64 tries to aim at one given user).

* Session name and source identity: the readable part is the id in Unicode 3.2 NFKD with combining marks
  dropped (``Zoë`` -> ``Zoe``), every other character outside ``[A-Za-z0-9_+=,.@-]`` as ``_``.
* Tag values keep letters, numbers and space separators (Unicode 3.2's categories less the three characters
  reclassed since; Basic Multilingual Plane only, so AWS's UTF-16 length is the same) and ``_ . : / = + - @``:
  ``jane doe@example.com`` and ``Zoë`` go in exactly; ``google-oauth2|1130`` (``|`` is not allowed) becomes
  ``google-oauth2_1130-<hash>``.
* A policy gets the id as the default session name would show it (the session-name mapping, at most 64
  characters), JSON-escaped. That alphabet has no ``"``, ``\\``, ``*``, ``?``, ``$``, ``{``, ``/`` or ``:``,
  so an id can't end a JSON string, add an IAM wildcard or policy variable, or reach into another user's
  path (``alice/x`` can't land inside ``alice/``). Keep a delimiter after the variable in an ARN
  (``home/${sigproxy:user}/*``): a bare ``${sigproxy:user}*`` would match other ids that start alike.

The exact id goes to the access log and, on an ``sts_endpoint`` connection, in the POSTed JSON; the
credential cache keys on it. Unicode 3.2 (``unicodedata.ucd_3_2_0``) is frozen, so the mapping does not
change with the Python version, and AWS (Java) knows every character it classes.

Must not: do I/O, log, or read the clock.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from .errors import BadRequest

__all__ = [
    "USER_VAR",
    "MAX_ID_BYTES",
    "HASH_DIGITS",
    "Field",
    "ROLE_SESSION",
    "TAG_VALUE",
    "parse_user",
    "render",
    "render_policy",
    "template_problem",
    "tag_key_problem",
    "policy_problem",
]

USER_VAR = "${sigproxy:user}"
"""Replaced by the end user's id (``X-Sigproxy-User``), mapped per field, in ``session_name``,
``source_identity``, ``policy`` and tag values of a ``user_header = true`` connection."""
MAX_ID_BYTES = 1024
"""The longest id accepted, in UTF-8 bytes: an OIDC ``sub`` is at most 255 ASCII characters (OpenID Connect
Core 1.0, section 5.1); SAML NameIDs have no set limit."""
HASH_DIGITS = 16
"""Hex digits of SHA-256 appended where the mapping loses information (64 bits)."""
_HASHED_LEN = 1 + HASH_DIGITS
_HASHED_SHAPE = re.compile(rf"-[0-9a-f]{{{HASH_DIGITS}}}\Z", re.IGNORECASE)
_UCD = unicodedata.ucd_3_2_0
_SESSION_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+=,.@-")
_TAG_SYMBOLS = frozenset("_.:/=+-@")
# Letters or space separators in Unicode 3.2 that later Unicode (as AWS's Java knows it) classes otherwise:
# U+1885-U+1886 Mongolian (Mn since 9.0), U+200B ZERO WIDTH SPACE (Cf since 4.0.1).
_TAG_RECLASSED = frozenset("\u1885\u1886\u200b")
_POLICY_MAX = 2048
_POLICY_TEXT = re.compile(r"[\t\n\r\x20-\xff]+")
_TAG_KEY_MAX = 128
_RESERVED = "aws:"


def _tag_char(c: str) -> bool:
    if c in _TAG_SYMBOLS:
        return True
    if ord(c) > 0xFFFF or c in _TAG_RECLASSED:
        return False
    category = _UCD.category(c)
    return category[0] in "LN" or category == "Zs"


def _session_readable(user: str) -> str:
    decomposed = _UCD.normalize("NFKD", user)
    return "".join(c if c in _SESSION_CHARS else "_" for c in decomposed if _UCD.category(c) != "Mn")


def _tag_readable(user: str) -> str:
    return "".join(c if _tag_char(c) else "_" for c in user)


def _tag_text(value: str) -> bool:
    return all(map(_tag_char, value))


@dataclass(frozen=True, slots=True)
class Field:
    """One STS field's rule: length bounds, the characters it takes, and the lossy readable form of an id."""

    name: str
    chars: str
    """The characters it takes, in words."""
    min_len: int
    max_len: int
    takes: Callable[[str], bool]
    """Whether every character of a text is one the field takes (one call per text, not per character: issue
    15)."""
    readable: Callable[[str], str]

    def legal(self, value: str) -> bool:
        """Whether STS takes ``value`` in this field (length, characters, no ``aws:`` prefix)."""
        return (self.min_len <= len(value) <= self.max_len and self.takes(value)
                and not value.lower().startswith(_RESERVED))


ROLE_SESSION = Field("role session name / source identity", "characters of [A-Za-z0-9_+=,.@-]", 2, 64,
                     _SESSION_CHARS.issuperset, _session_readable)
"""``RoleSessionName`` and ``SourceIdentity``: 2-64 of ``[\\w+=,.@-]`` (ASCII), not beginning ``aws:``."""
TAG_VALUE = Field("session tag value", "letters, numbers, spaces or _ . : / = + - @", 0, 256,
                  _tag_text, _tag_readable)
"""A session tag's ``Value``: 0-256 of ``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]`` (here: Unicode 3.2, BMP, ``Zs``)."""


def parse_user(values: list[str], connection: str = "") -> str:
    """The end user's id from the ``X-Sigproxy-User`` field lines of a request (``headers.getall``).

    The id is the field value exactly as received (RFC 9110 section 5.5: without leading or trailing
    whitespace), sent as UTF-8 bytes; 1 to :data:`MAX_ID_BYTES` bytes. Raises :class:`BadRequest` (400) when
    the header is missing or empty, sent more than once (RFC 9110 section 5.3 would join the lines with
    commas, and ids contain commas), not UTF-8 (the server hands over undecodable bytes as lone surrogates),
    longer than :data:`MAX_ID_BYTES`, or holds a control character (C0, DEL, C1) or a line or paragraph
    separator (U+2028, U+2029). Messages never echo the id.
    """
    where = f"connection {connection!r}" if connection else "this connection"
    if not values or values == [""]:
        raise BadRequest(f"{where} needs X-Sigproxy-User: ID (user_header = true)")
    if len(values) > 1:
        raise BadRequest(f"X-Sigproxy-User was sent {len(values)} times; send the end user's id once")
    (value,) = values
    bad = next((i for i, c in enumerate(value) if "\udc80" <= c <= "\udcff"), None)
    if bad is not None:
        raise BadRequest(f"X-Sigproxy-User is not UTF-8 (byte {bad + 1}); send the id as UTF-8 bytes")
    size = len(value.encode())
    if size > MAX_ID_BYTES:
        raise BadRequest(f"X-Sigproxy-User is {size} bytes long; an id has at most {MAX_ID_BYTES} (UTF-8)")
    for i, c in enumerate(value):
        if c < " " or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029":
            raise BadRequest(f"X-Sigproxy-User has a control character (U+{ord(c):04X}) at position {i + 1}")
    return value


def _digest(user: str) -> str:
    return hashlib.sha256(user.encode()).hexdigest()[:HASH_DIGITS]


def render(template: str, user: str, field: Field) -> str:
    """``template`` with each ``${sigproxy:user}`` replaced by ``user`` mapped into ``field`` (module doc).

    The template's own text must be legal for the field and leave at least 17 characters per variable
    (:func:`template_problem`, checked when the config is loaded); then the result is always legal for
    ``field`` and one-to-one in ``user``. Without the variable, ``template`` comes back unchanged.
    """
    parts = template.split(USER_VAR)
    if len(parts) == 1:
        return template
    exact = user.join(parts)
    if field.legal(exact) and not _HASHED_SHAPE.search(user):
        return exact
    room = (field.max_len - sum(map(len, parts))) // (len(parts) - 1)
    readable = field.readable(user)[: max(room - _HASHED_LEN, 0)]
    if (parts[0] + readable).lower().startswith(_RESERVED):
        readable = readable.replace(":", "_", 1)  # the ':' of a reserved 'aws:' start is in the id's part
    return f"{readable}-{_digest(user)}".join(parts)


def render_policy(policy: str, user: str) -> str:
    """The session policy JSON text with ``${sigproxy:user}`` replaced by ``user`` as the default role session
    name shows it (2-64 of ``[A-Za-z0-9_+=,.@-]``), JSON-escaped. The config has checked the text is JSON
    (so the variable sits inside strings) and fits STS's 2048 characters with 64 in place of each variable."""
    value = render(USER_VAR, user, ROLE_SESSION)
    return policy.replace(USER_VAR, json.dumps(value)[1:-1])


def template_problem(template: str, field: Field) -> str | None:
    """What is wrong with a config value for ``field`` that may hold ``${sigproxy:user}``, or ``None``.

    Without the variable the value must be legal as it is; with it, the text around it must be characters the
    field takes, not begin ``aws:``, and leave at least 17 characters (``-`` and 16 hex digits) for each
    variable within the field's maximum length.
    """
    parts = template.split(USER_VAR)
    fixed = "".join(parts)
    rule = f"{field.min_len}-{field.max_len} {field.chars}, not beginning 'aws:'"
    if len(parts) == 1:
        return None if field.legal(template) else f"expected {rule}, got {template!r}"
    if not field.takes(fixed) or template.lower().startswith(_RESERVED):
        return f"expected {rule} around {USER_VAR}, got {template!r}"
    room = (field.max_len - len(fixed)) // (len(parts) - 1)
    if room < _HASHED_LEN:
        return (f"the text around {USER_VAR} leaves {max(room, 0)} of the {field.max_len} characters for the id; "
                f"it needs at least {_HASHED_LEN}")
    return None


def tag_key_problem(key: str) -> str | None:
    """What STS would refuse in a session tag key (``tagKeyType``: 1-128 of ``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]``,
    not beginning ``aws:``), or ``None``."""
    if not 1 <= len(key) <= _TAG_KEY_MAX or not all(map(_tag_char, key)) or key.lower().startswith(_RESERVED):
        return (f"tag key {key!r}: expected 1-{_TAG_KEY_MAX} letters, numbers, spaces or _ . : / = + - @, "
                "not beginning 'aws:'")
    return None


def policy_problem(policy: str) -> str | None:
    """What STS would refuse in an inline session policy (``sessionPolicyDocumentType``: 1-2048 characters of
    tab, LF, CR and U+0020-U+00FF), counting each ``${sigproxy:user}`` at its longest (64), or ``None``."""
    if not policy:
        return "is empty"
    if not _POLICY_TEXT.fullmatch(policy):
        bad = next(c for c in policy if not _POLICY_TEXT.fullmatch(c))
        return f"has {bad!r}: STS takes only tab, line breaks and U+0020-U+00FF (escape others as \\uXXXX)"
    longest = len(policy) + policy.count(USER_VAR) * (ROLE_SESSION.max_len - len(USER_VAR))
    if longest > _POLICY_MAX:
        return (f"is {longest} characters long with a {ROLE_SESSION.max_len}-character id in place of each "
                f"{USER_VAR}; STS takes at most {_POLICY_MAX}")
    return None
