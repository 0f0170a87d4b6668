"""Sources: register, list, read, patch (ETag / If-Match), delete, test, discover, drift, runs.

Every route asks :class:`~datawave.datasource.serve.access.Access`: a source outside the
caller's scope is not found, one it may read but not change is forbidden, and the listing only
holds what the caller may read.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from starlette.responses import JSONResponse

from datawave.datasource.engines import shard_for
from datawave.datasource.errors import Conflict, NotFound, ValidationFailed
from datawave.datasource.models import (
    DriftEvent,
    JobView,
    RunSummary,
    SourceRecord,
    SourceSpec,
    TestReport,
)
from datawave.datasource.serve.access import Caller
from datawave.datasource.serve.auditing import note
from datawave.datasource.serve.context import ApiContext, Cursor, IdempotencyCache, get_ctx
from datawave.datasource.serve.problems import ApiError
from datawave.datasource.serve.routes.common import (
    PROBLEMS,
    Limit,
    etag,
    json_response,
    parse_labels,
)
from datawave.datasource.serve.schemas import Page, SourcePatch

__all__ = ["router"]

router = APIRouter(tags=["sources"], responses=PROBLEMS)
Ctx = Annotated[ApiContext, Depends(get_ctx)]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


def _json(rec: SourceRecord, status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(rec.model_dump(mode="json"), status_code=status,
                        headers={"ETag": etag(rec), **headers})  # fmt: skip


@router.post("/sources", status_code=201, response_model=SourceRecord)
async def create_source(
    spec: SourceSpec, request: Request, ctx: Ctx, access: Caller, key: IdemKey = None
) -> Response:
    """Register a source. The connector validates ``config``; nothing is stored when invalid."""
    note(request, target=spec.name, type=spec.type, fields=sorted(spec.config))
    access.check_new("sources:write", collection=spec.collection, name=spec.name)

    async def produce() -> Response:
        scope = f"{access.principal.id}\x1fsource"
        sid = IdempotencyCache.derive_id(key, scope) or str(uuid.uuid4())
        shard = shard_for(sid, ctx.backend.shards)
        try:
            rec = await ctx.backend.call_owner(shard, "register", spec.model_dump(), sid)
        except NotFound as exc:
            if exc.context.get("field") != "type":
                raise
            raise ValidationFailed(
                exc.message,
                errors=[{"field": "type", "message": exc.message, "type": "unknown_connector"}],
            ) from None
        note(request, source_id=rec.id)
        return _json(rec, 201, Location=f"/v1/sources/{rec.id}")

    return await ctx.idempotency.run(request, key, produce)


@router.get("/sources", response_model=Page[SourceRecord])
async def list_sources(
    ctx: Ctx,
    access: Caller,
    type: str | None = None,
    label: Annotated[list[str] | None, Query(description="key=value; repeatable")] = None,
    collection: str | None = None,
    edge_site: str | None = None,
    health: str | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Page[SourceRecord]:
    after = Cursor.decode("sources", cursor)
    if after is not None and not isinstance(after, str):
        raise ApiError("invalid_cursor", "cursor is not valid for this listing", field="cursor")
    access.require_anywhere("sources:read")
    recs = await ctx.run(
        ctx.store.list_sources, type=type, labels=parse_labels(label), collection=collection,
        edge_site=edge_site, health=health, after=after, limit=limit + 1,
        within=access.scope("sources:read"),
    )  # fmt: skip
    more = len(recs) > limit
    recs = recs[:limit]
    nxt = Cursor.encode("sources", recs[-1].id) if more else None
    return json_response(Page[SourceRecord](items=recs, next_cursor=nxt))  # type: ignore[return-value]


@router.get("/sources/{ref}", response_model=SourceRecord)
async def get_source(ref: str, access: Caller) -> Response:
    """A source by id or name; the ``ETag`` is its ``version``."""
    return _json(await access.source(ref))


def _if_match(value: str | None) -> int | None:
    if value is None or value.strip() == "*":
        return None
    tag = value.split(",")[0].strip().removeprefix("W/").strip('"')
    try:
        return int(tag)
    except ValueError:
        return -1  # matches no version: 412


@router.patch("/sources/{ref}", response_model=SourceRecord)
async def update_source(
    ref: str,
    patch: SourcePatch,
    request: Request,
    ctx: Ctx,
    access: Caller,
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> Response:
    """Merge-patch a source; with ``If-Match`` a stale version is rejected with 412."""
    rec = await access.source(ref, "sources:write")
    changes = patch.model_dump(exclude_unset=True)
    note(request, fields=sorted(k for k in changes if k != "config")
         + sorted(f"config.{k}" for k in changes.get("config") or {}))  # fmt: skip
    if "collection" in changes and changes["collection"] != rec.collection:
        access.check_new("sources:write", collection=changes["collection"],
                         name=changes.get("name") or rec.name)  # fmt: skip
    nulls = [k for k in ("name", "labels") if k in changes and changes[k] is None]
    if nulls:
        raise ValidationFailed(
            "fields cannot be null: " + ", ".join(nulls),
            errors=[
                {"field": k, "message": "may not be null", "type": "none_forbidden"} for k in nulls
            ],
        )
    expected = _if_match(if_match)
    if expected is not None and expected != rec.version:
        raise ApiError("precondition_failed", f"source is at version {rec.version}",
                       current_version=rec.version)  # fmt: skip
    if not changes:
        return _json(rec)
    try:
        new = await ctx.backend.call_owner(rec.owner_shard, "update", rec.id, changes, expected)
    except Conflict as exc:
        if exc.context.get("field") == "version":
            raise ApiError("precondition_failed", exc.message, **exc.context) from None
        raise
    return _json(new)


@router.delete("/sources/{ref}", status_code=204)
async def delete_source(ref: str, ctx: Ctx, access: Caller, purge: bool = False) -> Response:
    """Soft delete (metadata kept, name freed); ``?purge=true`` removes everything."""
    rec = await access.source(ref, "sources:write", include_deleted=purge)
    await ctx.backend.call_owner(rec.owner_shard, "remove", rec.id, purge)
    return Response(status_code=204)


@router.post("/sources/{ref}/test", response_model=TestReport)
async def test_source(
    ref: str, request: Request, ctx: Ctx, access: Caller, key: IdemKey = None
) -> Response:
    """Run the connection test on the owning shard; returns each named step's result."""

    async def produce() -> Response:
        rec = await access.source(ref, "sources:test")
        rep = await ctx.backend.call_owner(rec.owner_shard, "test", rec.id)
        return JSONResponse(rep.model_dump(mode="json"))

    return await ctx.idempotency.run(request, key, produce)


