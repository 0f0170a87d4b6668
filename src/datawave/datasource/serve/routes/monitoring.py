"""Fleet views for operators: Prometheus ``/metrics``, edge nodes, alerts and usage report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from datawave.datasource.actors.metrics import CONTENT_TYPE, Metrics
from datawave.datasource.engines.analytics import ReportRow, usage_report
from datawave.datasource.serve.context import ApiContext, get_ctx
from datawave.datasource.store import AlertRecord, EdgeNode

__all__ = ["metrics_router", "router"]

router = APIRouter(tags=["fleet"])
metrics_router = APIRouter(tags=["health"])
Ctx = Annotated[ApiContext, Depends(get_ctx)]


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
    site: Annotated[str | None, Query(max_length=128)] = None,
    include_left: bool = False,
) -> list[EdgeNode]:
    """The fleet registry: node, site, last heartbeat, lag, version, link state."""
    return await ctx.run(ctx.store.list_edge_nodes, site=site, include_left=include_left)


@router.get("/alerts", response_model=list[AlertRecord])
async def list_alerts(
    ctx: Ctx,
    status: Annotated[str | None, Query(pattern="^(firing|resolved)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AlertRecord]:
    return await ctx.run(ctx.store.list_alerts, status=status, limit=limit)


@router.get("/report", response_model=list[ReportRow])
async def report(
    ctx: Ctx,
    hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24.0,
    top: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> list[ReportRow]:
    """Per-source usage: checks, error rates, uptime, latency p95, discoveries, cost."""
    return await ctx.run(usage_report, ctx.store, hours=hours, top=top)
