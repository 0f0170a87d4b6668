"""Liveness (this process answers) and readiness (store, Ray and every owner answer)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from datawave.datasource.serve.context import ApiContext, get_ctx
from datawave.datasource.serve.problems import Unavailable

__all__ = ["router"]

router = APIRouter(tags=["health"])
Ctx = Annotated[ApiContext, Depends(get_ctx)]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(ctx: Ctx) -> dict[str, Any]:
    try:
        sources = await asyncio.wait_for(ctx.run(ctx.store.count_sources), 5)
    except Exception as exc:
        raise Unavailable(f"store not reachable: {type(exc).__name__}", component="store") from None
    try:
        runtime = await asyncio.wait_for(ctx.backend.ready(), 10)
    except Unavailable:
        raise
    except Exception as exc:
        raise Unavailable(f"runtime not reachable: {type(exc).__name__}", component="ray") from None
    return {"status": "ready", "store": {"sources": sources}, **runtime}
