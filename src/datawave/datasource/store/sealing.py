"""Sealing of source secrets at rest: envelope encryption with AES-256-GCM.

Each sealed blob carries its own random data key, wrapped by the key-encryption key (KEK):
``b"dw1" | kek_id(8) | nonce(12) | wrapped_dek(48) | nonce(12) | ciphertext``. Rotating the KEK
re-wraps data keys without touching ciphertexts. There is no built-in default key: a missing KEK
is an error unless the caller explicitly asks to create one (the dev profile on first start).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from datawave.datasource.errors import ConfigError, StoreError

__all__ = ["AesGcmSealer", "Sealer", "load_kek"]

_MAGIC = b"dw1"


class Sealer(Protocol):
    def seal(self, plaintext: bytes, *, context: bytes = b"") -> bytes: ...

    def open(self, blob: bytes, *, context: bytes = b"") -> bytes: ...


def load_kek(path: Path, *, create: bool = False) -> bytes:
    """Read a 32-byte KEK from ``path``; create it (0600) only when ``create`` is true."""
    if not path.exists():
        if not create:
            raise ConfigError(
                f"key_file: key-encryption key {path} does not exist "
                "(run `datawave up` in the dev profile or provision the key)",
                field="key_file",
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32).hex().encode())
    raw = path.read_bytes().strip()
    try:
        key = bytes.fromhex(raw.decode())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"key_file: {path} must hold 32 bytes as hex", field="key_file")
    return key


class AesGcmSealer:
    def __init__(self, kek: bytes, *, previous: list[bytes] | None = None) -> None:
        self._kek = AESGCM(kek)
        self._kek_id = hashlib.sha256(kek).digest()[:8]
        self._previous = {hashlib.sha256(k).digest()[:8]: AESGCM(k) for k in previous or []}

    def seal(self, plaintext: bytes, *, context: bytes = b"") -> bytes:
        dek = AESGCM.generate_key(bit_length=256)
        n1, n2 = os.urandom(12), os.urandom(12)
        wrapped = self._kek.encrypt(n1, dek, self._kek_id + context)
        body = AESGCM(dek).encrypt(n2, plaintext, context)
        return _MAGIC + self._kek_id + n1 + wrapped + n2 + body

    def open(self, blob: bytes, *, context: bytes = b"") -> bytes:
        if not blob.startswith(_MAGIC) or len(blob) < 3 + 8 + 12 + 48 + 12 + 16:
            raise StoreError("sealed secret is malformed")
        kek_id = blob[3:11]
        kek = self._kek if kek_id == self._kek_id else self._previous.get(kek_id)
        if kek is None:
            raise StoreError("sealed secret uses an unknown key-encryption key (wrong key file?)")
        n1, wrapped, n2, body = blob[11:23], blob[23:71], blob[71:83], blob[83:]
        try:
            dek = kek.decrypt(n1, wrapped, kek_id + context)
            return AESGCM(dek).decrypt(n2, body, context)
        except InvalidTag as exc:
            raise StoreError("sealed secret failed authentication (wrong key or tampered)") from exc

    def rewrap(self, blob: bytes, *, context: bytes = b"") -> bytes:
        """Re-seal under the current KEK (key rotation)."""
        return self.seal(self.open(blob, context=context), context=context)
