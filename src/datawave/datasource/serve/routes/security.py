"""Who am I, API keys (admin) and the audit log.

A new key's token is in the ``201`` response and nowhere else (``Cache-Control: no-store``);
listings show the prefix, grants, expiry and last use — never the hash, never the token.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import JSONResponse

from datawave.datasource.errors import ConfigError, ValidationFailed
from datawave.datasource.security.apikeys import ApiKeyRecord
from datawave.datasource.security.audit import AuditEntry
from datawave.datasource.security.principal import Grant
from datawave.datasource.serve.access import Caller
from datawave.datasource.serve.auditing import note
from datawave.datasource.serve.context import ApiContext, Cursor, get_ctx
from datawave.datasource.serve.problems import ApiError
from datawave.datasource.serve.routes.common import PROBLEMS, Limit
from datawave.datasource.serve.schemas import Page

__all__ = ["router"]

router = APIRouter(tags=["security"], responses=PROBLEMS)
Ctx = Annotated[ApiContext, Depends(get_ctx)]

_SCAN_PAGES = 20  # audit pages read per request when filtering by scope
_SCAN_PAGE = 500


class WhoAmI(BaseModel):
    id: str
    kind: str
    name: str
    label: str
    grants: list[Grant]
    permissions: list[str] = Field(description="Every permission held somewhere")


class ApiKeyCreate(BaseModel):
    """A role over collections and/or sources (none: the whole installation), or explicit
    ``grants``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    role: str | None = Field(None, description="viewer, operator, admin or a custom role")
    collections: list[str] = Field(default_factory=list, max_length=100)
    sources: list[str] = Field(default_factory=list, max_length=100)
    grants: list[Grant] | None = Field(None, max_length=100)
    expires_in_days: float | None = Field(None, gt=0, le=3650)

    @model_validator(mode="after")
    def _one_way(self) -> ApiKeyCreate:
        if (self.role is None) == (self.grants is None):
            raise ValueError("give exactly one of 'role' or 'grants'")
        if self.grants is not None and (self.collections or self.sources):
            raise ValueError("'collections' and 'sources' go with 'role', not 'grants'")
        return self

    def to_grants(self) -> list[Grant]:
        if self.grants is not None:
            return list(self.grants)
        assert self.role is not None
        out = [Grant(role=self.role, collection=c.strip("/")) for c in self.collections]
        out += [Grant(role=self.role, source=s) for s in self.sources]
        return out or [Grant(role=self.role)]


class ApiKeyView(ApiKeyRecord):
    status: str = Field(description="active, revoked or expired")


class ApiKeyCreated(ApiKeyView):
    token: str = Field(description="Shown once: store it now, it cannot be read again")


def _view(rec: ApiKeyRecord, now: datetime | None = None) -> ApiKeyView:
    return ApiKeyView(**rec.model_dump(), status=rec.state(now or datetime.now(UTC)))


@router.get("/whoami", response_model=WhoAmI)
async def whoami(access: Caller) -> WhoAmI:
    """The caller as the API sees it: who, how authenticated, and what it may do."""
    p = access.principal
    return WhoAmI(id=p.id, kind=p.kind, name=p.name, label=p.label, grants=list(p.grants),
                  permissions=sorted(access.policy.permissions(p)))  # fmt: skip


@router.post("/apikeys", status_code=201, response_model=ApiKeyCreated)
async def create_api_key(body: ApiKeyCreate, access: Caller, ctx: Ctx) -> JSONResponse:
    """Create a key (admin). The token is in this response only."""
    access.require_global("apikeys:admin")
    grants = body.to_grants()
    for i, g in enumerate(grants):
        try:
            access.policy.check_role(g.role)
        except ConfigError as exc:
            raise ValidationFailed(exc.message, errors=[{
                "field": "role" if body.role else f"grants.{i}.role", "message": exc.message,
                "type": "unknown_role"}]) from None  # fmt: skip
    days = body.expires_in_days or ctx.auth.api_key_ttl_days
    expires = datetime.now(UTC) + timedelta(days=days) if days else None
    rec, token = await ctx.run(ctx.auth_store.create_api_key, name=body.name, grants=grants,
                               created_by=access.principal.label, expires_at=expires)  # fmt: skip
    note(access.conn, target=rec.id, name=rec.name, grants=[str(g) for g in grants])  # type: ignore[arg-type]
    out = ApiKeyCreated(**_view(rec).model_dump(), token=token)
    return JSONResponse(out.model_dump(mode="json"), status_code=201,
                        headers={"Cache-Control": "no-store", "Location": f"/v1/apikeys/{rec.id}"})  # fmt: skip


@router.get("/apikeys", response_model=list[ApiKeyView])
async def list_api_keys(
    access: Caller, ctx: Ctx, include_revoked: bool = False
) -> list[ApiKeyView]:
    """Every key (admin): prefix, grants, expiry, last use. Never a secret."""
    access.require_global("apikeys:admin")
    recs = await ctx.run(ctx.auth_store.list_api_keys, include_revoked=include_revoked)
    now = datetime.now(UTC)
    return [_view(r, now) for r in recs]


@router.delete("/apikeys/{key_id}", response_model=ApiKeyView)
async def revoke_api_key(key_id: str, access: Caller, ctx: Ctx) -> ApiKeyView:
    """Revoke a key (admin); it is refused from the next request on, on every replica."""
    access.require_global("apikeys:admin")
    note(access.conn, target=key_id)  # type: ignore[arg-type]
    rec = await ctx.run(ctx.auth_store.revoke_api_key, key_id)
    return _view(rec)


@router.get("/audit", response_model=Page[AuditEntry])
async def query_audit(
    access: Caller,
    ctx: Ctx,
    principal: Annotated[str | None, Query(max_length=256)] = None,
    source: Annotated[str | None, Query(max_length=256, description="Source id or name")] = None,
    action: Annotated[str | None, Query(max_length=64, description="Exact, or prefix*")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Page[AuditEntry]:
    """Audit entries in append order. Callers without a global ``audit:read`` see only the
    entries of sources in their scope."""
    access.require_anywhere("audit:read")
    after = Cursor.decode("audit", cursor)
    if after is not None and not isinstance(after, int):
        raise ApiError("invalid_cursor", "cursor is not valid for this listing", field="cursor")
    source_id = None
    if source is not None:
        rec = await access.source(source, "audit:read", include_deleted=True)
        source_id = rec.id
    allowed = None if source_id else await access.source_ids("audit:read")
    filters: dict[str, Any] = {"principal": principal, "source_id": source_id, "action": action,
                               "since": since, "until": until}  # fmt: skip
    if allowed is None:
        batch: list[AuditEntry] = await ctx.run(
            ctx.auth_store.query_audit, after_seq=after, limit=limit + 1, **filters
        )
        items = batch[:limit]
        more = len(batch) > limit
        after = items[-1].seq if items else after
    else:  # filter by scope, reading ahead a bounded number of pages
        items, more = [], False
        for _ in range(_SCAN_PAGES):
            batch = await ctx.run(ctx.auth_store.query_audit, after_seq=after, limit=_SCAN_PAGE,
                                  **filters)  # fmt: skip
            for e in batch:
                after = e.seq
                if e.source_id is not None and e.source_id in allowed:
                    items.append(e)
                    if len(items) == limit:
                        break
            if len(items) == limit:
                more = True
                break
            if len(batch) < _SCAN_PAGE:
                break
        else:
            more = True  # a short page: the scan budget ran out, resume from the cursor
    nxt = Cursor.encode("audit", after) if more and after is not None else None
    return Page[AuditEntry](items=items, next_cursor=nxt)
