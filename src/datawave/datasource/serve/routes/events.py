"""``/v1/events``: live events over WebSocket, filtered by source, event type and access.

Authentication happened in :class:`~datawave.datasource.serve.auth.AuthGuard` (browsers, which
cannot set headers on a WebSocket, send ``Sec-WebSocket-Protocol: bearer, <token>`` or
``?access_token=``). Here the caller needs ``events:read``; it only ever receives events of
sources in its scope, and naming a source outside it is answered like an unknown source.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from datawave.datasource.errors import DatawaveError, NotFound
from datawave.datasource.serve.access import Access, SourceGate, principal_of
from datawave.datasource.serve.context import ApiContext
from datawave.datasource.serve.problems import from_error, status_for

__all__ = ["router"]

router = APIRouter(tags=["events"])

SEND_TIMEOUT_S = 5.0
TOO_SLOW = 1013  # try again later
POLICY = 1008


@router.websocket("/events")
async def events(
    ws: WebSocket,
    source: Annotated[list[str] | None, Query()] = None,
    type: Annotated[list[str] | None, Query()] = None,
) -> None:
    """Stream events as JSON text frames.

    ``?source=<id or name>`` and ``?type=<type or prefix>`` (repeatable) filter the stream;
    ``type=discovery`` matches ``discovery.started``, ``discovery.finished`` ... A client that
    falls more than a queue's worth behind is closed with 1013; one that stops reading for
    ``SEND_TIMEOUT_S`` is closed with 1008. Neither slows down any other client.
    """
    ctx: ApiContext = ws.app.state.ctx
    ids: set[str] | None = None
    try:
        access = Access(ctx, principal_of(ws), ws)
        access.require_anywhere("events:read")
        gate = SourceGate(access)
        if source:
            ids = set()
            for ref in source:
                rec = await ctx.run(ctx.store.find_source, ref, include_deleted=True)
                if rec is None or not access.covers(rec, "events:read"):
                    raise NotFound(f"unknown source {ref[:60]}", kind="source", ref=ref[:60])
                gate.seed([rec])
                ids.add(rec.id)
    except DatawaveError as exc:
        await _deny(ws, ctx, exc)
        return
    await ws.accept(subprotocol=(ws.scope.get("state") or {}).get("ws_subprotocol"))
    sub = ctx.broadcaster.subscribe(sources=ids, types=set(type) if type else None)

    async def reader() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await ws.receive_text()  # pings/unknown input are ignored; EOF ends the loop

    read_task = asyncio.get_running_loop().create_task(reader())
    try:
        await ws.send_text(json.dumps({"type": "subscribed", "data": {
            "sources": sorted(ids or []), "types": sorted(type or [])}}))  # fmt: skip
        while not read_task.done():
            get = asyncio.ensure_future(sub.get())
            done, _ = await asyncio.wait({get, read_task}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                break
            ev = get.result()
            if ev is None:
                await ws.close(code=TOO_SLOW, reason="client too slow: events dropped")
                break
            if not await gate.allows(ev):
                continue
            try:
                await asyncio.wait_for(ws.send_text(json.dumps(ev, default=str)), SEND_TIMEOUT_S)
            except TimeoutError:
                await ws.close(code=POLICY, reason="client stopped reading")
                break
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        ctx.broadcaster.unsubscribe(sub)
        read_task.cancel()
        with contextlib.suppress(BaseException):
            await read_task


async def _deny(ws: WebSocket, ctx: ApiContext, exc: DatawaveError) -> None:
    """Refuse the handshake with the problem as an HTTP response (denial-response extension),
    or, where the server lacks it, a policy close naming the code. 403s are audited."""
    status = status_for(exc)
    if status == 403 and ctx.appender is not None:
        await ctx.appender.for_scope(ws.scope, status)
    if "websocket.http.response" in (ws.scope.get("extensions") or {}):
        await ws.send_denial_response(from_error(exc, ws.url.path))
    else:
        await ws.close(code=POLICY, reason=f"{status} {exc.code}: {exc.message}"[:120])
