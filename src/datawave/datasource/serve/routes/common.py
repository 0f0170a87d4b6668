"""Helpers shared by the routers: source lookup, ETags, limits."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Response
from pydantic import BaseModel, TypeAdapter

from datawave.datasource.errors import ValidationFailed
from datawave.datasource.models import SourceRecord
from datawave.datasource.serve.context import ApiContext
from datawave.datasource.serve.problems import PROBLEM_JSON

__all__ = ["PROBLEMS", "Limit", "etag", "parse_labels", "source"]

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size")]

_PROBLEM = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad request", **_PROBLEM},
    404: {"description": "Not found", **_PROBLEM},
    422: {"description": "Invalid input; `errors` names each field", **_PROBLEM},
}


async def source(ctx: ApiContext, ref: str, *, include_deleted: bool = False) -> SourceRecord:
    """A live source by id or name, read from the store (never wakes the owner)."""
    rec: SourceRecord = await ctx.run(ctx.store.get_source, ref, include_deleted=include_deleted)
    return rec


async def source_for_read(ctx: ApiContext, ref: str) -> SourceRecord:
    """The source whose metadata is read (deleted ones included), via the short-lived cache."""
    rec = ctx.sources.get(ref)
    if rec is None:
        rec = await source(ctx, ref, include_deleted=True)
        ctx.sources.put(ref, rec)
    return rec


def json_response(model: BaseModel | list[Any] | dict[str, Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:  # fmt: skip
    """Serialize once with pydantic-core (FastAPI's response_model would validate again)."""
    if isinstance(model, BaseModel):
        body = model.model_dump_json(by_alias=True)
    else:
        body = _LIST_ADAPTER.dump_json(model, by_alias=True)  # type: ignore[assignment]
    return Response(body, status_code=status, media_type="application/json", headers=headers)


_LIST_ADAPTER: TypeAdapter[Any] = TypeAdapter(Any)


def etag(rec: SourceRecord) -> str:
    return f'"{rec.version}"'


def parse_labels(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out: dict[str, str] = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise ValidationFailed(
                "label filters are key=value",
                errors=[{"field": "label", "message": f"expected key=value, got {p!r}",
                         "type": "value_error"}],
            )  # fmt: skip
        out[k] = v
    return out
