"""The FastAPI application factory.

``create_app(backend)`` builds the whole HTTP surface around an injected :class:`Backend`, so the
same app object runs inside a Ray Serve replica (``deployment.py``), under plain uvicorn
(``datawave.datasource.serve.local``) and in unit tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from datawave.datasource.config import ApiSettings
from datawave.datasource.serve.backend import Backend
from datawave.datasource.serve.context import ApiContext
from datawave.datasource.serve.middleware import BodyGuard
from datawave.datasource.serve.problems import PROBLEM_JSON, install_problem_handlers
from datawave.datasource.serve.routes import events, health, jobs, metadata, monitoring, sources

__all__ = ["Problem", "create_app"]

API_VERSION = "1.0.0"


class Problem(BaseModel):
    """RFC 9457 problem details; ``code`` is stable, ``errors`` names invalid fields."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(None, description="[{field, message, type}]")


def create_app(
    backend: Backend,
    *,
    api: ApiSettings | None = None,
    threads: int = 32,
    owns_backend: bool = False,
    graphql: bool = True,
) -> FastAPI:
    """Build the API around ``backend``.

    Args:
        backend: owners, job manager, store and event feed the routes use.
        api: API settings (body limit); defaults apply when omitted.
        threads: worker threads for blocking store reads.
        owns_backend: close the backend when the app shuts down.
        graphql: mount ``/graphql``.
    """
    api = api or ApiSettings()
    ctx = ApiContext(backend, api, threads=threads)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await ctx.close()
            if owns_backend:
                await backend.close()

    app = FastAPI(
        title="datawave datasource API",
        version=API_VERSION,
        description="Register, test, discover and watch data sources. Errors are "
        "`application/problem+json` (RFC 9457) with a stable `code`.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(monitoring.metrics_router)
    for r in (sources.router, metadata.router, jobs.router, events.router, monitoring.router):
        app.include_router(r, prefix="/v1")
    if graphql:
        from datawave.datasource.serve.graphql import graphql_router

        app.include_router(graphql_router(), prefix="/graphql", include_in_schema=False)
    app.add_middleware(BodyGuard, max_body_bytes=api.max_body_bytes)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """OpenAPI with every 4xx/5xx documented as problem+json (the one error shape)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)  # fmt: skip
    comps = doc.setdefault("components", {}).setdefault("schemas", {})
    comps["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    ref = {"$ref": "#/components/schemas/Problem"}
    for path in doc.get("paths", {}).values():
        for op in path.values():
            responses = op.get("responses", {})
            for status in ("400", "404", "409", "412", "413", "415", "422", "500", "502", "503"):
                responses.setdefault(status, {"description": "Problem"})
            for status, resp in responses.items():
                if status.startswith(("4", "5")):
                    resp["content"] = {PROBLEM_JSON: {"schema": ref}}
    for name in ("HTTPValidationError", "ValidationError"):
        comps.pop(name, None)
    app.openapi_schema = doc
    return doc
