"""The store's keyring: AES-256-GCM round trips, rotation, binding to a row, key ids in errors, the key file."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from sigproxy.store.crypto import DecryptionError, Keyring, UnknownKey, generate_key

AAD = b"sigproxy/connection/acme"


def test_round_trip_and_fresh_nonces() -> None:
    ring = Keyring.from_strings([generate_key()])
    a, b = ring.encrypt(b"s3cret", AAD), ring.encrypt(b"s3cret", AAD)
    assert a != b  # random nonce
    assert b"s3cret" not in a
    assert ring.decrypt(a, AAD) == b"s3cret"
    assert a[0] == 1 and len(a) == 1 + 8 + 12 + len(b"s3cret") + 16
    assert ring.is_current(a)


def test_rotation_old_key_decrypts_new_key_encrypts() -> None:
    old, new = generate_key(), generate_key()
    before = Keyring.from_strings([old]).encrypt(b"value", AAD)
    ring = Keyring.from_strings([new, old])
    assert ring.decrypt(before, AAD) == b"value"
    assert not ring.is_current(before)
    after = ring.encrypt(b"value", AAD)
    assert ring.is_current(after)
    assert Keyring.from_strings([new]).decrypt(after, AAD) == b"value"
    with pytest.raises(UnknownKey):
        Keyring.from_strings([old]).decrypt(after, AAD)


def test_blob_bound_to_its_row() -> None:
    ring = Keyring.from_strings([generate_key()])
    blob = ring.encrypt(b"value", AAD)
    with pytest.raises(DecryptionError, match="another row"):
        ring.decrypt(blob, b"sigproxy/connection/other")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionError):
        ring.decrypt(tampered, AAD)
    with pytest.raises(DecryptionError, match="known version"):
        ring.decrypt(b"\x02" + blob[1:], AAD)


def test_unknown_key_error_names_the_id_not_the_key() -> None:
    stranger, mine = generate_key(), generate_key()
    blob = Keyring.from_strings([stranger]).encrypt(b"value", AAD)
    with pytest.raises(UnknownKey) as caught:
        Keyring.from_strings([mine]).decrypt(blob, AAD)
    message = str(caught.value)
    assert caught.value.key_id == blob[1:9].hex()
    assert blob[1:9].hex() in message
    assert stranger not in message and mine not in message
    assert stranger.rstrip("=") not in repr(Keyring.from_strings([stranger]))


@pytest.mark.parametrize(
    ("text", "problem"),
    [("not base64 at all!!", "not URL-safe base64"),
     (base64.urlsafe_b64encode(b"x" * 16).decode(), "16 bytes"),
     (base64.urlsafe_b64encode(b"x" * 33).decode(), "33 bytes")])
def test_bad_key_strings_name_the_index_never_the_key(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"^encryption_keys\[1\]: ") as caught:
        Keyring.from_strings([generate_key(), text])
    assert problem in str(caught.value)
    assert text not in str(caught.value)


def test_empty_keyring_refused() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        Keyring.from_strings([])


def test_unpadded_key_accepted() -> None:
    key = generate_key()
    assert Keyring.from_strings([key.rstrip("=")]).key_ids == Keyring.from_strings([key]).key_ids


def test_key_file_created_0600_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Keyring.load_or_create(state)
    path = state / "store.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    blob = first.encrypt(b"value", AAD)
    again = Keyring.load_or_create(state)
    assert again.key_ids == first.key_ids
    assert again.decrypt(blob, AAD) == b"value"
    assert Keyring.from_strings([path.read_text().strip()]).key_ids == first.key_ids


def test_bad_key_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "store.key").write_text("short\n")
    os.chmod(tmp_path / "store.key", 0o600)
    with pytest.raises(ValueError, match=r"store\.key: "):
        Keyring.load_or_create(tmp_path)
