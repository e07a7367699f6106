"""The store's exceptions. Messages name connections, revisions and key ids, never a value or a key.

::

    StoreError
    ├── NameTaken       create: a live connection has the name          (API: 409)
    ├── NotStored       replace/delete: no live connection has the name (API: 404)
    ├── StaleRevision   replace with if_revision: someone wrote first   (API: 409); ``current`` revision
    ├── SchemaMismatch  the database schema is not the one this sigproxy runs on (run `sigproxy store migrate`)
    └── UnreadableRow   a row's secrets do not decrypt (a key missing from encryption_keys, tampering)

Must not: import other sigproxy modules.
"""

from __future__ import annotations

__all__ = ["NameTaken", "NotStored", "SchemaMismatch", "StaleRevision", "StoreError", "UnreadableRow"]


class StoreError(Exception):
    """Base of the connection store's errors."""


class NameTaken(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"connection {name!r} already exists in the store")
        self.name = name


class NotStored(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"connection {name!r} is not in the store")
        self.name = name


class StaleRevision(StoreError):
    def __init__(self, name: str, expected: int, current: int) -> None:
        super().__init__(f"connection {name!r} changed since revision {expected} (now at {current}): "
                         "read it again and retry")
        self.name = name
        self.expected = expected
        self.current = current


class SchemaMismatch(StoreError):
    def __init__(self, found: str | None, head: str, *, newer: bool = False) -> None:
        if newer:
            problem = (f"the store's database schema is at revision {found}, newer than this sigproxy knows "
                       f"({head}): upgrade sigproxy")
        else:
            problem = (f"the store's database schema is at revision {found or 'none (empty database)'}, this "
                       f"sigproxy needs {head}: run `sigproxy store migrate`")
        super().__init__(problem)
        self.found = found
        self.head = head


class UnreadableRow(StoreError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"connection {name!r}: secrets cannot be decrypted: {reason}")
        self.name = name
