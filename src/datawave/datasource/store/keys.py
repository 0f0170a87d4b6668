"""Which key-encryption keys the stored secrets use; re-wrapping them onto the current KEK.

Rotation works row by row, each row in its own short transaction, and only swaps the wrapped
data key (the payload stays sealed, see :meth:`AesGcmSealer.rewrap`). A row is replaced only if
it still holds the blob that was read (compare-and-set), so a concurrent update of the source
always wins; a later pass picks up whatever is still wrapped by an older KEK. Blobs sealed to an
edge's key (``dwe1``) are not KEK-wrapped and are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, inspect, select, update

from datawave.datasource.config import DatawaveSettings
from datawave.datasource.errors import ConfigError, StoreError
from datawave.datasource.security.kek import kek_setting, load_keyring
from datawave.datasource.store.base import StoreBase
from datawave.datasource.store.sealing import KEK_MAGIC, AesGcmSealer, blob_kek_id
from datawave.datasource.store.tables import sources

__all__ = ["KekUsage", "KeysMixin", "RewrapReport"]

log = logging.getLogger(__name__)

_HEAD_LEN = len(KEK_MAGIC) + 8


@dataclass
class KekUsage:
    """How many stored secrets each kek id wraps, plus those not KEK-wrapped at all."""

    by_kek: dict[str, int] = field(default_factory=dict)
    edge_sealed: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_kek.values()) + self.edge_sealed + self.other


@dataclass
class RewrapReport:
    kek_id: str
    rewrapped: int = 0
    passes: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    usage: KekUsage = field(default_factory=KekUsage)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kek_id": self.kek_id,
            "rewrapped": self.rewrapped,
            "passes": self.passes,
            "failed": self.failed,
            "usage": dict(self.usage.by_kek),
            "edge_sealed": self.usage.edge_sealed,
        }


class KeysMixin(StoreBase):
    def _kek_sealer(self) -> AesGcmSealer:
        if not isinstance(self.sealer, AesGcmSealer):
            raise StoreError("this store has no key-encryption key (opened without a sealer)")
        return self.sealer

    def attach_keyring(
        self,
        settings: DatawaveSettings,
        *,
        environ: Mapping[str, str],
        allow_create: bool = True,
    ) -> None:
        """Give this store a sealer with the configured KEKs and prove they open what is stored.

        Args:
            environ: the calling process's environment, read by its entry point.
            allow_create: let the dev profile's file provider create a fresh key, which it does
                only while the store holds no sealed secret, so a lost key is never silently
                replaced by a new one.

        Raises:
            ConfigError: no key, or a key that does not match the stored secrets (naming the
                setting to fix and kek ids, never key material).
        """
        ready = inspect(self.engine).has_table(sources.name)
        create = (
            allow_create
            and settings.profile == "dev"
            and settings.secrets.kek_provider == "file"
            and not (ready and self.has_sealed_secrets())
        )
        self.sealer = AesGcmSealer.from_keyring(
            load_keyring(settings, environ=environ, create=create)
        )
        if ready:
            self.check_kek(field_name=kek_setting(settings))

    def kek_usage(self) -> KekUsage:
        """Count sealed secrets by the first bytes of their blob (one grouped query)."""
        head = func.substr(sources.c.secrets, 1, _HEAD_LEN).label("head")
        q = (
            select(head, func.count().label("n"))
            .where(sources.c.secrets.is_not(None))
            .group_by(head)
        )
        usage = KekUsage()
        with self.read() as conn:
            rows = conn.execute(q).all()
        for raw, n in rows:
            blob = bytes(raw or b"")
            kid = blob_kek_id(blob)
            if kid is not None:
                usage.by_kek[kid] = usage.by_kek.get(kid, 0) + int(n)
            elif blob.startswith(b"dwe"):
                usage.edge_sealed += int(n)
            else:
                usage.other += int(n)
        return usage

    def has_sealed_secrets(self) -> bool:
        with self.read() as conn:
            q = select(sources.c.id).where(sources.c.secrets.is_not(None)).limit(1)
            return conn.execute(q).first() is not None

    def check_kek(self, *, field_name: str = "key_file") -> None:
        """Fail start-up clearly when the stored secrets do not open with the keys we hold.

        Every kek id in use must be known, and one blob per kek id must unwrap with it (a
        matching id with a failing key means a corrupt or forged key file).

        Raises:
            ConfigError: naming kek ids only, never key material.
        """
        sealer = self._kek_sealer()
        usage = self.kek_usage()
        known = set(sealer.keyring.ids)
        unknown = {k: n for k, n in usage.by_kek.items() if k not in known}
        if unknown:
            sealer.keyring.reload()
            unknown = {k: n for k, n in unknown.items() if k not in set(sealer.keyring.ids)}
        if unknown:
            held = ", ".join(f"{k} ({n} secrets)" for k, n in sorted(unknown.items()))
            raise ConfigError(
                f"{field_name}: the key-encryption key does not match this store (kek id "
                f"{sealer.kek_id}, store holds {held}); point {field_name} at the key the "
                "store was sealed with, or list it in secrets.previous_kek_files",
                field=field_name, kek_id=sealer.kek_id, store_kek_ids=sorted(unknown),
            )  # fmt: skip
        for kid in usage.by_kek:
            row = self._one_sealed(kid)
            if row is None:
                continue
            try:
                sealer.check(row[1], context=row[0].encode())
            except StoreError:
                raise ConfigError(
                    f"{field_name}: the key-encryption key does not match this store (kek id "
                    f"{kid} is known but does not open source {row[0]}'s secrets)",
                    field=field_name, kek_id=kid,
                ) from None  # fmt: skip

    def _one_sealed(self, kid: str) -> tuple[str, bytes] | None:
        head = KEK_MAGIC + bytes.fromhex(kid)
        q = (
            select(sources.c.id, sources.c.secrets)
            .where(func.substr(sources.c.secrets, 1, _HEAD_LEN) == head)
            .limit(1)
        )
        with self.read() as conn:
            row = conn.execute(q).first()
        return (row[0], bytes(row[1])) if row else None

    def rewrap_secrets(self, *, batch: int = 200, max_passes: int = 5) -> RewrapReport:
        """Re-wrap every secret still under an older KEK onto the current one.

        Safe while owners run: readers open old and new blobs alike (they reload their keyring
        on a kek id they do not hold), and a source updated meanwhile keeps its new value.
        """
        sealer = self._kek_sealer()
        sealer.keyring.refresh()
        report = RewrapReport(kek_id=sealer.kek_id)
        failed: dict[str, str] = {}
        for _ in range(max_passes):
            report.passes += 1
            changed = self._rewrap_pass(sealer, batch, failed, report)
            if not changed:
                break
        report.failed = [{"source_id": k, "reason": v} for k, v in sorted(failed.items())]
        report.usage = self.kek_usage()
        return report

    def _rewrap_pass(
        self, sealer: AesGcmSealer, batch: int, failed: dict[str, str], report: RewrapReport
    ) -> int:
        current = KEK_MAGIC + bytes.fromhex(sealer.kek_id)
        head = func.substr(sources.c.secrets, 1, _HEAD_LEN)
        magic = func.substr(sources.c.secrets, 1, len(KEK_MAGIC))
        cursor = ""
        done = 0
        while True:
            q = (
                select(sources.c.id, sources.c.secrets)
                .where(sources.c.secrets.is_not(None), magic == KEK_MAGIC, head != current)
                .where(sources.c.id > cursor)
                .order_by(sources.c.id)
                .limit(batch)
            )
            with self.read() as conn:
                rows = [(r[0], bytes(r[1])) for r in conn.execute(q).all()]
            for sid, blob in rows:
                if sid in failed:
                    continue
                try:
                    new = sealer.rewrap(blob, context=sid.encode())
                except StoreError as exc:
                    failed[sid] = exc.message
                    log.warning("cannot re-wrap the secrets of source %s: %s", sid, exc.message)
                    continue
                if self._swap_secrets(sid, blob, new):
                    done += 1
                    report.rewrapped += 1
            if len(rows) < batch:
                return done
            cursor = rows[-1][0]

    def _swap_secrets(self, source_id: str, old: bytes, new: bytes) -> bool:
        """Replace ``old`` by ``new`` only if the row still holds ``old`` (one transaction)."""
        q = (
            update(sources)
            .where(sources.c.id == source_id, sources.c.secrets == old)
            .values(secrets=new)
        )
        with self.begin() as conn:
            return bool(conn.execute(q).rowcount)
