"""The edge fleet registry: one row per edge node, and the commands waiting for each site.

``applied_seq`` is the sync high-water mark of a node: every outbox record with a sequence
number at or below it has been applied, so a redelivered batch is skipped record by record.
It is kept per outbox ``epoch`` (a node whose cache was wiped starts a new epoch and counts
from 1 again), so neither a new epoch's records nor an old epoch's stray batch are mistaken
for each other.

Commands are stored core-side until the edge acknowledges them, so a command for an offline
edge waits here and is resent when the edge's next heartbeat shows it back.

``edge_keys`` holds each site's sealing public key (sent at join). Secrets of a source owned by
a site are sealed to it (:mod:`datawave.datasource.security.edgekeys`) instead of with the
core's KEK, so the core cannot read them after hand-over; :meth:`EdgesMixin.seal_for_edge` is
what :class:`~datawave.datasource.store.sources.SourcesMixin` calls for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgpack
from pydantic import BaseModel, ConfigDict
from sqlalchemy import and_, bindparam, delete, insert, select, update

from datawave.datasource.errors import Conflict
from datawave.datasource.security.edgekeys import is_edge_sealed, key_id, seal_to_edge
from datawave.datasource.store.base import StoreBase, aware, utcnow
from datawave.datasource.store.tables import edge_commands, edge_epochs, edge_keys, edge_nodes
from datawave.datasource.store.tables import sources as sources_table

__all__ = ["EdgeCommand", "EdgeKey", "EdgeNode", "EdgesMixin", "edge_key", "seal_for_edge"]


class EdgeNode(BaseModel):
    """One row of the fleet view (``datawave edge list``)."""

    model_config = ConfigDict(extra="forbid")

    node: str
    site: str
    epoch: str | None = None
    applied_seq: int = 0
    version: str | None = None
    link_state: str = "unknown"
    load: float | None = None
    queue_depth: int | None = None
    lag_s: float | None = None
    sources_digest: str | None = None
    joined_at: datetime
    last_heartbeat_at: datetime | None = None
    last_sync_at: datetime | None = None
    left_at: datetime | None = None


class EdgeCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    site: str
    kind: str
    args: dict[str, Any]
    status: str
    attempts: int = 0
    created_at: datetime
    sent_at: datetime | None = None
    done_at: datetime | None = None
    result: dict[str, Any] | None = None


class EdgeKey(BaseModel):
    """A site's sealing public key (X25519, raw 32 bytes) and its id."""

    model_config = ConfigDict(extra="forbid")

    site: str
    key_id: str
    public_key: bytes
    created_at: datetime


_TS_FIELDS = ("joined_at", "last_heartbeat_at", "last_sync_at", "left_at", "created_at",
              "sent_at", "done_at")  # fmt: skip


def _row(model: type[BaseModel], row: Any) -> Any:
    m = dict(row._mapping)
    for k in _TS_FIELDS:
        if k in m:
            m[k] = aware(m[k])
    return model.model_validate(m)


def edge_key(store: StoreBase, site: str) -> EdgeKey | None:
    """``site``'s sealing key, or None before it joined."""
    with store.read() as conn:
        row = conn.execute(select(edge_keys).where(edge_keys.c.site == site)).first()
    if row is None:
        return None
    m = dict(row._mapping)
    m["created_at"] = aware(m["created_at"])
    m["public_key"] = bytes(m["public_key"])
    return EdgeKey.model_validate(m)


def seal_for_edge(store: StoreBase, site: str, source_id: str, secrets: Mapping[str, str]) -> bytes:
    """Seal a source's secrets to its edge site's key; the core cannot open the result.

    Raises:
        Conflict: The site has not joined, so there is no key to seal to.
    """
    key = edge_key(store, site)
    if key is None:
        raise Conflict(
            f"edge site {site} has not joined: no sealing key (create a join token with "
            "`datawave edge token create`, join the edge, then register its sources)",
            field="edge_site", site=site,
        )  # fmt: skip
    return seal_to_edge(key.public_key, msgpack.packb(dict(secrets)), context=source_id.encode())


