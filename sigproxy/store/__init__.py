"""The connection store: connections created, changed and deleted at runtime, kept in SQLite (the embedded
default) or PostgreSQL (several replicas), secrets encrypted at rest, every change audited and followed by
every replica. A library: it knows no connection schema beyond which key paths hold secrets.

- :class:`Store` (:mod:`.repository`): open, CRUD, paging, snapshot and change feed, key rotation, watch.
- :class:`SessionRecords` (:mod:`.connect`, ``Store.connect_sessions``): connect-page sessions.
- :class:`Keyring` (:mod:`.crypto`): AES-256-GCM keys; :func:`generate_key`.
- :mod:`.migrate`: :func:`upgrade`, :func:`current` (Alembic, packaged in ``migrations/``).
- :mod:`.database`: :func:`redacted` URLs for logs.

Must not: be imported by the request path (connections are held in memory), log a secret or a key.
"""

from .connect import SESSION_STATES, SessionRecord, SessionRecords
from .crypto import DecryptionError, Keyring, UnknownKey, generate_key
from .database import redacted
from .errors import NameTaken, NotStored, SchemaMismatch, StaleRevision, StoreError, UnreadableRow
from .migrate import current, head, upgrade
from .repository import CHANNEL, STATES, Store, StoredConnection

__all__ = [
    "Store",
    "StoredConnection",
    "SessionRecord",
    "SessionRecords",
    "SESSION_STATES",
    "STATES",
    "CHANNEL",
    "StoreError",
    "NameTaken",
    "NotStored",
    "StaleRevision",
    "SchemaMismatch",
    "UnreadableRow",
    "Keyring",
    "generate_key",
    "DecryptionError",
    "UnknownKey",
    "redacted",
    "upgrade",
    "current",
    "head",
]
