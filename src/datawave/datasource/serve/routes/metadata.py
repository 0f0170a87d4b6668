"""Discovered metadata, read from the store on worker threads: databases, schemas, tables,
one table, search and the NDJSON export. None of these wake the source or its owner."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from starlette.responses import StreamingResponse

from datawave.datasource.errors import NotFound
from datawave.datasource.models import DatabaseInfo, SchemaInfo, TableInfo
from datawave.datasource.serve.access import Caller
from datawave.datasource.serve.context import ApiContext, Cursor, get_ctx
from datawave.datasource.serve.problems import ApiError
from datawave.datasource.serve.routes.common import PROBLEMS, Limit, json_response
from datawave.datasource.serve.schemas import Page, SearchHit

__all__ = ["router", "split_qualified"]

router = APIRouter(tags=["metadata"], responses=PROBLEMS)
Ctx = Annotated[ApiContext, Depends(get_ctx)]

_EXPORT_PAGE = 200


def split_qualified(name: str) -> tuple[str, str, str]:
    """Parse ``db.schema.table``; parts holding dots are double-quoted (``"a.b"``)."""
    parts: list[str] = []
    buf: list[str] = []
    i, quoted = 0, False
    while i < len(name):
        c = name[i]
        if quoted:
            if c == '"' and name[i + 1 : i + 2] == '"':
                buf.append('"')
                i += 1
            elif c == '"':
                quoted = False
            else:
                buf.append(c)
        elif c == '"' and not buf:
            quoted = True
        elif c == ".":
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(c)
        i += 1
    parts.append("".join(buf))
    if quoted or len(parts) != 3 or not all(parts):
        raise ApiError("invalid_parameter", "table must be a qualified name db.schema.table",
                       field="qualified_name")  # fmt: skip
    return parts[0], parts[1], parts[2]


def _slice(items: list[Any], key: Any, after: Any, limit: int) -> tuple[list[Any], Any]:
    if after is not None:
        items = [i for i in items if key(i) > tuple(after)]
    page = items[:limit]
    return page, (list(key(page[-1])) if len(items) > limit else None)


@router.get("/sources/{ref}/databases", response_model=Page[DatabaseInfo])
async def list_databases(
    ref: str, ctx: Ctx, access: Caller, limit: Limit = 100, cursor: str | None = None
) -> Page[DatabaseInfo]:
    after = _key(Cursor.decode("databases", cursor), 1)
    rec = await access.source_for_read(ref)
    dbs = await ctx.run(ctx.store.list_databases, rec.id)
    page, nxt = _slice(dbs, lambda d: (d.name,), after, limit)
    return Page(items=page, next_cursor=Cursor.encode("databases", nxt) if nxt else None)


@router.get("/sources/{ref}/schemas", response_model=Page[SchemaInfo])
async def list_schemas(
    ref: str,
    ctx: Ctx,
    access: Caller,
    database: str | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Page[SchemaInfo]:
    after = _key(Cursor.decode("schemas", cursor), 2)
    rec = await access.source_for_read(ref)
    schemas = await ctx.run(ctx.store.list_schemas, rec.id, database)
    page, nxt = _slice(schemas, lambda s: (s.database, s.name), after, limit)
    return Page(items=page, next_cursor=Cursor.encode("schemas", nxt) if nxt else None)


def _key(value: Any, n: int) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == n and all(isinstance(v, str) for v in value)):
        raise ApiError("invalid_cursor", "cursor is not valid for this listing", field="cursor")
    return tuple(value)


@router.get("/sources/{ref}/tables", response_model=Page[TableInfo], response_model_by_alias=True)
async def list_tables(
    ref: str,
    ctx: Ctx,
    access: Caller,
    database: str | None = None,
    schema: str | None = None,
    columns: Annotated[bool, Query(description="Include columns, keys and indexes")] = True,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Page[TableInfo]:
    """Tables in (database, schema, name) order, with columns, keys and indexes."""
    after = _key(Cursor.decode("tables", cursor), 3)
    rec = await access.source_for_read(ref)
    tables = await ctx.run(ctx.store.list_tables, rec.id, database=database, schema=schema,
                           after=after, limit=limit + 1, with_columns=columns)  # fmt: skip
    more = len(tables) > limit
    tables = tables[:limit]
    nxt = Cursor.encode("tables", list(tables[-1].key)) if more else None
    return json_response(Page[TableInfo](items=tables, next_cursor=nxt))  # type: ignore[return-value]


@router.get("/sources/{ref}/tables/{qualified_name:path}", response_model=TableInfo,
            response_model_by_alias=True)  # fmt: skip
async def get_table(ref: str, qualified_name: str, ctx: Ctx, access: Caller) -> Response:
    """One table by qualified name ``db.schema.table``."""
    db, schema, name = split_qualified(qualified_name)
    rec = await access.source_for_read(ref)
    table: TableInfo = await ctx.run(ctx.store.get_table, rec.id, db, schema, name)
    return json_response(table)


@router.get("/search", response_model=list[SearchHit], response_model_by_alias=True)
async def search(
    ctx: Ctx,
    access: Caller,
    q: Annotated[str, Query(min_length=2, max_length=200, description="Substring to find")],
    source: Annotated[list[str] | None, Query(description="Restrict to these sources")] = None,
    limit: Limit = 50,
) -> list[dict[str, Any]]:
    """Case-insensitive substring search over table and column names and comments, within
    the sources the caller may read."""
    access.require_anywhere("sources:read")
    ids: list[str] | None = None
    if source:
        ids = []
        for ref in source:
            rec = await ctx.run(ctx.store.find_source, ref, include_deleted=True)
            if rec is None or not access.covers(rec):
                raise NotFound(f"no source {ref!r}", kind="source", ref=ref)
            ids.append(rec.id)
    else:
        allowed = await access.source_ids("sources:read")
        ids = None if allowed is None else sorted(allowed)
    hits: list[dict[str, Any]] = await ctx.run(
        ctx.search.search, ctx.store, q, limit=limit, source_ids=ids
    )
    return hits


@router.get(
    "/sources/{ref}/export",
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "One table per line"}},
    response_class=StreamingResponse,
)
async def export(ref: str, ctx: Ctx, access: Caller) -> StreamingResponse:
    """Every table of a source as NDJSON, streamed page by page (constant memory)."""
    rec = await access.source_for_read(ref)

    async def lines() -> AsyncIterator[bytes]:
        after: tuple[str, str, str] | None = None
        while True:
            page: list[TableInfo] = await ctx.run(
                ctx.store.list_tables, rec.id, after=after, limit=_EXPORT_PAGE
            )
            if not page:
                return
            yield "".join(
                json.dumps(t.model_dump(mode="json", by_alias=True), separators=(",", ":")) + "\n"
                for t in page
            ).encode()
            if len(page) < _EXPORT_PAGE:
                return
            after = page[-1].key

    return StreamingResponse(lines(), media_type="application/x-ndjson",
                             headers={"Content-Disposition": f'attachment; filename="{rec.name}.ndjson"'})  # fmt: skip
