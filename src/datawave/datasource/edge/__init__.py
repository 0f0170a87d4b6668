"""The edge fleet: leaf NATS servers, one-command join tokens and the per-node LMDB cache.

``cache`` keeps a node's state (snapshots, health samples, the outbox, sync cursors) in LMDB,
``tokens`` issues and redeems one-time join tokens, ``tls`` makes the leaf link's certificates, ``natsproc`` runs the real ``nats-server``
processes (the core hub and the edge leaves). ``agent`` runs on an edge node and ships results
through its outbox; ``gateway`` applies them on the core; ``protocol`` is what travels between
them, ``delta`` what a discovery ships; ``node`` is join / status / leave, ``hub`` the core's
hub. Nothing here imports ``actors``, ``serve`` or Ray (see docs/edge.md).
"""

from __future__ import annotations

from datawave.datasource.edge.agent import EdgeAgent
from datawave.datasource.edge.cache import DATABASES, CacheDb, EdgeCache, OutboxEntry
from datawave.datasource.edge.gateway import EdgeGateway
from datawave.datasource.edge.natsproc import (
    HubConfig,
    LeafConfig,
    NatsServer,
    ServerState,
    TlsFiles,
    edge_inbox_prefix,
    edge_permissions,
    edge_subject_prefix,
    find_nats_server,
    free_port,
    render_config,
)
from datawave.datasource.edge.protocol import BadMessage
from datawave.datasource.edge.sources import SourceBook
from datawave.datasource.edge.tokens import (
    EdgeCredentials,
    Enrollment,
    JoinToken,
    TokenIssuer,
    edge_user,
    parse_unverified,
    validate_site,
)

__all__ = [
    "DATABASES",
    "BadMessage",
    "CacheDb",
    "EdgeAgent",
    "EdgeCache",
    "EdgeCredentials",
    "EdgeGateway",
    "Enrollment",
    "HubConfig",
    "JoinToken",
    "LeafConfig",
    "NatsServer",
    "OutboxEntry",
    "ServerState",
    "SourceBook",
    "TlsFiles",
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
