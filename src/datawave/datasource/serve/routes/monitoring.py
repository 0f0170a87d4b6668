"""Fleet views for operators: Prometheus ``/metrics``, edge nodes, alerts and usage report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from datawave.datasource.actors.metrics import CONTENT_TYPE, Metrics
from datawave.datasource.engines.analytics import ReportRow, usage_report
from datawave.datasource.serve.access import Caller
from datawave.datasource.serve.context import ApiContext, get_ctx
from datawave.datasource.store import AlertRecord, EdgeNode

__all__ = ["metrics_router", "router"]

router = APIRouter(tags=["fleet"])
metrics_router = APIRouter(tags=["health"])
Ctx = Annotated[ApiContext, Depends(get_ctx)]

_SCOPED_SCAN = 10_000  # alerts read to filter down to a scoped caller's page


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus exposition"}},
)
async def metrics(ctx: Ctx) -> Response:
    """Sources by health state, read from the store at scrape time (no source is touched)."""
    counts = await ctx.run(ctx.store.health_counts)
    m = Metrics()
    m.set_sources({"all": counts})
    return Response(content=m.render(), media_type=CONTENT_TYPE)


@router.get("/edges", response_model=list[EdgeNode])
async def list_edges(
    ctx: Ctx,
    access: Caller,
    site: Annotated[str | None, Query(max_length=128)] = None,
    include_left: bool = False,
) -> list[EdgeNode]:
    """The fleet registry: node, site, last heartbeat, lag, version, link state (global
    ``edges:read``)."""
    access.require_global("edges:read")
    return await ctx.run(ctx.store.list_edge_nodes, site=site, include_left=include_left)


@router.get("/alerts", response_model=list[AlertRecord])
async def list_alerts(
    ctx: Ctx,
    access: Caller,
    status: Annotated[str | None, Query(pattern="^(firing|resolved)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AlertRecord]:
    """Alerts, newest first: those of sources in the caller's scope (fleet-wide alerts, such
    as an edge going offline, only for a global ``alerts:read``)."""
    access.require_anywhere("alerts:read")
    allowed = await access.source_ids("alerts:read")
    if allowed is None:
        return await ctx.run(ctx.store.list_alerts, status=status, limit=limit)
    alerts: list[AlertRecord] = await ctx.run(ctx.store.list_alerts, status=status,
                                              limit=_SCOPED_SCAN)  # fmt: skip
    return [a for a in alerts if a.source_id in allowed][:limit]


@router.get("/report", response_model=list[ReportRow])
async def report(
    ctx: Ctx,
    access: Caller,
    hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24.0,
    top: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> list[ReportRow]:
    """Per-source usage: checks, error rates, uptime, latency p95, discoveries, cost."""
    access.require_anywhere("report:read")
    allowed = await access.source_ids("report:read")
    if allowed is None:
        return await ctx.run(usage_report, ctx.store, hours=hours, top=top)
    rows: list[ReportRow] = await ctx.run(usage_report, ctx.store, hours=hours, top=None)
    mine = [r for r in rows if r.source_id in allowed]
    return mine[:top] if top else mine
