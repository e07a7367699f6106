"""Connection tables as the store sees them: JSON objects with some values at *secret paths*.

:func:`split` takes the values at secret paths out of a table (they are encrypted apart), :func:`join` puts
them back, :func:`changed_paths` lists the dotted key paths that differ between two tables (what the audit
log records). Must not: know any key's meaning, return a secret in anything but :func:`split`'s second part.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["SecretPath", "changed_paths", "join", "leaf_paths", "secret_names", "split"]

SecretPath = tuple[str, ...]


def _plain(table: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``table`` as plain JSON types; ValueError (naming no value) if it is not JSON."""
    if not isinstance(table, Mapping):
        raise TypeError(f"a connection table is a JSON object, not {type(table).__name__}")
    try:
        plain: dict[str, Any] = json.loads(json.dumps(table, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a connection table must be JSON (objects, arrays, strings, numbers, "
                         f"booleans, null): {type(exc).__name__}") from None
    return plain


def split(table: Mapping[str, Any], secret_paths: Iterable[SecretPath]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, secrets)``: a copy of ``table`` without the values at ``secret_paths``, and those values as
    ``{"credentials.secret_access_key": value}``. A path whose parent is not an object is left alone."""
    config = _plain(table)
    secrets: dict[str, Any] = {}
    for path in secret_paths:
        node: Any = config
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            secrets[".".join(path)] = node.pop(path[-1])
    return config, secrets


def join(config: Mapping[str, Any], secrets: Mapping[str, Any]) -> dict[str, Any]:
    """The table ``config`` with ``secrets`` (``split``'s second part) put back at their paths."""
    table: dict[str, Any] = copy.deepcopy(dict(config))
    for dotted, value in secrets.items():
        *parents, leaf = dotted.split(".")
        node = table
        for key in parents:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[leaf] = value
    return table


def _leaves(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def leaf_paths(table: Mapping[str, Any]) -> list[str]:
    """Sorted dotted paths of ``table``'s leaves (arrays and empty objects are leaves)."""
    return sorted(_leaves(table))


def changed_paths(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """Sorted dotted paths whose value differs between ``old`` and ``new`` (added, removed or changed);
    ``None`` stands for an empty table. Returns names only, never values."""
    before, after = _leaves(old or {}), _leaves(new or {})

    def same(path: str) -> bool:  # as JSON: 1 and true differ
        if path not in before or path not in after:
            return False
        return json.dumps(before[path], sort_keys=True) == json.dumps(after[path], sort_keys=True)

    return sorted(p for p in before.keys() | after.keys() if not same(p))


def secret_names(paths: Sequence[SecretPath]) -> frozenset[str]:
    """The dotted names of ``paths``."""
    return frozenset(".".join(p) for p in paths)
