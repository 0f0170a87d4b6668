"""health status, latency buckets, alerts, source usage

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 20:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _source_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["source_id"],
        ["sources.id"],
        name=op.f(f"fk_{table}_source_id_sources"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "health_status",
        sa.Column("source_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("since", TS, nullable=False),
        sa.Column("candidate", sa.String(length=16), nullable=True),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_checked_at", TS, nullable=True),
        sa.Column("last_latency_ms", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _source_fk("health_status"),
        sa.PrimaryKeyConstraint("source_id", name=op.f("pk_health_status")),
    )
    op.create_table(
        "health_buckets",
        sa.Column("source_id", sa.String(length=36), nullable=False),
        sa.Column("bucket_start", TS, nullable=False),
        sa.Column("checks", sa.Integer(), nullable=False),
        sa.Column("healthy", sa.Integer(), nullable=False),
        sa.Column("degraded", sa.Integer(), nullable=False),
        sa.Column("down", sa.Integer(), nullable=False),
        sa.Column("lat_count", sa.Integer(), nullable=False),
        sa.Column("lat_sum", sa.Float(), nullable=False),
        sa.Column("lat_min", sa.Float(), nullable=True),
        sa.Column("lat_max", sa.Float(), nullable=True),
        sa.Column("lat_hist", sa.JSON(), nullable=True),
        _source_fk("health_buckets"),
        sa.PrimaryKeyConstraint("source_id", "bucket_start", name=op.f("pk_health_buckets")),
    )
    op.create_index("ix_health_buckets_start", "health_buckets", ["bucket_start"], unique=False)
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("source_id", sa.String(length=36), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("fired_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index("ix_alerts_status_key", "alerts", ["status", "key"], unique=False)
    op.create_index("ix_alerts_fired", "alerts", ["fired_at"], unique=False)
    op.create_table(
        "source_usage",
        sa.Column("source_id", sa.String(length=36), nullable=False),
        sa.Column("bucket_start", TS, nullable=False),
        sa.Column("api_reads", sa.Integer(), nullable=False),
        sa.Column("api_errors", sa.Integer(), nullable=False),
        sa.Column("discoveries", sa.Integer(), nullable=False),
        sa.Column("discovery_errors", sa.Integer(), nullable=False),
        sa.Column("checks", sa.Integer(), nullable=False),
        sa.Column("check_errors", sa.Integer(), nullable=False),
        sa.Column("query_ms", sa.Float(), nullable=False),
        _source_fk("source_usage"),
        sa.PrimaryKeyConstraint("source_id", "bucket_start", name=op.f("pk_source_usage")),
    )
    op.create_index("ix_source_usage_start", "source_usage", ["bucket_start"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_source_usage_start", table_name="source_usage")
    op.drop_table("source_usage")
    op.drop_index("ix_alerts_fired", table_name="alerts")
    op.drop_index("ix_alerts_status_key", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("ix_health_buckets_start", table_name="health_buckets")
    op.drop_table("health_buckets")
    op.drop_table("health_status")
