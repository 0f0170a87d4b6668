"""Sealing of source secrets at rest: envelope encryption with AES-256-GCM.

Each sealed blob carries its own random data key (DEK), wrapped by a key-encryption key (KEK)::

    b"dw1" | kek_id(8) | nonce(12) | wrapped_dek(48) | nonce(12) | ciphertext + tag

The wrapped DEK is bound to the KEK id and the context (the source id); the ciphertext to the
context. Rotating the KEK re-wraps data keys only (:meth:`AesGcmSealer.rewrap`): the payload is
never decrypted, so the rotation tool never sees a secret. There is no built-in default key: a
missing KEK is an error unless the caller explicitly asks to create one (dev start-up).

Where KEKs come from, and how a process learns of a rotation, is
:mod:`datawave.datasource.security.kek`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from datawave.datasource.errors import StoreError
from datawave.datasource.security.kek import Keyring, StaticKekProvider, read_key_file

__all__ = ["KEK_MAGIC", "AesGcmSealer", "Sealer", "blob_kek_id", "load_kek"]

KEK_MAGIC: Final = b"dw1"
_ID: Final = 8
_NONCE: Final = 12
_WRAPPED: Final = 32 + 16
_HEAD: Final = len(KEK_MAGIC) + _ID
_BODY: Final = _HEAD + _NONCE + _WRAPPED + _NONCE
_MIN: Final = _BODY + 16


class Sealer(Protocol):
    def seal(self, plaintext: bytes, *, context: bytes = b"") -> bytes: ...

    def open(self, blob: bytes, *, context: bytes = b"") -> bytes: ...


def load_kek(path: Path, *, create: bool = False) -> bytes:
    """Read a 32-byte hex KEK from ``path`` (owner-only); create it (0600) only when asked."""
    return read_key_file(path, create=create)


def blob_kek_id(blob: bytes | None) -> str | None:
    """The kek id a KEK-sealed blob names; ``None`` for anything else (e.g. edge-sealed)."""
    if blob is None or len(blob) < _HEAD or bytes(blob[: len(KEK_MAGIC)]) != KEK_MAGIC:
        return None
    return bytes(blob[len(KEK_MAGIC) : _HEAD]).hex()


class AesGcmSealer:
    """Seals with the keyring's current KEK, opens with any KEK it holds.

    A blob naming a KEK this process does not hold makes it reload its keyring once (another
    process rotated the key), so running owners keep working through a rotation.
    """

    def __init__(
        self,
        kek: bytes | None = None,
        *,
        previous: list[bytes] | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        if keyring is None:
            if kek is None:
                raise StoreError("a sealer needs a key-encryption key")
            keyring = Keyring(StaticKekProvider(kek, previous or []))
        self.keyring = keyring
        self._aead: dict[str, AESGCM] = {}

    @classmethod
    def from_keyring(cls, keyring: Keyring) -> AesGcmSealer:
        return cls(keyring=keyring)

    @property
    def kek_id(self) -> str:
        return self.keyring.current_id

    def _kek(self, kid: str, *, reload: bool = True) -> AESGCM:
        key = self.keyring.get(kid)
        if key is None and reload:
            self.keyring.reload()
            key = self.keyring.get(kid)
        if key is None:
            raise StoreError(
                f"sealed secret uses key-encryption key {kid}, which this process does not hold "
                f"(holds {', '.join(self.keyring.ids)}): wrong key, or a retired one",
                kek_id=kid,
            )
        aead = self._aead.get(kid)
        if aead is None:
            aead = self._aead[kid] = AESGCM(key)
        return aead

    def seal(self, plaintext: bytes, *, context: bytes = b"") -> bytes:
        self.keyring.refresh()  # a rotation elsewhere: seal with the new key at once
        kid = self.keyring.current_id
        dek = AESGCM.generate_key(bit_length=256)
        n1, n2 = os.urandom(_NONCE), os.urandom(_NONCE)
        wrapped = self._kek(kid).encrypt(n1, dek, bytes.fromhex(kid) + context)
        body = AESGCM(dek).encrypt(n2, plaintext, context)
        return KEK_MAGIC + bytes.fromhex(kid) + n1 + wrapped + n2 + body

    def _unwrap(self, blob: bytes, context: bytes) -> tuple[str, bytes]:
        kid = blob_kek_id(blob)
        if kid is None or len(blob) < _MIN:
            raise StoreError("sealed secret is malformed")
        n1, wrapped = blob[_HEAD : _HEAD + _NONCE], blob[_HEAD + _NONCE : _BODY - _NONCE]
        try:
            return kid, self._kek(kid).decrypt(n1, wrapped, bytes.fromhex(kid) + context)
        except InvalidTag as exc:
            raise StoreError(
                "sealed secret failed authentication (wrong key or tampered)", kek_id=kid
            ) from exc

    def open(self, blob: bytes, *, context: bytes = b"") -> bytes:
        blob = bytes(blob)
        _, dek = self._unwrap(blob, context)
        n2, body = blob[_BODY - _NONCE : _BODY], blob[_BODY:]
        try:
            return AESGCM(dek).decrypt(n2, body, context)
        except InvalidTag as exc:
            raise StoreError("sealed secret failed authentication (tampered)") from exc

    def check(self, blob: bytes, *, context: bytes = b"") -> None:
        """Prove this process holds the blob's KEK by unwrapping its data key (no payload)."""
        self._unwrap(bytes(blob), context)

    def rewrap(self, blob: bytes, *, context: bytes = b"") -> bytes:
        """The blob with its data key re-wrapped by the current KEK; the payload is untouched.

        A blob already under the current KEK comes back as is.
        """
        blob = bytes(blob)
        self.keyring.refresh()
        kid, dek = self._unwrap(blob, context)
        cur = self.keyring.current_id
        if kid == cur:
            return blob
        n1 = os.urandom(_NONCE)
        wrapped = self._kek(cur).encrypt(n1, dek, bytes.fromhex(cur) + context)
        return KEK_MAGIC + bytes.fromhex(cur) + n1 + wrapped + blob[_BODY - _NONCE :]
