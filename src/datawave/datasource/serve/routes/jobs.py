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
from datawave.datasource.models import JobStatus, JobView
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
    body: DiscoveryRequest, request: Request, ctx: Ctx, key: IdemKey = None
) -> Response:
    """Discover many sources: a selector, or a list of names/ids. Returns the job."""

    async def produce() -> Response:
        if body.sources is not None:
            refs = list(dict.fromkeys(body.sources))
            by_id = await ctx.run(ctx.store.list_sources, ids=refs)
            rest = [r for r in refs if r not in {s.id for s in by_id}]
            by_name = await ctx.run(ctx.store.list_sources, names=rest) if rest else []
            missing = sorted(set(rest) - {s.name for s in by_name})
            if missing:
                raise NotFound(
                    f"unknown sources: {missing[:20]}", kind="source", refs=missing[:100]
                )
            selector: dict[str, Any] = {"ids": sorted({s.id for s in by_id + by_name})}
        else:
            assert body.selector is not None
            selector = body.selector.model_dump(exclude_none=True)
        job_id = IdempotencyCache.derive_id(key, "job") or str(uuid.uuid4())
        view = await ctx.backend.call_jobs("submit", selector, job_id)
        return _job_json(view, 202)

    return await ctx.idempotency.run(request, key, produce)


@router.get("/jobs/{job_id}", response_model=JobView)
async def get_job(job_id: str, ctx: Ctx, items: bool = True) -> Response:
    """Progress, counters and (with ``items``) each source's outcome and error."""
    return _job_json(await ctx.backend.call_jobs("get", job_id, items))


@router.post("/jobs/{job_id}/cancel", response_model=JobView)
async def cancel_job(job_id: str, ctx: Ctx) -> Response:
    return _job_json(await ctx.backend.call_jobs("cancel", job_id))


def _sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


@router.get(
    "/jobs/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}},
    response_class=StreamingResponse,
)
async def job_events(job_id: str, request: Request, ctx: Ctx) -> StreamingResponse:
    """``progress`` whenever the counters move, the job's discovery events as they happen,
    and a final ``done`` with every item; then the stream ends."""
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