@router.post("/sources/{ref}/discover", status_code=202, response_model=JobView)
async def discover_source(
    ref: str, request: Request, ctx: Ctx, access: Caller, key: IdemKey = None
) -> Response:
    """Start a discovery of one source as a job; poll ``/v1/jobs/{id}``."""

    async def produce() -> Response:
        rec = await access.source(ref, "sources:discover")
        scope = f"{access.principal.id}\x1fjob"
        job_id = IdempotencyCache.derive_id(key, scope) or str(uuid.uuid4())
        view = await ctx.backend.call_jobs("submit", {"ids": [rec.id]}, job_id)
        note(request, job_id=view.id)
        return JSONResponse(view.model_dump(mode="json"), status_code=202,
                            headers={"Location": f"/v1/jobs/{view.id}"})  # fmt: skip

    return await ctx.idempotency.run(request, key, produce)


@router.get("/sources/{ref}/drift", response_model=Page[DriftEvent])
async def list_drift(
    ref: str,
    ctx: Ctx,
    access: Caller,
    breaking: bool | None = None,
    run_id: str | None = None,
    limit: Limit = 500,
    cursor: str | None = None,
) -> Page[DriftEvent]:
    """Drift events of a source, oldest first; ``?breaking=true`` keeps the breaking ones."""
    after = Cursor.decode("drift", cursor)
    if after is not None and not isinstance(after, int):
        raise ApiError("invalid_cursor", "cursor is not valid for this listing", field="cursor")
    rec = await access.source(ref, include_deleted=True)
    events = await ctx.run(ctx.store.list_drift, rec.id, breaking=breaking, run_id=run_id,
                           after_id=after, limit=limit + 1)  # fmt: skip
    more = len(events) > limit
    events = events[:limit]
    return Page(items=events, next_cursor=Cursor.encode("drift", events[-1].id) if more else None)


@router.get("/sources/{ref}/runs", response_model=list[RunSummary])
async def list_runs(ref: str, ctx: Ctx, access: Caller, limit: Limit = 20) -> list[RunSummary]:
    rec = await access.source(ref, include_deleted=True)
    runs: list[RunSummary] = await ctx.run(ctx.store.list_runs, rec.id, limit=limit)
    return runs


@router.get("/sources/{ref}/stats")
async def source_stats(ref: str, ctx: Ctx, access: Caller) -> dict[str, int]:
    """How many databases, schemas, tables and columns the store holds for a source."""
    rec = await access.source(ref, include_deleted=True)
    counts: dict[str, int] = await ctx.run(ctx.store.asset_counts, rec.id)
    return counts
