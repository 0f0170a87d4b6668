"""edge fleet: nodes (fleet registry, sync high-water marks) and pending commands

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 20:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "edge_nodes",
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.String(length=64), nullable=True),
        sa.Column("applied_seq", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("link_state", sa.String(length=16), nullable=False),
        sa.Column("load", sa.Float(), nullable=True),
        sa.Column("queue_depth", sa.Integer(), nullable=True),
        sa.Column("lag_s", sa.Float(), nullable=True),
        sa.Column("sources_digest", sa.String(length=64), nullable=True),
        sa.Column("joined_at", TS, nullable=False),
        sa.Column("last_heartbeat_at", TS, nullable=True),
        sa.Column("last_sync_at", TS, nullable=True),
        sa.Column("left_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("node", name=op.f("pk_edge_nodes")),
    )
    op.create_index("ix_edge_nodes_site", "edge_nodes", ["site"], unique=False)
    op.create_table(
        "edge_epochs",
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.String(length=64), nullable=False),
        sa.Column("applied_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node", "epoch", name=op.f("pk_edge_epochs")),
    )
    op.create_table(
        "edge_commands",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("done_at", TS, nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edge_commands")),
    )
    op.create_index(
        "ix_edge_commands_site_status", "edge_commands", ["site", "status"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_edge_commands_site_status", table_name="edge_commands")
    op.drop_table("edge_commands")
    op.drop_table("edge_epochs")
    op.drop_index("ix_edge_nodes_site", table_name="edge_nodes")
    op.drop_table("edge_nodes")
