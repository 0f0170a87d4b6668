"""The edge fleet: leaf NATS servers, one-command join tokens and the per-node LMDB cache.

``cache`` keeps a node's state (snapshots, health samples, the outbox, sync cursors) in LMDB,
``tokens`` issues and redeems one-time join tokens, ``natsproc`` runs the real ``nats-server``
processes (the core hub and the edge leaves). Nothing here imports ``actors`` or ``serve``.
"""

from __future__ import annotations

from datawave.datasource.edge.cache import DATABASES, CacheDb, EdgeCache, OutboxEntry
from datawave.datasource.edge.natsproc import (
    HubConfig,
    LeafConfig,
    NatsServer,
    ServerState,
    edge_inbox_prefix,
    edge_permissions,
    edge_subject_prefix,
    find_nats_server,
    free_port,
    render_config,
)
from datawave.datasource.edge.tokens import (
    EdgeCredentials,
    JoinToken,
    TokenIssuer,
    edge_user,
    parse_unverified,
    validate_site,
)

__all__ = [
    "DATABASES",
    "CacheDb",
    "EdgeCache",
    "EdgeCredentials",
    "HubConfig",
    "JoinToken",
    "LeafConfig",
    "NatsServer",
    "OutboxEntry",
    "ServerState",
    "TokenIssuer",
    "edge_inbox_prefix",
    "edge_permissions",
    "edge_subject_prefix",
    "edge_user",
    "find_nats_server",
    "free_port",
    "parse_unverified",
    "render_config",
    "validate_site",
]
