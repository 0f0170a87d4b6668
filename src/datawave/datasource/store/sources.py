"""Registered sources: create, read, list, update (optimistic version), soft delete, purge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgpack
from sqlalchemy import Row, and_, delete, false, or_, select, update
from sqlalchemy.exc import IntegrityError

from datawave.datasource.errors import Conflict, NotFound, StoreError
from datawave.datasource.models import SourceRecord
from datawave.datasource.security.edgekeys import is_edge_sealed
from datawave.datasource.security.policy import Scope
from datawave.datasource.store.base import StoreBase, aware, utcnow
from datawave.datasource.store.edges import seal_for_edge
from datawave.datasource.store.tables import sources

__all__ = ["SourcesMixin"]

_PUBLIC = [c for c in sources.c if c.name != "secrets"]


def _within(scope: Scope) -> Any:
    """SQL for "covered by ``scope``" (not for ``everything``: callers skip the filter)."""
    alts: list[Any] = []
    if scope.sources:
        alts += [sources.c.id.in_(sorted(scope.sources)), sources.c.name.in_(sorted(scope.sources))]
    for c in sorted(scope.collections):
        pattern = c.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
        alts += [sources.c.collection == c, sources.c.collection.like(pattern, escape="\\")]
    return or_(*alts) if alts else false()


def _record(row: Row[Any]) -> SourceRecord:
    m = row._mapping
    return SourceRecord(
        id=m["id"],
        name=m["name"],
        type=m["type"],
        config=m["config"] or {},
        secret_fields=tuple(m["secret_fields"] or ()),
        labels=m["labels"] or {},
        collection=m["collection"],
        edge_site=m["edge_site"],
        description=m["description"],
        owner_shard=m["owner_shard"],
        version=m["version"],
        health=m["health"],
        created_at=aware(m["created_at"]),
        updated_at=aware(m["updated_at"]),
        deleted_at=aware(m["deleted_at"]),
        last_discovered_at=aware(m["last_discovered_at"]),
    )


class SourcesMixin(StoreBase):
    def _seal(
        self, source_id: str, secrets: Mapping[str, str], *, edge_site: str | None = None
    ) -> bytes | None:
        if not secrets:
            return None
        if edge_site is not None:  # sealed to the edge's key: the core cannot open it again
            return seal_for_edge(self, edge_site, source_id, secrets)
        if self.sealer is None:
            raise StoreError("this store has no sealer: refusing to store secrets in clear")
        return self.sealer.seal(msgpack.packb(dict(secrets)), context=source_id.encode())

    def create_source(
        self,
        *,
        id: str,
        name: str,
        type: str,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
        owner_shard: int,
        labels: Mapping[str, str] | None = None,
        collection: str | None = None,
        edge_site: str | None = None,
        description: str | None = None,
    ) -> SourceRecord:
        now = utcnow()
        values = {
            "id": id,
            "name": name,
            "type": type,
            "config": dict(config),
            "secrets": self._seal(id, secrets, edge_site=edge_site),
            "secret_fields": sorted(secrets),
            "labels": dict(labels or {}),
            "collection": collection,
            "edge_site": edge_site,
            "description": description,
            "owner_shard": owner_shard,
            "version": 1,
            "health": "unknown",
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(sources.insert().values(**values))
        except IntegrityError as exc:
            existing = self.find_source(name)
            if existing is not None and existing.id == id:
                return existing  # the same registration replayed: idempotent
            raise Conflict(f"a source named {name!r} already exists", field="name") from exc
        return self.get_source(id)

    def find_source(self, ref: str, *, include_deleted: bool = False) -> SourceRecord | None:
        q = select(*_PUBLIC).where(or_(sources.c.id == ref, sources.c.name == ref))
        if not include_deleted:
            q = q.where(sources.c.deleted_at.is_(None))
        with self.read() as conn:
            rows = conn.execute(q.order_by(sources.c.created_at.desc())).all()
        by_id = [r for r in rows if r.id == ref]
        found = by_id or rows
        return _record(found[0]) if found else None

    def get_source(self, ref: str, *, include_deleted: bool = False) -> SourceRecord:
        rec = self.find_source(ref, include_deleted=include_deleted)
        if rec is None:
            raise NotFound(f"no source {ref!r}", kind="source", ref=ref)
        return rec

    def get_secrets(self, source_id: str) -> dict[str, str]:
        with self.read() as conn:
            blob = conn.execute(select(sources.c.secrets).where(sources.c.id == source_id)).scalar()
        if not blob:
            return {}
        if is_edge_sealed(blob):
            raise StoreError(
                f"the secrets of source {source_id} are sealed to its edge site's key: only "
                "that edge can open them", source_id=source_id,
            )  # fmt: skip
        if self.sealer is None:
            raise StoreError("this store has no sealer: cannot open secrets")
        return dict(msgpack.unpackb(self.sealer.open(blob, context=source_id.encode())))

    def list_sources(
        self,
        *,
        type: str | None = None,
        labels: Mapping[str, str] | None = None,
        collection: str | None = None,
        edge_site: str | None = None,
        health: str | None = None,
        ids: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
        shard: int | None = None,
        include_deleted: bool = False,
        after: str | None = None,
        limit: int | None = None,
        within: Scope | None = None,
    ) -> list[SourceRecord]:
        """Sources ordered by id; ``after`` is the last id of the previous page.

        ``within`` keeps only the sources an access scope covers (its collections and their
        children, its sources by id or name), in the query itself so pages stay full.
        """
        conds: list[Any] = []
        if within is not None and not within.everything:
            conds.append(_within(within))
        if not include_deleted:
            conds.append(sources.c.deleted_at.is_(None))
        if type:
            conds.append(sources.c.type == type)
        if collection:
            conds.append(
                or_(
                    sources.c.collection == collection, sources.c.collection.like(f"{collection}/%")
                )
            )
        if edge_site:
            conds.append(sources.c.edge_site == edge_site)
        if health:
            conds.append(sources.c.health == health)
        if ids is not None:
            conds.append(sources.c.id.in_(list(ids)))
        if names is not None:
            conds.append(sources.c.name.in_(list(names)))
        if shard is not None:
            conds.append(sources.c.owner_shard == shard)
        out: list[SourceRecord] = []
        cursor = after
        page = max(limit or 1000, 100)
        with self.read() as conn:
            while True:
                q = select(*_PUBLIC).where(and_(*conds)) if conds else select(*_PUBLIC)
                if cursor is not None:
                    q = q.where(sources.c.id > cursor)
                rows = conn.execute(q.order_by(sources.c.id).limit(page)).all()
                for row in rows:
                    rec = _record(row)
                    if labels and any(rec.labels.get(k) != v for k, v in labels.items()):
                        continue
                    out.append(rec)
                    if limit is not None and len(out) >= limit:
                        return out
                if len(rows) < page:
                    return out
                cursor = rows[-1].id

    def count_sources(self) -> int:
        from sqlalchemy import func

        with self.read() as conn:
            q = select(func.count()).select_from(sources).where(sources.c.deleted_at.is_(None))
            return int(conn.execute(q).scalar() or 0)

    def update_source(
        self,
        source_id: str,
        *,
        expected_version: int | None = None,
        config: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        **changes: Any,
    ) -> SourceRecord:
        """Apply ``changes``; with ``expected_version`` a concurrent edit is a :class:`Conflict`."""
        allowed = {"name", "labels", "collection", "edge_site", "description", "owner_shard"}
        unknown = set(changes) - allowed
        if unknown:
            raise StoreError(f"cannot update fields {sorted(unknown)}")
        values: dict[str, Any] = {k: v for k, v in changes.items()}
        if config is not None:
            values["config"] = dict(config)
        if secrets is not None:
            site = changes.get("edge_site") if "edge_site" in changes else None
            if "edge_site" not in changes:  # secrets of an edge source are sealed to its edge
                site = self.get_source(source_id).edge_site
            values["secrets"] = self._seal(source_id, secrets, edge_site=site)
            values["secret_fields"] = sorted(secrets)
        values["updated_at"] = utcnow()
        values["version"] = sources.c.version + 1
        q = update(sources).where(sources.c.id == source_id, sources.c.deleted_at.is_(None))
        if expected_version is not None:
            q = q.where(sources.c.version == expected_version)
        try:
            with self.engine.begin() as conn:
                n = conn.execute(q.values(**values)).rowcount
        except IntegrityError as exc:
            raise Conflict(
                f"a source named {changes.get('name')!r} already exists", field="name"
            ) from exc
        if n == 0:
            current = self.get_source(source_id)  # raises NotFound
            raise Conflict(
                f"source {source_id} is at version {current.version}, not {expected_version}",
                field="version",
                current_version=current.version,
            )
        return self.get_source(source_id)

    def set_health(self, source_id: str, state: str) -> None:
        with self.begin() as conn:
            conn.execute(update(sources).where(sources.c.id == source_id).values(health=state))

    def mark_discovered(self, source_id: str, when: datetime) -> None:
        with self.begin() as conn:
            conn.execute(
                update(sources).where(sources.c.id == source_id).values(last_discovered_at=when)
            )

    def delete_source(self, source_id: str, *, purge: bool = False) -> None:
        """Soft delete (keeps metadata, frees the name) or purge (removes everything)."""
        rec = self.get_source(source_id, include_deleted=purge)
        with self.begin() as conn:
            if purge:
                from datawave.datasource.store.tables import (
                    databases,
                    discovery_runs,
                    drift_events,
                    schemas,
                    snapshots,
                    tables,
                    test_results,
                )

                for t in (  # a table's columns live on its row (tables.column_doc)
                    tables,
                    schemas,
                    databases,
                    drift_events,
                    snapshots,
                    discovery_runs,
                    test_results,
                ):
                    conn.execute(delete(t).where(t.c.source_id == rec.id))
                conn.execute(delete(sources).where(sources.c.id == rec.id))
            else:
                conn.execute(
                    update(sources)
                    .where(sources.c.id == rec.id)
                    .values(deleted_at=utcnow(), version=sources.c.version + 1, secrets=None)
                )
