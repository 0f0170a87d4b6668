"""API keys in the store: created (token shown once), listed, revoked, and checked per request.

Only the lookup prefix and ``sha256(secret)`` are kept. Role names are not validated here: the
store does not know the custom roles; the API and CLI check them with ``Policy.check_role``
before calling :meth:`ApiKeysMixin.create_api_key`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, insert, or_, select, update

from datawave.datasource.errors import NotFound, Unauthenticated, ValidationFailed
from datawave.datasource.security.apikeys import (
    ApiKeyRecord,
    generate_token,
    hash_secret,
    parse_token,
    secret_matches,
)
from datawave.datasource.security.principal import Grant, Principal
from datawave.datasource.store.base import StoreBase, aware, utcnow
from datawave.datasource.store.tables import api_keys

__all__ = ["ApiKeysMixin"]

#: ``last_used_at`` is written at most this often per key, so a busy key does not turn every
#: authenticated request into a write.
LAST_USED_GRANULARITY = timedelta(minutes=1)

_PUBLIC = [c for c in api_keys.c if c.name != "hash"]
# Compared against when the prefix is unknown, so both paths hash and compare once.
_DUMMY_HASH = hash_secret("x" * 43)


def _record(row: Row[Any]) -> ApiKeyRecord:
    m = row._mapping
    return ApiKeyRecord(
        id=m["id"],
        prefix=m["prefix"],
        name=m["name"],
        grants=tuple(Grant.model_validate(g) for g in (m["grants"] or ())),
        created_by=m["created_by"],
        created_at=aware(m["created_at"]),
        expires_at=aware(m["expires_at"]),
        last_used_at=aware(m["last_used_at"]),
        revoked_at=aware(m["revoked_at"]),
    )


class ApiKeysMixin(StoreBase):
    def create_api_key(
        self,
        *,
        name: str,
        grants: Iterable[Grant],
        created_by: str,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """Create a key.

        Returns:
            The record and the token. The token exists nowhere else: show it once.

        Raises:
            ValidationFailed: empty or over-long name, or an expiry in the past.
        """
        name = name.strip()
        if not name or len(name) > 128:
            raise ValidationFailed(
                "name: must be 1 to 128 characters",
                errors=[{"field": "name", "message": "must be 1 to 128 characters"}],
            )
        now = utcnow()
        if expires_at is not None and (aware(expires_at) or now) <= now:
            raise ValidationFailed(
                "expires_at: must be in the future",
                errors=[{"field": "expires_at", "message": "must be in the future"}],
            )
        token, prefix, digest = generate_token()
        key_id = str(uuid.uuid4())
        with self.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    id=key_id,
                    prefix=prefix,
                    hash=digest,
                    name=name,
                    grants=[g.model_dump() for g in grants],
                    created_by=created_by,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return self.get_api_key(key_id), token

    def list_api_keys(self, *, include_revoked: bool = False) -> list[ApiKeyRecord]:
        """Every key, oldest first; revoked ones only when asked."""
        q = select(*_PUBLIC)
        if not include_revoked:
            q = q.where(api_keys.c.revoked_at.is_(None))
        with self.read() as conn:
            rows = conn.execute(q.order_by(api_keys.c.created_at, api_keys.c.id)).all()
        return [_record(r) for r in rows]

    def get_api_key(self, key_id: str) -> ApiKeyRecord:
        """One key by id (revoked ones included). Raises :class:`NotFound`."""
        with self.read() as conn:
            row = conn.execute(select(*_PUBLIC).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise NotFound(f"no API key {key_id!r}", kind="api_key", ref=key_id)
        return _record(row)

    def revoke_api_key(self, key_id: str) -> ApiKeyRecord:
        """Revoke a key from now on; revoking twice keeps the first time. Raises NotFound."""
        with self.begin() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return self.get_api_key(key_id)

    def authenticate_api_key(self, token: str, *, now: datetime | None = None) -> Principal:
        """The principal behind ``token``.

        Raises:
            Unauthenticated: ``reason`` is ``malformed`` (not a datawave key), ``unknown_key``
                (no such key, or the secret does not match), ``revoked`` or ``expired``. The
                message never contains the token.
        """
        parsed = parse_token(token)
        if parsed is None:
            raise Unauthenticated("malformed API key", reason="malformed")
        prefix, secret = parsed
        with self.read() as conn:
            row = conn.execute(
                select(api_keys.c.hash, *_PUBLIC).where(api_keys.c.prefix == prefix)
            ).first()
        if not secret_matches(secret, row.hash if row is not None else _DUMMY_HASH) or row is None:
            raise Unauthenticated("unknown API key", reason="unknown_key")
        rec = _record(row)
        now = (aware(now) or utcnow()).astimezone(UTC)
        state = rec.state(now)
        if state != "active":
            raise Unauthenticated(f"API key {state}", reason=state, key_id=rec.id)
        last = aware(rec.last_used_at)
        if last is None or last <= now - LAST_USED_GRANULARITY:
            self._touch_api_key(rec.id, now)  # a write at most once a minute, not per request
        return rec.principal()

    def _touch_api_key(self, key_id: str, now: datetime) -> None:
        # Conditional update: several processes may race here; at most one write per minute wins.
        stale = now - LAST_USED_GRANULARITY
        with self.begin() as conn:
            conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= stale),
                )
                .values(last_used_at=now)
            )
