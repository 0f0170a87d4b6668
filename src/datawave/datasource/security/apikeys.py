"""API keys: the token format, its hash, and the record the store hands out.

A token reads ``dwk_<prefix>_<secret>``: ``prefix`` is 12 alphanumeric characters that find the
key's row (and name the key in listings), ``secret`` is 32 random bytes, url-safe base64 without
padding (43 characters). Only ``sha256(secret)`` is stored, so a stolen store does not yield
usable keys, and the token itself is shown exactly once, when the key is created.

The layout is fixed-length so parsing is positional: no separator inside the secret (base64
uses ``_`` and ``-``) can make a token ambiguous, and anything else is ``malformed`` before the
store is asked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import string
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from datawave.datasource.security.principal import Grant, Principal

__all__ = [
    "PREFIX_LEN",
    "TOKEN_LEN",
    "ApiKeyRecord",
    "generate_token",
    "hash_secret",
    "parse_token",
    "secret_matches",
]

_SCHEME = "dwk_"
PREFIX_LEN = 12
_SECRET_BYTES = 32
_SECRET_LEN = 43  # base64 of 32 bytes without padding
TOKEN_LEN = len(_SCHEME) + PREFIX_LEN + 1 + _SECRET_LEN
_PREFIX_ALPHABET = string.ascii_letters + string.digits
_SECRET_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")


class ApiKeyRecord(BaseModel):
    """An API key as listings show it. It never carries the hash, let alone the token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    prefix: str = Field(description="Public part of the token, `dwk_<prefix>_...`")
    name: str
    grants: tuple[Grant, ...] = ()
    created_by: str
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def state(self, now: datetime) -> str:
        """``active``, ``revoked`` or ``expired`` at ``now`` (revocation wins)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        """The caller this key authenticates; ``id`` is the key id, stable across renames."""
        return Principal(id=self.id, kind="apikey", name=self.name, grants=self.grants)


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of the secret part. A plain hash suffices: the secret is 256 random bits,
    so there is nothing for a slow hash to protect against guessing."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of ``secret`` against a stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def generate_token() -> tuple[str, str, str]:
    """A new token.

    Returns:
        ``(token, prefix, secret_hash)``: give the token to the caller once, store the rest.
    """
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LEN))
    secret = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).rstrip(b"=").decode()
    return f"{_SCHEME}{prefix}_{secret}", prefix, hash_secret(secret)


def parse_token(token: object) -> tuple[str, str] | None:
    """Split a token into ``(prefix, secret)``; None for anything that is not one of ours.

    Cheap and total: any input (wrong type, oversized, non-ASCII) gives None, never an error.
    """
    if not isinstance(token, str) or len(token) != TOKEN_LEN or not token.startswith(_SCHEME):
        return None
    start = len(_SCHEME)
    prefix = token[start : start + PREFIX_LEN]
    if token[start + PREFIX_LEN] != "_":
        return None
    secret = token[start + PREFIX_LEN + 1 :]
    if not (prefix.isascii() and prefix.isalnum()) or not set(secret) <= _SECRET_ALPHABET:
        return None
    try:
        raw = base64.urlsafe_b64decode(secret + "=")
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _SECRET_BYTES:
        return None
    return prefix, secret
