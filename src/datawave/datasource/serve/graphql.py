"""GraphQL at ``/graphql``: sources → databases → schemas → tables → columns.

Every nested field resolves through a per-request DataLoader (see :mod:`gql_loaders`), so a query
costs one store query per level, not one per parent. Lists take ``first`` / ``after`` (an opaque
cursor) and return ``{items, nextCursor}``.

Access: the endpoint needs ``sources:read`` somewhere (else 403, like REST); the root fields
only return sources in the caller's scope (``source(ref)`` is null for any other), and every
nested field hangs off such a source, so the loaders never see a key outside the scope.
"""

from __future__ import annotations

from typing import Any

import strawberry
from fastapi import Request
from strawberry.dataloader import DataLoader
from strawberry.extensions import MaxTokensLimiter, QueryDepthLimiter
from strawberry.fastapi import GraphQLRouter
from strawberry.scalars import JSON

from datawave.datasource.serve import gql_loaders
from datawave.datasource.serve.access import Access, principal_of
from datawave.datasource.serve.context import ApiContext, Cursor

__all__ = ["graphql_router", "schema"]

MAX_FIRST = 1000


class Loaders:
    def __init__(self, ctx: ApiContext) -> None:
        store = ctx.store

        def batch(fn: Any) -> Any:
            async def load(keys: list[Any]) -> list[Any]:
                return await ctx.run(fn, store, keys)  # type: ignore[no-any-return]

            return DataLoader(load_fn=load)

        self.databases = batch(gql_loaders.load_databases)
        self.schemas = batch(gql_loaders.load_schemas)
        self.tables = batch(gql_loaders.load_tables)
        self.columns = batch(gql_loaders.load_columns)


def _page(
    items: list[Any], key: Any, first: int, after: str | None, kind: str
) -> tuple[list[Any], str | None]:
    first = max(1, min(first, MAX_FIRST))
    start = Cursor.decode(kind, after)
    if start is not None:
        if not isinstance(start, list):
            start = [start]
        items = [i for i in items if list(key(i)) > start]
    page = items[:first]
    nxt = Cursor.encode(kind, list(key(page[-1]))) if len(items) > first else None
    return page, nxt


@strawberry.type
class Column:
    name: str
    ordinal: int
    data_type: str
    nullable: bool
    default: str | None
    comment: str | None
    is_primary_key: bool


@strawberry.type
class Table:
    id: strawberry.ID
    database: str
    schema: str
    name: str
    kind: str
    comment: str | None
    row_estimate: int | None
    size_bytes: int | None
    column_count: int
    primary_key: JSON | None

    @strawberry.field
    async def columns(self, info: strawberry.Info) -> list[Column]:
        rows = await info.context["loaders"].columns.load(int(self.id))
        return [Column(**{k: v for k, v in r.items() if k != "table_id"}) for r in rows]


@strawberry.type
class TablePage:
    items: list[Table]
    next_cursor: str | None


@strawberry.type
class Schema:
    source_id: strawberry.Private[str]
    database: str
    name: str
    comment: str | None

    @strawberry.field
    async def tables(
        self, info: strawberry.Info, first: int = 100, after: str | None = None,
        name_contains: str | None = None,
    ) -> TablePage:  # fmt: skip
        rows = await info.context["loaders"].tables.load((self.source_id, self.database, self.name))
        if name_contains:
            needle = name_contains.lower()
            rows = [r for r in rows if needle in r["name"].lower()]
        page, nxt = _page(rows, lambda r: (r["name"],), first, after, "gql-tables")
        return TablePage(items=[_table(r) for r in page], next_cursor=nxt)


def _table(r: dict[str, Any]) -> Table:
    return Table(
        id=strawberry.ID(str(r["id"])), database=r["database"], schema=r["schema"], name=r["name"],
        kind=r["kind"], comment=r["comment"], row_estimate=r["row_estimate"],
        size_bytes=r["size_bytes"], column_count=r["column_count"], primary_key=r["primary_key"],
    )  # fmt: skip


@strawberry.type
class Database:
    source_id: strawberry.Private[str]
    name: str
    comment: str | None
    size_bytes: int | None

    @strawberry.field
    async def schemas(self, info: strawberry.Info, name: str | None = None) -> list[Schema]:
        rows = await info.context["loaders"].schemas.load((self.source_id, self.name))
        return [Schema(source_id=self.source_id, database=r["database"], name=r["name"],
                       comment=r["comment"]) for r in rows if name is None or r["name"] == name]  # fmt: skip


@strawberry.type
class Source:
    id: strawberry.ID
    name: str
    type: str
    labels: JSON
    collection: str | None
    edge_site: str | None
    health: str
    version: int

    @strawberry.field
    async def databases(self, info: strawberry.Info, name: str | None = None) -> list[Database]:
        rows = await info.context["loaders"].databases.load(str(self.id))
        return [Database(source_id=str(self.id), name=r["name"], comment=r["comment"],
                         size_bytes=r["size_bytes"]) for r in rows if name is None or r["name"] == name]  # fmt: skip


@strawberry.type
class SourcePage:
    items: list[Source]
    next_cursor: str | None


def _source(rec: Any) -> Source:
    return Source(id=strawberry.ID(rec.id), name=rec.name, type=rec.type, labels=rec.labels,
                  collection=rec.collection, edge_site=rec.edge_site, health=rec.health,
                  version=rec.version)  # fmt: skip


@strawberry.type
class Query:
    @strawberry.field
    async def sources(
        self, info: strawberry.Info, type: str | None = None, collection: str | None = None,
        label: list[str] | None = None, first: int = 50, after: str | None = None,
    ) -> SourcePage:  # fmt: skip
        from datawave.datasource.serve.routes.common import parse_labels

        ctx: ApiContext = info.context["ctx"]
        access: Access = info.context["access"]
        start = Cursor.decode("gql-sources", after)
        first = max(1, min(first, MAX_FIRST))
        recs = await ctx.run(ctx.store.list_sources, type=type, collection=collection,
                             labels=parse_labels(label), after=start if isinstance(start, str) else None,
                             limit=first + 1, within=access.scope("sources:read"))  # fmt: skip
        nxt = Cursor.encode("gql-sources", recs[first - 1].id) if len(recs) > first else None
        return SourcePage(items=[_source(r) for r in recs[:first]], next_cursor=nxt)

    @strawberry.field
    async def source(self, info: strawberry.Info, ref: str) -> Source | None:
        ctx: ApiContext = info.context["ctx"]
        access: Access = info.context["access"]
        rec = await ctx.run(ctx.store.find_source, ref)
        return None if rec is None or not access.covers(rec) else _source(rec)


schema = strawberry.Schema(
    query=Query,
    extensions=[QueryDepthLimiter(max_depth=10), MaxTokensLimiter(max_token_count=2000)],  # type: ignore[list-item]
)


async def _context(request: Request) -> dict[str, Any]:
    ctx: ApiContext = request.app.state.ctx
    access = Access(ctx, principal_of(request), request)
    access.require_anywhere("sources:read")
    return {"ctx": ctx, "access": access, "loaders": Loaders(ctx), "request": request}


def graphql_router() -> GraphQLRouter[Any, Any]:
    return GraphQLRouter(schema, context_getter=_context, graphql_ide="graphiql")
