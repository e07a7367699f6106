"""Encryption at rest for the connection store: a :class:`Keyring` of AES-256-GCM keys.

The first key encrypts; every key decrypts, so a new key can be put first while rows written under the
old ones stay readable until ``rotate_keys`` rewrites them. A blob is::

    version (1 byte, 0x01) | key id (8 bytes: SHA-256(key)[:8]) | nonce (12 random bytes) | ciphertext+tag

and is bound to its row by the associated data (``aad``): a blob copied onto another row does not decrypt.
``store.key`` under ``state_dir`` holds the generated key for the embedded default (mode 0600).

Must not: show a key or a plaintext in any message, ``repr`` or log line (key *ids* are fine: they are a
hash prefix); know what is encrypted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["DecryptionError", "Keyring", "UnknownKey", "generate_key", "KEY_FILE"]

KEY_FILE = "store.key"
_VERSION = 1
_KEY_BYTES = 32
_ID_BYTES = 8
_NONCE_BYTES = 12
_HEADER = 1 + _ID_BYTES + _NONCE_BYTES


class DecryptionError(ValueError):
    """A blob cannot be decrypted: malformed, tampered with, or bound to another row."""


class UnknownKey(DecryptionError):
    """The blob was encrypted with a key the keyring does not hold; ``key_id`` is its hex id."""

    def __init__(self, key_id: str, known: Sequence[str]) -> None:
        super().__init__(
            f"encrypted with key id {key_id}, which is not among the configured encryption_keys "
            f"(ids {', '.join(known)}): add that key back (after the first) until `rotate_keys` has run")
        self.key_id = key_id


def generate_key() -> str:
    """A fresh 32-byte key as URL-safe base64 (44 characters, padded), the form ``encryption_keys`` takes."""
    return base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).decode("ascii")


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:_ID_BYTES]


def _decode_key(text: str, where: str) -> bytes:
    """The 32 bytes of a URL-safe base64 key; ValueError naming ``where`` (never the text) otherwise."""
    stripped = text.strip()
    try:
        raw = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: not URL-safe base64 (generate one with `sigproxy store new-key`)") from None
    if len(raw) != _KEY_BYTES:
        raise ValueError(f"{where}: decodes to {len(raw)} bytes, an AES-256 key is {_KEY_BYTES} bytes")
    return raw


class Keyring:
    """AES-256-GCM keys: ``keys[0]`` encrypts, all decrypt. Immutable once built."""

    __slots__ = ("_by_id", "_primary", "_primary_id")

    def __init__(self, keys: Sequence[bytes]) -> None:
        """``keys``: raw 32-byte keys, the encrypting one first. ValueError if empty or a key has the wrong size."""
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self._by_id: dict[bytes, AESGCM] = {}
        for i, key in enumerate(keys):
            if len(key) != _KEY_BYTES:
                raise ValueError(f"encryption_keys[{i}]: {len(key)} bytes, an AES-256 key is {_KEY_BYTES} bytes")
            self._by_id.setdefault(_key_id(key), AESGCM(key))
        self._primary_id = _key_id(keys[0])
        self._primary = self._by_id[self._primary_id]

    @classmethod
    def from_strings(cls, keys: Sequence[str]) -> Keyring:
        """A keyring from URL-safe base64 strings (``[store] encryption_keys``).

        Raises ValueError ``"encryption_keys[1]: ..."`` for a string that is not base64 or not 32 bytes,
        or when the list is empty; the message never contains the key.
        """
        if not keys:
            raise ValueError("encryption_keys: give at least one key")
        return cls([_decode_key(k, f"encryption_keys[{i}]") for i, k in enumerate(keys)])

    @classmethod
    def load_or_create(cls, state_dir: Path) -> Keyring:
        """The one-key keyring in ``state_dir/store.key``, created (mode 0600, ``state_dir`` 0700) if missing.

        Creation is exclusive (``O_CREAT|O_EXCL``): of two processes starting at once, one writes the key and
        the other reads it. Raises OSError if the file cannot be read or created, ValueError if it holds no
        valid key.
        """
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / KEY_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(generate_key() + "\n")
                f.flush()
                os.fsync(f.fileno())
        text = ""
        for _ in range(50):  # a concurrent creator may not have written yet
            text = path.read_text(encoding="ascii").strip()
            if text:
                break
            time.sleep(0.01)
        return cls([_decode_key(text, str(path))])

    @property
    def key_ids(self) -> list[str]:
        """Hex ids of the keys, the encrypting one first (safe to show)."""
        return [self._primary_id.hex(), *(k.hex() for k in self._by_id if k != self._primary_id)]

    def __repr__(self) -> str:
        return f"Keyring(key_ids={self.key_ids})"

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """A blob of ``plaintext`` under the first key, bound to ``aad`` (format: module docstring)."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return bytes([_VERSION]) + self._primary_id + nonce + self._primary.encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext of ``blob``.

        Raises :class:`UnknownKey` (naming the key id) when no key of the keyring made it, and
        :class:`DecryptionError` when it is malformed, tampered with, or bound to another ``aad``.
        """
        if len(blob) < _HEADER + 16 or blob[0] != _VERSION:
            raise DecryptionError("not an encrypted blob of a known version")
        key_id, nonce = blob[1:1 + _ID_BYTES], blob[1 + _ID_BYTES:_HEADER]
        aead = self._by_id.get(key_id)
        if aead is None:
            raise UnknownKey(key_id.hex(), self.key_ids)
        try:
            return aead.decrypt(nonce, blob[_HEADER:], aad)
        except InvalidTag:
            raise DecryptionError(
                f"blob under key id {key_id.hex()} does not authenticate: tampered with, or copied from "
                "another row") from None

    def is_current(self, blob: bytes) -> bool:
        """True when ``blob`` was encrypted with the first key (``rotate_keys`` may skip it)."""
        return blob[1:1 + _ID_BYTES] == self._primary_id
