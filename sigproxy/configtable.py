"""One TOML table of the configuration being read: typed getters that name the key path, ``${env:NAME}`` and
``${file:PATH}`` references, the refusal of ``""`` where it means nothing, and the unknown-key check.

:mod:`sigproxy.config` knows the shape of the configuration; this module only how one table's keys are read.
Every problem raises :class:`~sigproxy.errors.ConfigError` naming the key path.
Must not: exit, print, know any key's meaning, or read files other than ``${file:...}`` references.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from .errors import ConfigError

__all__ = ["Secret", "Table", "close_names", "resolve_refs"]

_REF = re.compile(r"\$\{(env|file):((?:\$\{[^{}]*\}|[^}])*)\}")
# Inside a ${file:...} path: ${NAME} or ${env:NAME}, e.g. ${file:${CREDENTIALS_DIRECTORY}/main_secret} (systemd).
_PATH_VAR = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}")


def close_names(name: str, names: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` of ``names`` close to ``name`` ignoring case, closest first: :func:`difflib.get_close_matches`
    (its default ``cutoff``, 0.6), so a typo finds its word and an unrelated name finds none."""
    lowered: dict[str, list[str]] = {}
    for candidate in names:
        lowered.setdefault(candidate.lower(), []).append(candidate)
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=cutoff)
    return [c for low in close for c in lowered[low]][:n]


class Secret:
    """A secret string that never shows itself in ``repr``/``str``/logs; ``reveal()`` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def resolve_refs(value: str, path: str, env: Mapping[str, str]) -> str:
    """``value`` with each ``${env:NAME}`` replaced by ``env[NAME]`` and each ``${file:PATH}`` by the file's text
    (one trailing newline dropped; ``${NAME}``/``${env:NAME}`` inside PATH expanded first).

    Raises :class:`ConfigError` at ``path`` for an unset variable or an unreadable file.
    """
    def var(name: str) -> str:
        if name not in env:
            raise ConfigError(path, f"environment variable {name!r} is not set")
        return env[name]

    def sub(m: re.Match[str]) -> str:
        kind, ref = m.group(1), m.group(2)
        if kind == "env":
            return var(ref)
        ref = _PATH_VAR.sub(lambda v: var(v.group(1)), ref)
        try:
            return Path(ref).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(path, f"cannot read file {ref!r}: {exc.strerror}") from exc
        except (ValueError, RuntimeError) as exc:  # a NUL in the path, not UTF-8, ~user that does not exist
            raise ConfigError(path, f"cannot read file {ref!r}: {exc}") from exc

    return _REF.sub(sub, value)


class Table:
    """One TOML table being read: typed getters that name the key path, and a final unknown-key check."""

    def __init__(self, data: Mapping[str, Any], path: str, env: Mapping[str, str], *,
                 references: bool = True) -> None:
        """``references=False``: values are taken literally and a ``${env:...}``/``${file:...}`` in one is
        refused (the admin API: its callers must not read the proxy host's environment or files)."""
        if not isinstance(data, Mapping):
            raise ConfigError(path, f"expected a table, got {type(data).__name__}")
        self.data = data
        self.path = path
        self.env = env
        self.references = references
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def _get(self, name: str, kind: type, kind_name: str) -> Any:
        self.seen.add(name)
        if name not in self.data:
            return None
        value = self.data[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            got = type(value).__name__
            raise ConfigError(self.key(name), f"expected {kind_name}, got {got} {value!r}")
        return value

    def string(self, name: str, *, required: bool = False, empty: bool = False) -> str | None:
        """The key's string with references resolved, or ``None`` when absent.

        ``""`` (written, or what a reference resolved to) is refused unless ``empty``: only keys whose
        documentation says what an empty value means take one (``admin_listen``, tag values); anywhere
        else it would silently act as the default or as nothing (an ``external_id`` never sent).
        """
        value = self._get(name, str, "a string")
        if value is None:
            if required:
                self.missing(name, "is required")
            return None
        if not self.references:
            if _REF.search(value):
                raise ConfigError(self.key(name), "references such as ${env:...} and ${file:...} are read only "
                                  "from the config file: send the value itself")
            resolved: str = value
        else:
            resolved = resolve_refs(value, self.key(name), self.env)
        if not resolved and not empty:
            via = f" ({value!r} resolved to nothing)" if value else ""
            raise ConfigError(self.key(name), f"is empty{via}: give it a value, or leave the key out")
        return resolved

    def secret(self, name: str, *, required: bool = False) -> Secret | None:
        value = self.string(name, required=required)
        return None if value is None else Secret(value)

    def integer(self, name: str) -> int | None:
        value: int | None = self._get(name, int, "an integer")
        return value

    def number(self, name: str) -> float | None:
        self.seen.add(name)
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
            raise ConfigError(self.key(name), f"expected a positive number, got {value!r}")
        return float(value)

    def strings(self, name: str) -> tuple[str, ...]:
        value = self._get(name, list, "a list of strings")
        if value is None:
            return ()
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{self.key(name)}[{i}]", f"expected a string, got {item!r}")
            out.append(item)
        return tuple(out)

    def boolean(self, name: str) -> bool | None:
        value: bool | None = self._get(name, bool, "true or false")
        return value

    def ports(self, name: str) -> tuple[int, ...] | None:
        value = self._get(name, list, "a list of port numbers")
        if value is None:
            return None
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or not 0 < item < 65536:
                raise ConfigError(f"{self.key(name)}[{i}]", f"expected a port number, got {item!r}")
        return tuple(value)

    def filepath(self, name: str) -> Path | None:
        value = self.string(name)
        if value is None:
            return None
        try:
            return Path(value).expanduser()
        except RuntimeError as exc:  # ~user that does not exist
            raise ConfigError(self.key(name), f"cannot expand {value!r}: {exc}") from None

    def table(self, name: str) -> Table | None:
        value = self._get(name, dict, "a table")
        return None if value is None else Table(value, self.key(name), self.env, references=self.references)

    def tables(self, name: str) -> list[Table]:
        value = self._get(name, list, "an array of tables ([[...]])")
        return [Table(v, f"{self.key(name)}[{i}]", self.env, references=self.references)
                for i, v in enumerate(value or [])]

    def choice(self, name: str, choices: tuple[str, ...], *, required: bool = False) -> str | None:
        value = self.string(name, required=required)
        if value is not None and value not in choices:
            raise ConfigError(self.key(name), f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def missing(self, name: str, problem: str) -> NoReturn:
        """Raise :class:`ConfigError` for the required key ``name``, absent: ``problem`` at its path, or, when
        a key not read yet looks like its misspelling (``hots`` for ``hosts``), that key as unknown, naming
        ``name``: the stray key is the mistake to fix, not the key it was meant to be."""
        self.seen.add(name)
        # Stricter than done()'s suggestion: the keys not read yet include known ones (secret_access_key is not
        # a misspelt access_key_id), so only a typo's shape counts: a length within 2, a ratio of 0.75.
        unread = [k for k in set(self.data) - self.seen if abs(len(k) - len(name)) <= 2]
        stray = close_names(name, unread, n=1, cutoff=0.75)
        if stray:
            raise ConfigError(self.key(stray[0]), f"unknown key; did you mean {name!r}?")
        raise ConfigError(self.key(name), problem)

    def done(self) -> None:
        """Raise :class:`ConfigError` for the first key (sorted) no getter read: ``unknown key``, with the
        closest key that was read (``did you mean 'hosts'?``) when one is close."""
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            close = close_names(unknown[0], self.seen, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(self.key(unknown[0]), f"unknown key{hint}")
