"""Deterministic ids for discovered assets."""

from __future__ import annotations

import hashlib

__all__ = ["asset_id"]


def asset_id(source_id: str, database: str, schema: str, name: str) -> int:
    """A stable positive 63-bit id for a table of a source (same input, same id, any process)."""
    h = hashlib.blake2b(digest_size=8)
    h.update("\x1f".join((source_id, database, schema, name)).encode())
    return int.from_bytes(h.digest(), "big") >> 1
