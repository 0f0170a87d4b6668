"""Bulk discoveries and jobs: submit (202), progress, cancel, and progress as server-sent events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.responses import JSONResponse, StreamingResponse

from datawave.datasource.errors import NotFound
from datawave.datasource.models import JobStatus, JobView, SourceRecord
from datawave.datasource.serve.access import Access, Caller
from datawave.datasource.serve.auditing import note
from datawave.datasource.serve.context import ApiContext, IdempotencyCache, get_ctx
from datawave.datasource.serve.routes.common import PROBLEMS
from datawave.datasource.serve.routes.sources import IdemKey
from datawave.datasource.serve.schemas import DiscoveryRequest

__all__ = ["router"]

router = APIRouter(tags=["jobs"], responses=PROBLEMS)
Ctx = Annotated[ApiContext, Depends(get_ctx)]

_TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


def _job_json(view: JobView, status: int = 200) -> JSONResponse:
    body = {**view.model_dump(mode="json"), "progress": view.progress}
    return JSONResponse(body, status_code=status, headers={"Location": f"/v1/jobs/{view.id}"})


@router.post("/discoveries", status_code=202, response_model=JobView)
async def discover_many(
    body: DiscoveryRequest, request: Request, ctx: Ctx, access: Caller, key: IdemKey = None
) -> Response:
    """Discover many sources: a selector, or a list of names/ids. Returns the job.

    A caller scoped to collections or sources gets a job over the selected sources within its
    ``sources:discover`` scope only; naming a source outside it is answered as unknown."""
    access.require_anywhere("sources:discover")

    async def produce() -> Response:
        if body.sources is not None:
            refs = list(dict.fromkeys(body.sources))
            by_id = await ctx.run(ctx.store.list_sources, ids=refs)
            rest = [r for r in refs if r not in {s.id for s in by_id}]
            by_name = await ctx.run(ctx.store.list_sources, names=rest) if rest else []
            found = by_id + by_name
            hidden = {s.id for s in found if not access.covers(s)}
            missing = sorted(set(rest) - {s.name for s in by_name})
            missing += sorted(
                r for s in found if s.id in hidden for r in (s.id, s.name) if r in refs
            )
            if missing:
                raise NotFound(
                    f"unknown sources: {missing[:20]}", kind="source", refs=missing[:100]
                )
            _require_discover(access, found)
            selector: dict[str, Any] = {"ids": sorted({s.id for s in found})}
        else:
            assert body.selector is not None
            selector = body.selector.model_dump(exclude_none=True)
            if not access.scope("sources:discover").everything:
                selector = await _scoped_selector(ctx, access, selector)
        scope = f"{access.principal.id}\x1fjob"
        job_id = IdempotencyCache.derive_id(key, scope) or str(uuid.uuid4())
        view = await ctx.backend.call_jobs("submit", selector, job_id)
        note(request, target=view.id, sources=view.total)
        return _job_json(view, 202)

    return await ctx.idempotency.run(request, key, produce)


def _require_discover(access: Access, recs: list[SourceRecord]) -> None:
    for rec in recs:
        access.check(rec, "sources:discover", ref=rec.name)


async def _scoped_selector(
    ctx: ApiContext, access: Access, selector: dict[str, Any]
) -> dict[str, Any]:
    """The selector resolved to ids within the caller's scope (sources it may see but not
    discover are refused, ones it may not see are not there)."""
    criteria = ("ids", "names", "type", "labels", "collection", "edge_site")
    if not (selector.get("all") or any(selector.get(k) for k in criteria)):
        return selector  # the job manager refuses an empty selector with its own message
    recs = await ctx.run(
        ctx.store.list_sources, type=selector.get("type"), labels=selector.get("labels") or None,
        collection=selector.get("collection"), edge_site=selector.get("edge_site"),
        ids=selector.get("ids"), names=selector.get("names"), within=access.scope("sources:read"),
    )  # fmt: skip
    for field, attr in (("ids", "id"), ("names", "name")):
        missing = set(selector.get(field) or ()) - {getattr(r, attr) for r in recs}
        if missing:
            raise NotFound(f"unknown sources: {sorted(missing)[:20]}", kind="source")
    if not recs:
        raise NotFound("no source in your scope matches the selector", kind="source")
    if selector.get("ids") or selector.get("names"):
        _require_discover(access, recs)
    else:
        recs = [r for r in recs if access.covers(r, "sources:discover")]
        if not recs:
            raise NotFound("no source you may discover matches the selector", kind="source")
    return {"ids": sorted(r.id for r in recs)}


@router.get("/jobs/{job_id}", response_model=JobView)
async def get_job(job_id: str, ctx: Ctx, access: Caller, items: bool = True) -> Response:
    """Progress, counters and (with ``items``) each source's outcome and error."""
    await access.job(job_id)
    return _job_json(await ctx.backend.call_jobs("get", job_id, items))


@router.post("/jobs/{job_id}/cancel", response_model=JobView)
async def cancel_job(job_id: str, ctx: Ctx, access: Caller) -> Response:
    await access.job(job_id, "sources:discover")
    return _job_json(await ctx.backend.call_jobs("cancel", job_id))


def _sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


@router.get(
    "/jobs/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}},
    response_class=StreamingResponse,
)
async def job_events(job_id: str, request: Request, ctx: Ctx, access: Caller) -> StreamingResponse:
    """``progress`` whenever the counters move, the job's discovery events as they happen,
    and a final ``done`` with every item; then the stream ends."""
    await access.job(job_id)
    first: JobView = await ctx.backend.call_jobs("get", job_id, False)  # 404 before streaming
    sub = ctx.broadcaster.subscribe(job_id=job_id, maxsize=1024)

    async def stream() -> AsyncIterator[bytes]:
        last: tuple[Any, ...] = ()
        view = first
        try:
            yield b"retry: 2000\n\n"
            while True:
                mark = (view.status, view.done, view.failed)
                if mark != last:
                    last = mark
                    yield _sse(
                        "progress", {**view.model_dump(mode="json"), "progress": view.progress}
                    )
                if view.status in _TERMINAL:
                    break
                deadline = asyncio.get_running_loop().time() + 0.5
                while (left := deadline - asyncio.get_running_loop().time()) > 0:
                    try:
                        ev = await asyncio.wait_for(sub.get(), left)
                    except TimeoutError:
                        break
                    if ev is None:  # fell behind: progress polling still tells the truth
                        break
                    yield _sse(str(ev.get("type", "event")), ev, ev.get("seq"))
                if await request.is_disconnected():
                    return
                view = await ctx.backend.call_jobs("get", job_id, False)
            final: JobView = await ctx.backend.call_jobs("get", job_id, True)
            yield _sse("done", {**final.model_dump(mode="json"), "progress": final.progress})
        finally:
            ctx.broadcaster.unsubscribe(sub)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
