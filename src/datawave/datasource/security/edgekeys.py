"""Sealing source secrets to one edge node, so that only that node can open them.

An edge node makes an X25519 key pair when it joins. The private key stays in the node's state
directory (mode 0600) and never leaves it; the public key travels with the join request and the
core stores it per site. Secrets of a source owned by that site are sealed to it (ECIES)::

    b"dwe1" | key_id(8) | ephemeral public key(32) | nonce(12) | AES-256-GCM ciphertext + tag

The AES key is HKDF-SHA256 over the X25519 shared secret of a fresh ephemeral key and the
node's key; the associated data binds the blob to its magic, the recipient's key id and the
source id, so a blob cannot be replayed as another source's secrets. The core keeps only this
blob: after hand-over it holds nothing that opens with its own key-encryption key, and the
blob's magic differs from the KEK envelope's (``dw1``) so neither opener mistakes one for the
other.

``key_id`` is the first 16 hex digits of ``sha256(public key)``; a blob names the key it was
sealed to, so an edge that re-joined with a new key says exactly why an old blob does not open.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from datawave.datasource.errors import ConfigError, EdgeError

__all__ = [
    "EDGE_MAGIC",
    "EdgeSealingKey",
    "is_edge_sealed",
    "key_id",
    "seal_to_edge",
    "sealed_key_id",
]

EDGE_MAGIC: Final = b"dwe1"
PUBLIC_KEY_BYTES: Final = 32
_KEY_ID_BYTES: Final = 8
_NONCE_BYTES: Final = 12
_HEADER: Final = len(EDGE_MAGIC) + _KEY_ID_BYTES + PUBLIC_KEY_BYTES + _NONCE_BYTES
_TAG_BYTES: Final = 16
_INFO: Final = b"datawave edge seal v1"


def key_id(public_key: bytes) -> str:
    """The id of an edge public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(_check_public(public_key)).hexdigest()[: 2 * _KEY_ID_BYTES]


def is_edge_sealed(blob: bytes | None) -> bool:
    """Whether ``blob`` was sealed to an edge key (rather than with the core's KEK)."""
    return blob is not None and bytes(blob[: len(EDGE_MAGIC)]) == EDGE_MAGIC


def sealed_key_id(blob: bytes) -> str:
    """The key id an edge-sealed blob was sealed to.

    Raises:
        EdgeError: Not an edge-sealed blob.
    """
    if not is_edge_sealed(blob) or len(blob) < _HEADER + _TAG_BYTES:
        raise EdgeError("not a secret sealed to an edge key")
    return blob[len(EDGE_MAGIC) : len(EDGE_MAGIC) + _KEY_ID_BYTES].hex()


def seal_to_edge(public_key: bytes, plaintext: bytes, *, context: bytes) -> bytes:
    """Seal ``plaintext`` so only the holder of ``public_key``'s private key can open it.

    Args:
        public_key: The edge's raw 32-byte X25519 public key.
        plaintext: What to seal (the msgpack of a source's secrets).
        context: Bound into the ciphertext (the source id); opening needs the same value.

    Raises:
        ConfigError: ``public_key`` is not a 32-byte X25519 key.
    """
    recipient = X25519PublicKey.from_public_bytes(_check_public(public_key))
    ephemeral = X25519PrivateKey.generate()
    eph_pub = ephemeral.public_key().public_bytes_raw()
    kid = bytes.fromhex(key_id(public_key))
    aead = AESGCM(_derive(ephemeral.exchange(recipient), eph_pub, public_key))
    nonce = os.urandom(_NONCE_BYTES)
    body = aead.encrypt(nonce, plaintext, EDGE_MAGIC + kid + context)
    return EDGE_MAGIC + kid + eph_pub + nonce + body


class EdgeSealingKey:
    """An edge node's X25519 private key: what opens the secrets the core sealed to it.

    ``repr`` shows the key id only.
    """

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes_raw()
        self.key_id = key_id(self.public_key)

    def __repr__(self) -> str:
        return f"EdgeSealingKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> EdgeSealingKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path | str) -> EdgeSealingKey:
        """Read a key file written by :meth:`save`.

        Raises:
            EdgeError: Missing, unreadable, or not an X25519 private key.
        """
        path = Path(path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise EdgeError(
                f"no sealing key at {path}: this node cannot open its sources' secrets "
                "(re-join the site)", path=str(path),
            ) from None  # fmt: skip
        except (OSError, ValueError) as exc:
            raise EdgeError(f"cannot read the sealing key {path}: {type(exc).__name__}",
                            path=str(path)) from None  # fmt: skip
        if not isinstance(key, X25519PrivateKey):
            raise EdgeError(f"{path} is not an X25519 private key", path=str(path))
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path | str) -> EdgeSealingKey:
        """The key at ``path``, generated (mode 0600, never overwritten) if there is none."""
        path = Path(path)
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        key.save(path)
        return key

    def save(self, path: Path | str) -> None:
        """Write the private key (PKCS#8 PEM) readable by the owner only; never overwrites.

        Raises:
            EdgeError: A key file is already there.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise EdgeError(f"a sealing key already exists at {path}", path=str(path)) from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())

    def open(self, blob: bytes, *, context: bytes) -> bytes:
        """Open a blob sealed to this key with :func:`seal_to_edge`.

        Raises:
            EdgeError: Malformed, sealed to another key (names both key ids), or it fails
                authentication (tampered, or sealed for another source).
        """
        if not is_edge_sealed(blob) or len(blob) < _HEADER + _TAG_BYTES:
            raise EdgeError("sealed secret is malformed")
        kid = sealed_key_id(blob)
        if kid != self.key_id:
            raise EdgeError(
                f"secret sealed to edge key {kid}, this node holds {self.key_id} "
                "(the site re-joined since: re-enter the source's secrets on the core)",
                key_id=kid,
            )
        start = len(EDGE_MAGIC) + _KEY_ID_BYTES
        eph_pub = blob[start : start + PUBLIC_KEY_BYTES]
        nonce = blob[start + PUBLIC_KEY_BYTES : _HEADER]
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
            aead = AESGCM(_derive(shared, eph_pub, self.public_key))
            return aead.decrypt(nonce, blob[_HEADER:], EDGE_MAGIC + bytes.fromhex(kid) + context)
        except (InvalidTag, ValueError):
            raise EdgeError("sealed secret failed authentication (tampered, or another "
                            "source's)") from None  # fmt: skip


def _derive(shared: bytes, eph_pub: bytes, recipient_pub: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_pub + recipient_pub, info=_INFO)
    return hkdf.derive(shared)


def _check_public(public_key: bytes) -> bytes:
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != PUBLIC_KEY_BYTES:
        raise ConfigError("an edge sealing key is 32 raw bytes (X25519)", field="public_key")
    return bytes(public_key)
