"""Authorization for every route and protocol, in one place.

Routes take an :class:`Access` (the ``Caller`` dependency): the authenticated principal plus the
one :class:`~datawave.datasource.security.Policy` of the app. The rules:

- a route on one source resolves it (id or name); a source outside the caller's
  ``sources:read`` scope is *not found* (404, the same answer as a missing one), and one it may
  read but not change is *forbidden* (403);
- listings (sources, search, GraphQL, alerts, report, audit, events) are filtered by
  :meth:`Access.scope`, pushed into the store query where there is one, so pages stay full;
- global-only powers (API keys, edges) need a grant over the whole installation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from datawave.datasource.errors import Forbidden, NotFound, Unauthenticated
from datawave.datasource.models import JobView, SourceRecord
from datawave.datasource.security.policy import Policy, Scope
from datawave.datasource.security.principal import Principal
from datawave.datasource.serve.auditing import note

if TYPE_CHECKING:
    from datawave.datasource.serve.context import ApiContext

__all__ = ["Access", "Caller", "SourceGate", "get_access", "principal_of"]


def principal_of(conn: HTTPConnection) -> Principal:
    principal = (conn.scope.get("state") or {}).get("principal")
    if not isinstance(principal, Principal):  # only if AuthGuard is missing: default deny
        raise Unauthenticated("no credential", reason="missing")
    return principal


class Access:
    """What one caller may do, asked by the routes."""

    def __init__(self, ctx: ApiContext, principal: Principal, conn: HTTPConnection | None = None):
        self.ctx = ctx
        self.policy: Policy = ctx.policy
        self.principal = principal
        self.conn = conn
        self._scopes: dict[str, Scope] = {}

    # -- decisions -------------------------------------------------------------------------
    def scope(self, permission: str) -> Scope:
        if permission not in self._scopes:
            self._scopes[permission] = self.policy.scope(self.principal, permission)
        return self._scopes[permission]

    def covers(self, rec: SourceRecord, permission: str = "sources:read") -> bool:
        return self.scope(permission).covers(
            collection=rec.collection, source_id=rec.id, source_name=rec.name
        )

    def require_anywhere(self, permission: str) -> None:
        """403 unless the caller holds ``permission`` somewhere (the route then filters)."""
        if self.scope(permission).empty:
            raise Forbidden(f"{self.principal.label} lacks {permission}", permission=permission)

    def require_global(self, permission: str) -> None:
        """403 unless the caller holds ``permission`` over the whole installation."""
        self.policy.require(self.principal, permission)

    def check(self, rec: SourceRecord, permission: str = "sources:read", *, ref: str) -> None:
        """404 when the caller may not even see ``rec``, 403 when it may not do ``permission``
        (or may read no source at all: then there is nothing to hide)."""
        self.require_anywhere("sources:read")
        if not self.covers(rec, "sources:read"):
            raise NotFound(f"no source {ref!r}", kind="source", ref=ref)
        self._note(source_id=rec.id, target=rec.name)
        if permission != "sources:read" and not self.covers(rec, permission):
            raise Forbidden(
                f"{self.principal.label} lacks {permission} on this source", permission=permission
            )

    def check_new(self, permission: str, *, collection: str | None, name: str) -> None:
        """403 unless the caller may ``permission`` a source named ``name`` in ``collection``."""
        if not self.scope(permission).covers(collection=collection, source_name=name):
            where = f"collection {collection!r}" if collection else "outside any collection"
            raise Forbidden(f"{self.principal.label} lacks {permission} in {where}",
                            permission=permission)  # fmt: skip

    def _note(self, **fields: Any) -> None:
        if self.conn is not None:
            note(self.conn, **fields)

    # -- lookups ---------------------------------------------------------------------------
    async def source(
        self, ref: str, permission: str = "sources:read", *, include_deleted: bool = False
    ) -> SourceRecord:
        """A source by id or name, read from the store, checked for ``permission``."""
        rec: SourceRecord = await self.ctx.run(
            self.ctx.store.get_source, ref, include_deleted=include_deleted
        )
        self.check(rec, permission, ref=ref)
        return rec

    async def source_for_read(self, ref: str) -> SourceRecord:
        """The source whose metadata is read (deleted ones included), via the short cache."""
        rec = self.ctx.sources.get(ref)
        if rec is None:
            rec = await self.ctx.run(self.ctx.store.get_source, ref, include_deleted=True)
            assert rec is not None  # get_source raises NotFound
            self.ctx.sources.put(ref, rec)
        self.check(rec, "sources:read", ref=ref)
        return rec

    async def source_ids(self, permission: str) -> set[str] | None:
        """Ids of every source (deleted ones too) ``permission`` covers; None means all."""
        scope = self.scope(permission)
        if scope.everything:
            return None
        if scope.empty:
            return set()
        recs = await self.ctx.run(self.ctx.store.list_sources, within=scope, include_deleted=True)
        return {r.id for r in recs}

    async def job(self, job_id: str, permission: str = "jobs:read") -> None:
        """404 unless every source of the job is within the caller's ``jobs:read`` scope; 403
        when it may see the job but not ``permission`` (e.g. cancel) all of its sources."""
        self._note(target=job_id)
        self.require_anywhere("jobs:read")
        self.require_anywhere(permission)
        read, want = self.scope("jobs:read"), self.scope(permission)
        if read.everything and want.everything:
            return
        view: JobView = await self.ctx.run(self.ctx.store.get_job, job_id, with_items=True)
        ids = [i.source_id for i in view.items]
        recs = await self.ctx.run(self.ctx.store.list_sources, ids=ids, include_deleted=True)
        by_id = {r.id: r for r in recs}

        def all_covered(scope: Scope) -> bool:
            recs = [by_id.get(i) for i in ids]
            return bool(ids) and all(
                r is not None
                and scope.covers(collection=r.collection, source_id=r.id, source_name=r.name)
                for r in recs
            )

        if not all_covered(read):
            raise NotFound(f"no job {job_id!r}", kind="job")
        if not all_covered(want):
            raise Forbidden(f"{self.principal.label} lacks {permission} on this job's sources",
                            permission=permission)  # fmt: skip


async def get_access(conn: HTTPConnection) -> Access:
    return Access(conn.app.state.ctx, principal_of(conn), conn)


Caller = Annotated[Access, Depends(get_access)]


class SourceGate:
    """Decides, per event, whether a subscriber may see it (events of sources in its scope).

    Verdicts are cached per source id; an unknown id is looked up once on a worker thread, so a
    new source in the subscriber's collection starts to show without a reconnect.
    """

    def __init__(self, access: Access, permission: str = "events:read") -> None:
        self.access = access
        self.scope = access.scope(permission)
        self._verdicts: dict[str, bool] = {}

    @property
    def everything(self) -> bool:
        return self.scope.everything

    def seed(self, recs: Iterable[SourceRecord]) -> None:
        for r in recs:
            self._verdicts[r.id] = self.scope.covers(
                collection=r.collection, source_id=r.id, source_name=r.name
            )

    async def allows(self, event: dict[str, Any]) -> bool:
        if self.scope.everything:
            return True
        sid = event.get("source_id")
        if not sid:
            return False  # fleet-wide events are for global subscribers only
        sid = str(sid)
        verdict = self._verdicts.get(sid)
        if verdict is None:
            ctx = self.access.ctx
            rec = await ctx.run(ctx.store.find_source, sid, include_deleted=True)
            verdict = rec is not None and self.scope.covers(
                collection=rec.collection, source_id=rec.id, source_name=rec.name
            )
            if len(self._verdicts) > 100_000:
                self._verdicts.clear()
            self._verdicts[sid] = verdict
        return verdict
