"""Pure: host globs, the entries of a connection's ``hosts``, ``[proxy] passthrough`` and ``[[routes]] host``
(``s3.amazonaws.com``, ``*.amazonaws.com``, ``host:port``, ``[::1]:port``).

Owns: an entry's syntax check (:class:`~sigproxy.errors.ConfigError` naming the key path), splitting it into host
and port parts, and compiling entries into one regex over ``host:port`` (lower-case host, IPv6 unbracketed).
Must not: do I/O, resolve names, import sigproxy modules other than :mod:`sigproxy.errors`.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Final

from .errors import ConfigError

__all__ = ["ANSWERS_KEPT", "HostSet", "compile_host_globs", "host_matches", "parse_host_glob", "split_host_entry"]

_HOST_GLOB: Final = re.compile(r"^[A-Za-z0-9*?.\-\[\]]+(:[0-9*?]+)?$|^\[[0-9A-Fa-f:.*?]+\](:[0-9*?]+)?$")


def _glob_re(glob: str) -> str:
    # fnmatch.translate gives '(?s:PATTERN)\\Z'; drop the anchor, fullmatch anchors the whole alternation.
    return fnmatch.translate(glob).removesuffix(r"\Z")


def split_host_entry(raw: str) -> tuple[str, str]:
    """A ``hosts``/``passthrough`` entry -> (host part lower-cased and unbracketed, port glob, ``*`` if none)."""
    entry = raw.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else "*"
    if entry.count(":") > 1:  # an unbracketed IPv6 literal: no port
        return entry, "*"
    if ":" in entry:
        host, _, port = entry.rpartition(":")
        return host, port
    return entry, "*"


def compile_host_globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regex over ``host:port`` (lower-case host; IPv6 unbracketed) for ``host`` / ``host:port`` globs."""
    parts = []
    for raw in patterns:
        host, port = split_host_entry(raw)
        parts.append(f"(?:{_glob_re(host)}):(?:{_glob_re(port)})")
    return re.compile("|".join(parts) or "(?!)")


ANSWERS_KEPT: Final = 1024
"""How many ``host:port`` answers a :class:`HostSet` keeps before it starts over."""


class HostSet:
    """A connection's ``hosts`` compiled (:func:`compile_host_globs`), with the answers given so far kept.

    Each proxied request asks whether its connection may sign for its target: a regex match cost 5.5k
    instructions a request (issue 15), a kept answer a dict lookup. At most :data:`ANSWERS_KEPT` are kept (then
    emptied), so hosts a client makes up can't grow it without bound. Compiled (:mod:`sigproxy.compiled`): the
    routing code asks it directly, with no interpreted frame between."""

    __slots__ = ("_answers", "pattern")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.pattern: Final = compile_host_globs(patterns)
        self._answers: Final[dict[tuple[str, int], bool]] = {}

    def allows(self, host: str, port: int) -> bool:
        """Whether ``host:port`` matches one of the globs (the host case-insensitively; IPv6 unbracketed)."""
        key = (host, port)
        allowed = self._answers.get(key)
        if allowed is None:
            if len(self._answers) >= ANSWERS_KEPT:
                self._answers.clear()
            allowed = self._answers[key] = self.pattern.fullmatch(f"{host.lower()}:{port}") is not None
        return allowed

    @property
    def kept(self) -> int:
        """How many answers are kept now."""
        return len(self._answers)


def host_matches(pattern: str, host: str, port: int) -> bool:
    """Whether ``host:port`` matches a ``host`` or ``host:port`` glob (case-insensitive)."""
    return compile_host_globs((pattern,)).fullmatch(f"{host.lower()}:{port}") is not None


def parse_host_glob(value: str, path: str) -> str:
    if not value or not _HOST_GLOB.match(value):
        raise ConfigError(path, f"bad host glob {value!r}: expected 'host', '*.example.com' or 'host:port'")
    if value.strip("*?.:") == "":
        raise ConfigError(path, f"host glob {value!r} matches every host: list the hosts instead")
    if value.count("[") != value.count("]"):
        raise ConfigError(path, f"bad host glob {value!r}: unbalanced brackets")
    return value