class EdgesMixin(StoreBase):
    # -- sealing keys -------------------------------------------------------------------------
    def put_edge_key(self, site: str, public_key: bytes, *, at: datetime | None = None) -> EdgeKey:
        """Record ``site``'s sealing key (at join); a re-join replaces the old one.

        Raises:
            ConfigError: Not a 32-byte X25519 public key.
        """
        kid = key_id(public_key)
        values = {"key_id": kid, "public_key": bytes(public_key), "created_at": at or utcnow()}
        with self.begin() as conn:
            n = conn.execute(
                update(edge_keys).where(edge_keys.c.site == site).values(**values)
            ).rowcount
            if not n:
                conn.execute(insert(edge_keys).values(site=site, **values))
        key = self.get_edge_key(site)
        assert key is not None
        return key

    def get_edge_key(self, site: str) -> EdgeKey | None:
        return edge_key(self, site)

    def delete_edge_key(self, site: str) -> bool:
        """Forget a site's key (revocation): nothing new can be sealed to it."""
        with self.begin() as conn:
            return bool(conn.execute(delete(edge_keys).where(edge_keys.c.site == site)).rowcount)

    def seal_for_edge(self, site: str, source_id: str, secrets: Mapping[str, str]) -> bytes:
        """Seal a source's secrets to its edge site's key (see :func:`seal_for_edge`)."""
        return seal_for_edge(self, site, source_id, secrets)

    def get_sealed_secrets(self, source_id: str) -> bytes | None:
        """The stored secrets blob of a source as is: what travels to its edge."""
        with self.read() as conn:
            blob = conn.execute(
                select(sources_table.c.secrets).where(sources_table.c.id == source_id)
            ).scalar()
        return bytes(blob) if blob else None

    def reseal_site_secrets(self, site: str) -> int:
        """Move KEK-sealed secrets of ``site``'s sources to the site's key (a store from before
        edge sealing, or a source whose site joined later); returns how many moved.

        Each moved source's version is bumped, so the edge is sent the new definition.
        """
        if self.sealer is None or self.get_edge_key(site) is None:
            return 0
        q = select(sources_table.c.id, sources_table.c.secrets).where(
            sources_table.c.edge_site == site, sources_table.c.deleted_at.is_(None)
        )
        with self.read() as conn:
            rows = [(r.id, bytes(r.secrets)) for r in conn.execute(q) if r.secrets]
        moved = 0
        for sid, blob in rows:
            if is_edge_sealed(blob):
                continue
            secrets = msgpack.unpackb(self.sealer.open(blob, context=sid.encode()))
            sealed = self.seal_for_edge(site, sid, secrets)
            with self.begin() as conn:
                moved += conn.execute(
                    update(sources_table)
                    .where(sources_table.c.id == sid, sources_table.c.secrets == blob)
                    .values(secrets=sealed, version=sources_table.c.version + 1,
                            updated_at=utcnow())
                ).rowcount  # fmt: skip
        return moved

    # -- nodes --------------------------------------------------------------------------------
    def register_edge_node(self, node: str, site: str, *, at: datetime | None = None) -> EdgeNode:
        """Add a node to the fleet, or bring back one that left; idempotent."""
        now = at or utcnow()
        with self.begin() as conn:
            found = conn.execute(select(edge_nodes.c.node).where(edge_nodes.c.node == node)).first()
            if found is None:
                conn.execute(
                    insert(edge_nodes).values(
                        node=node, site=site, applied_seq=0, link_state="up", joined_at=now
                    )
                )
            else:
                conn.execute(
                    update(edge_nodes)
                    .where(edge_nodes.c.node == node)
                    .values(site=site, left_at=None, link_state="up")
                )
        node_row = self.get_edge_node(node)
        assert node_row is not None
        return node_row

    def get_edge_node(self, node: str) -> EdgeNode | None:
        with self.read() as conn:
            row = conn.execute(select(edge_nodes).where(edge_nodes.c.node == node)).first()
        return None if row is None else _row(EdgeNode, row)

    def list_edge_nodes(
        self, *, site: str | None = None, include_left: bool = False
    ) -> list[EdgeNode]:
        q = select(edge_nodes)
        if site is not None:
            q = q.where(edge_nodes.c.site == site)
        if not include_left:
            q = q.where(edge_nodes.c.left_at.is_(None))
        with self.read() as conn:
            rows = conn.execute(q.order_by(edge_nodes.c.site, edge_nodes.c.node)).all()
        return [_row(EdgeNode, r) for r in rows]

    def record_edge_heartbeat(self, node: str, values: Mapping[str, Any]) -> bool:
        """Update what a heartbeat reports; returns False for a node that is not registered."""
        allowed = {"version", "link_state", "load", "queue_depth", "lag_s", "sources_digest"}
        vals = {k: v for k, v in values.items() if k in allowed}
        vals["last_heartbeat_at"] = values.get("at") or utcnow()
        with self.begin() as conn:
            n = conn.execute(
                update(edge_nodes)
                .where(edge_nodes.c.node == node, edge_nodes.c.left_at.is_(None))
                .values(**vals)
            ).rowcount
        return bool(n)

    def record_edge_heartbeats(self, beats: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
        """Apply many heartbeats in one transaction; returns the nodes that were not ``up``."""
        allowed = ("version", "link_state", "load", "queue_depth", "lag_s", "sources_digest")
        if not beats:
            return []
        nodes = [n for n, _ in beats]
        with self.begin() as conn:
            before = dict(
                conn.execute(
                    select(edge_nodes.c.node, edge_nodes.c.link_state).where(
                        edge_nodes.c.node.in_(nodes), edge_nodes.c.left_at.is_(None)
                    )
                ).all()
            )
            rows = [
                {"_node": n, **{f"v_{k}": v.get(k) for k in allowed},
                 "v_last_heartbeat_at": v.get("at") or utcnow()}
                for n, v in beats if n in before
            ]  # fmt: skip
            if rows:
                cols = [*allowed, "last_heartbeat_at"]
                q = (
                    update(edge_nodes)
                    .where(edge_nodes.c.node == bindparam("_node"))
                    .values({c: bindparam(f"v_{c}") for c in cols})
                )
                conn.execute(q, rows)
        return [n for n, state in before.items() if state != "up"]

    def mark_edges_offline(self, heard_before: datetime) -> list[str]:
        """Nodes silent since ``heard_before`` become ``offline``; returns the ones that changed."""
        cond = and_(
            edge_nodes.c.left_at.is_(None),
            edge_nodes.c.link_state != "offline",
            edge_nodes.c.last_heartbeat_at < heard_before,
        )
        with self.begin() as conn:
            nodes = list(conn.execute(select(edge_nodes.c.node).where(cond)).scalars())
            if nodes:
                conn.execute(
                    update(edge_nodes)
                    .where(edge_nodes.c.node.in_(nodes))
                    .values(link_state="offline")
                )
        return nodes

    def edge_sync_position(self, node: str, epoch: str) -> int:
        """The highest applied sequence number of ``node``'s outbox ``epoch`` (0 if none)."""
        with self.read() as conn:
            seq = conn.execute(
                select(edge_epochs.c.applied_seq).where(
                    edge_epochs.c.node == node, edge_epochs.c.epoch == epoch
                )
            ).scalar()
        return int(seq or 0)

    def advance_edge_seq(
        self, node: str, epoch: str, seq: int, *, at: datetime | None = None
    ) -> None:
        """Record that everything up to ``seq`` of ``epoch`` is applied (never moves back)."""
        now = at or utcnow()
        key = and_(edge_epochs.c.node == node, edge_epochs.c.epoch == epoch)
        with self.begin() as conn:
            old = conn.execute(select(edge_epochs.c.applied_seq).where(key)).scalar()
            if old is None:
                conn.execute(insert(edge_epochs).values(node=node, epoch=epoch, applied_seq=seq))
            elif seq > old:
                conn.execute(update(edge_epochs).where(key).values(applied_seq=seq))
            new = max(seq, int(old or 0))
            conn.execute(
                update(edge_nodes)
                .where(edge_nodes.c.node == node)
                .values(epoch=epoch, applied_seq=new, last_sync_at=now)
            )

    def mark_edge_left(self, site: str) -> int:
        with self.begin() as conn:
            return int(
                conn.execute(
                    update(edge_nodes)
                    .where(edge_nodes.c.site == site, edge_nodes.c.left_at.is_(None))
                    .values(left_at=utcnow(), link_state="left")
                ).rowcount
            )

    # -- commands -----------------------------------------------------------------------------
    def add_edge_command(
        self, id: str, site: str, kind: str, args: Mapping[str, Any]
    ) -> EdgeCommand:
        with self.begin() as conn:
            exists = conn.execute(
                select(edge_commands.c.id).where(edge_commands.c.id == id)
            ).first()
            if exists is None:  # the same command queued twice is one command
                conn.execute(
                    insert(edge_commands).values(
                        id=id, site=site, kind=kind, args=dict(args), status="pending",
                        attempts=0, created_at=utcnow(),
                    )
                )  # fmt: skip
        cmd = self.get_edge_command(id)
        assert cmd is not None
        return cmd

    def get_edge_command(self, id: str) -> EdgeCommand | None:
        with self.read() as conn:
            row = conn.execute(select(edge_commands).where(edge_commands.c.id == id)).first()
        return None if row is None else _row(EdgeCommand, row)

    def pending_edge_commands(self, site: str, *, limit: int = 100) -> list[EdgeCommand]:
        q = (
            select(edge_commands)
            .where(edge_commands.c.site == site, edge_commands.c.status == "pending")
            .order_by(edge_commands.c.created_at)
            .limit(limit)
        )
        with self.read() as conn:
            return [_row(EdgeCommand, r) for r in conn.execute(q).all()]

    def sites_with_pending_commands(self) -> set[str]:
        q = select(edge_commands.c.site).where(edge_commands.c.status == "pending").distinct()
        with self.read() as conn:
            return set(conn.execute(q).scalars())

    def mark_edge_command_sent(self, id: str) -> None:
        with self.begin() as conn:
            conn.execute(
                update(edge_commands)
                .where(edge_commands.c.id == id)
                .values(attempts=edge_commands.c.attempts + 1, sent_at=utcnow())
            )

    def finish_edge_command(self, id: str, status: str, result: Mapping[str, Any] | None) -> None:
        with self.begin() as conn:
            conn.execute(
                update(edge_commands)
                .where(edge_commands.c.id == id, edge_commands.c.status == "pending")
                .values(status=status, done_at=utcnow(), result=dict(result or {}))
            )
