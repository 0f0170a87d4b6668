"""SQLAlchemy Core tables of the metadata store (the single source for Alembic migrations).

Asset ids are deterministic 63-bit integers derived from (source id, qualified name), so writing
the same discovery twice, or replaying an edge record, lands on the same rows.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "columns",
    "databases",
    "discovery_runs",
    "drift_events",
    "job_items",
    "jobs",
    "metadata",
    "schemas",
    "snapshots",
    "sources",
    "tables",
    "test_results",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = DateTime(timezone=True)

sources = Table(
    "sources",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("type", String(64), nullable=False),
    Column("config", JSON, nullable=False),
    Column("secrets", LargeBinary, nullable=True),
    Column("secret_fields", JSON, nullable=False, default=list),
    Column("labels", JSON, nullable=False, default=dict),
    Column("collection", String(512), nullable=True),
    Column("edge_site", String(128), nullable=True),
    Column("description", Text, nullable=True),
    Column("owner_shard", Integer, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("health", String(16), nullable=False, default="unknown"),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("deleted_at", TS, nullable=True),
    Column("last_discovered_at", TS, nullable=True),
)
Index(
    "uq_sources_live_name",
    sources.c.name,
    unique=True,
    sqlite_where=sources.c.deleted_at.is_(None),
    postgresql_where=sources.c.deleted_at.is_(None),
)
Index("ix_sources_type", sources.c.type)
Index("ix_sources_collection", sources.c.collection)
Index("ix_sources_edge_site", sources.c.edge_site)

_src_fk = {"ondelete": "CASCADE"}

databases = Table(
    "databases",
    metadata,
    Column("source_id", String(36), ForeignKey("sources.id", **_src_fk), primary_key=True),
    Column("name", String(512), primary_key=True),
    Column("comment", Text),
    Column("size_bytes", BigInteger),
    Column("properties", JSON),
    Column("updated_at", TS, nullable=False),
)

schemas = Table(
    "schemas",
    metadata,
    Column("source_id", String(36), ForeignKey("sources.id", **_src_fk), primary_key=True),
    Column("database", String(512), primary_key=True),
    Column("name", String(512), primary_key=True),
    Column("comment", Text),
    Column("updated_at", TS, nullable=False),
)

tables = Table(
    "tables",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("source_id", String(36), ForeignKey("sources.id", **_src_fk), nullable=False),
    Column("database", String(512), nullable=False),
    Column("schema", String(512), nullable=False),
    Column("name", String(512), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("comment", Text),
    Column("parent", String(1024)),
    Column("partition_key", Text),
    Column("partition_bound", Text),
    Column("definition", Text),
    Column("row_estimate", BigInteger),
    Column("size_bytes", BigInteger),
    Column("column_count", Integer, nullable=False, default=0),
    Column("primary_key", JSON),
    Column("unique_constraints", JSON),
    Column("foreign_keys", JSON),
    Column("indexes", JSON),
    Column("properties", JSON),
    Column("fingerprint", String(32), nullable=False),
    Column("first_seen_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)
Index(
    "uq_tables_source_path",
    tables.c.source_id,
    tables.c.database,
    tables.c.schema,
    tables.c.name,
    unique=True,
)

columns = Table(
    "columns",
    metadata,
    Column("table_id", BigInteger, ForeignKey("tables.id", ondelete="CASCADE"), primary_key=True),
    Column("ordinal", Integer, primary_key=True, autoincrement=False),
    Column("source_id", String(36), nullable=False),
    Column("name", String(512), nullable=False),
    Column("data_type", Text, nullable=False),
    Column("nullable", Boolean, nullable=False),
    Column("default", Text),
    Column("comment", Text),
    Column("generated", Text),
    Column("identity", Boolean, nullable=False, default=False),
    Column("enum_values", JSON),
    Column("is_array", Boolean, nullable=False, default=False),
    Column("is_primary_key", Boolean, nullable=False, default=False),
    sqlite_with_rowid=False,
)
# No secondary indexes on columns: bulk loads stay cheap, reads go through the table id, and
# substring search cannot use a b-tree anyway.

discovery_runs = Table(
    "discovery_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("source_id", String(36), ForeignKey("sources.id", **_src_fk), nullable=False),
    Column("job_id", String(36)),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False, default=1),
    Column("origin", String(128), nullable=False, default="core"),
    Column("started_at", TS, nullable=False),
    Column("finished_at", TS),
    Column("duration_ms", Float),
    Column("counters", JSON),
    Column("errors", JSON),
    Column("warnings", JSON),
    Column("snapshot_id", String(36)),
    Column("drift_events", Integer, nullable=False, default=0),
)
Index("ix_runs_source_started", discovery_runs.c.source_id, discovery_runs.c.started_at)
Index("ix_runs_status", discovery_runs.c.status)

snapshots = Table(
    "snapshots",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("source_id", String(36), ForeignKey("sources.id", **_src_fk), nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("table_count", Integer, nullable=False),
    Column("fingerprint", String(32), nullable=False),
    Column("tables", LargeBinary, nullable=False),  # msgpack {qualified name: fingerprint}
)
Index("ix_snapshots_source_created", snapshots.c.source_id, snapshots.c.created_at)

drift_events = Table(
    "drift_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source_id", String(36), ForeignKey("sources.id", **_src_fk), nullable=False),
    Column("run_id", String(36)),
    Column("kind", String(32), nullable=False),
    Column("table_name", String(1600), nullable=False),
    Column("column_name", String(512)),
    Column("before", JSON),
    Column("after", JSON),
    Column("breaking", Boolean, nullable=False),
    Column("detected_at", TS, nullable=False),
)
Index("ix_drift_source_detected", drift_events.c.source_id, drift_events.c.detected_at)

test_results = Table(
    "test_results",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source_id", String(36), ForeignKey("sources.id", **_src_fk), nullable=False),
    Column("tested_at", TS, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("steps", JSON, nullable=False),
)
Index("ix_test_results_source", test_results.c.source_id, test_results.c.tested_at)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("selector", JSON),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("created_at", TS, nullable=False),
    Column("finished_at", TS),
)

job_items = Table(
    "job_items",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("source_id", String(36), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("run_id", String(36)),
    Column("error", Text),
)
