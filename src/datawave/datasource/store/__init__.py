"""The metadata store: SQLAlchemy 2 Core + Alembic, SQLite embedded or PostgreSQL (psycopg 3)."""

from __future__ import annotations

from datawave.datasource.store.apikeys import ApiKeysMixin
from datawave.datasource.store.assets import AssetsMixin
from datawave.datasource.store.audit import AuditDraft, AuditMixin
from datawave.datasource.store.changes import ChangeSet, SnapshotRow, TableRow, TableState
from datawave.datasource.store.edges import EdgeCommand, EdgeNode, EdgesMixin
from datawave.datasource.store.health import (
    AlertRecord,
    BucketDelta,
    HealthMixin,
    HealthStatus,
    LatencySummary,
    UsageDelta,
)
from datawave.datasource.store.ids import asset_id
from datawave.datasource.store.keys import KekUsage, KeysMixin, RewrapReport
from datawave.datasource.store.runs import RunsMixin
from datawave.datasource.store.sealing import AesGcmSealer, Sealer, load_kek
from datawave.datasource.store.sources import SourcesMixin

__all__ = [
    "AesGcmSealer",
    "AlertRecord",
    "AuditDraft",
    "BucketDelta",
    "ChangeSet",
    "EdgeCommand",
    "EdgeNode",
    "HealthStatus",
    "KekUsage",
    "LatencySummary",
    "MetadataStore",
    "RewrapReport",
    "Sealer",
    "SnapshotRow",
    "TableRow",
    "TableState",
    "UsageDelta",
    "asset_id",
    "load_kek",
]


class MetadataStore(
    SourcesMixin,
    AssetsMixin,
    RunsMixin,
    HealthMixin,
    EdgesMixin,
    ApiKeysMixin,
    AuditMixin,
    KeysMixin,
):
    """Everything datawave persists. Synchronous; async callers go through a worker thread."""

    @classmethod
    def open(cls, url: str, *, sealer: Sealer | None = None, migrate: bool = True) -> MetadataStore:
        store = cls(url, sealer=sealer)
        if migrate:
            store.migrate()
        return store
