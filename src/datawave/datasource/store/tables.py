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
    "alerts",
    "api_keys",
    "audit_log",
    "databases",
    "discovery_runs",
    "drift_events",
    "edge_commands",
    "edge_epochs",
    "edge_keys",
    "edge_nodes",
    "health_buckets",
    "health_status",
    "job_items",
    "jobs",
    "metadata",
    "schemas",
    "snapshots",
    "source_usage",
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


databases = Table(
    "databases",
    metadata,
    Column("source_id", String(36), ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(512), primary_key=True),
    Column("comment", Text),
    Column("size_bytes", BigInteger),
    Column("properties", JSON),
    Column("updated_at", TS, nullable=False),
)

schemas = Table(
    "schemas",
    metadata,
    Column("source_id", String(36), ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("database", String(512), primary_key=True),
    Column("name", String(512), primary_key=True),
    Column("comment", Text),
    Column("updated_at", TS, nullable=False),
)

tables = Table(
    "tables",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("source_id", String(36), ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
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
    # Migration 0005. The connector's signature of the catalog rows the record was built from:
    # a rediscovery whose rows sign the same skips building the table (NULL: always rebuilt).
    Column("signature", String(32)),
    # The table's columns, a JSON array of ColumnInfo objects (default fields left out), in
    # ordinal order: one value per table instead of one row per column, so a first discovery
    # of 60,000 columns writes 5,000 rows, not 65,000.
    Column("column_doc", Text),
)
Index(
    "uq_tables_source_path",
    tables.c.source_id,
    tables.c.database,
    tables.c.schema,
    tables.c.name,
    unique=True,
)

discovery_runs = Table(
    "discovery_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("source_id", String(36), ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
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
    Column("source_id", String(36), ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
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
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("source_id", String(36), ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
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
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("source_id", String(36), ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
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


# -- health, alerts, usage (migration 0002) ------------------------------------------------------

health_status = Table(
    "health_status",
    metadata,
    Column("source_id", String(36), ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("since", TS, nullable=False),
    Column("candidate", String(16)),  # the state a streak of results points at
    Column("streak", Integer, nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0),  # consecutive down results
    Column("last_checked_at", TS),
    Column("last_latency_ms", Float),
    Column("last_error", Text),
)

# One row per source and time bucket: bounded by sources x retention / bucket size.
health_buckets = Table(
    "health_buckets",
    metadata,
    Column("source_id", String(36), ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("bucket_start", TS, primary_key=True),
    Column("checks", Integer, nullable=False, default=0),
    Column("healthy", Integer, nullable=False, default=0),
    Column("degraded", Integer, nullable=False, default=0),
    Column("down", Integer, nullable=False, default=0),
    Column("lat_count", Integer, nullable=False, default=0),
    Column("lat_sum", Float, nullable=False, default=0.0),
    Column("lat_min", Float),
    Column("lat_max", Float),
    Column("lat_hist", JSON),  # counts per engines.health.LATENCY_BINS_MS bin
)
Index("ix_health_buckets_start", health_buckets.c.bucket_start)

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("rule", String(64), nullable=False),
    Column("key", String(256), nullable=False),  # dedup key: rule + subject
    Column("subject", String(256), nullable=False),  # source id or edge node
    Column("source_id", String(36)),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # firing | resolved
    Column("value", Float),
    Column("message", Text, nullable=False),
    Column("fired_at", TS, nullable=False),
    Column("resolved_at", TS),
    Column("data", JSON),
)
Index("ix_alerts_status_key", alerts.c.status, alerts.c.key)
Index("ix_alerts_fired", alerts.c.fired_at)

source_usage = Table(
    "source_usage",
    metadata,
    Column("source_id", String(36), ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("bucket_start", TS, primary_key=True),
    Column("api_reads", Integer, nullable=False, default=0),
    Column("api_errors", Integer, nullable=False, default=0),
    Column("discoveries", Integer, nullable=False, default=0),
    Column("discovery_errors", Integer, nullable=False, default=0),
    Column("checks", Integer, nullable=False, default=0),
    Column("check_errors", Integer, nullable=False, default=0),
    Column("query_ms", Float, nullable=False, default=0.0),  # cost: time spent on the source
)
Index("ix_source_usage_start", source_usage.c.bucket_start)


# -- edge fleet (migration 0003) -----------------------------------------------------------------

# One row per edge node: the fleet view, and the sync high-water mark that makes replay safe.
edge_nodes = Table(
    "edge_nodes",
    metadata,
    Column("node", String(64), primary_key=True),
    Column("site", String(64), nullable=False),
    Column("epoch", String(64)),  # the node's outbox incarnation; a new one resets applied_seq
    Column("applied_seq", BigInteger, nullable=False, default=0),
    Column("version", String(64)),
    Column("link_state", String(16), nullable=False, default="unknown"),
    Column("load", Float),
    Column("queue_depth", Integer),
    Column("lag_s", Float),
    Column("sources_digest", String(64)),
    Column("joined_at", TS, nullable=False),
    Column("last_heartbeat_at", TS),
    Column("last_sync_at", TS),
    Column("left_at", TS),
)
Index("ix_edge_nodes_site", edge_nodes.c.site)

# High-water mark per outbox incarnation: a wiped cache starts a new epoch counting from 1,
# while a stray batch of an old epoch still dedups against its own mark.
edge_epochs = Table(
    "edge_epochs",
    metadata,
    Column("node", String(64), primary_key=True),
    Column("epoch", String(64), primary_key=True),
    Column("applied_seq", BigInteger, nullable=False, default=0),
)

# Commands for an edge wait here until the edge acknowledges them (store-and-forward, core side).
edge_commands = Table(
    "edge_commands",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("site", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("args", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # pending | done | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", TS, nullable=False),
    Column("sent_at", TS),
    Column("done_at", TS),
    Column("result", JSON),
)
Index("ix_edge_commands_site_status", edge_commands.c.site, edge_commands.c.status)

# -- security (migration 0004) -------------------------------------------------------------------

# API keys: only a SHA-256 of the secret part is stored; ``prefix`` (public) finds the row.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("hash", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("grants", JSON, nullable=False),  # [{role, collection, source}]
    Column("created_by", String(256), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS),
    Column("last_used_at", TS),
    Column("revoked_at", TS),
)

# The audit log: append-only, hash-chained (``hash`` = H(prev_hash | canonical entry)).
audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("at", TS, nullable=False),
    Column("principal", String(256), nullable=False),
    Column("action", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),  # ok | denied | failed
    Column("source_id", String(36)),
    Column("target", String(256)),
    Column("detail", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("ix_audit_log_principal_seq", audit_log.c.principal, audit_log.c.seq)
Index("ix_audit_log_source_id_seq", audit_log.c.source_id, audit_log.c.seq)
Index("ix_audit_log_at", audit_log.c.at)

# Each edge site's public sealing key: edge-owned source secrets are sealed to it, so the core
# cannot read them after hand-over.
edge_keys = Table(
    "edge_keys",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("created_at", TS, nullable=False),
)
