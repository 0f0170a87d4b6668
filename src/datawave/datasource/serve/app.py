"""The FastAPI application factory.

``create_app(backend)`` builds the whole HTTP surface around an injected :class:`Backend`, so the
same app object runs inside a Ray Serve replica (``deployment.py``), under plain uvicorn
(``datawave.datasource.serve.local``) and in unit tests.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from datawave.datasource.config import ApiSettings, AuthSettings
from datawave.datasource.serve.auditing import Appender, AuditTrail, FailureAudit
from datawave.datasource.serve.auth import PUBLIC_PATHS, Authenticator, AuthGuard
from datawave.datasource.serve.backend import Backend
from datawave.datasource.serve.context import ApiContext
from datawave.datasource.serve.middleware import BodyGuard
from datawave.datasource.serve.problems import PROBLEM_JSON, install_problem_handlers
from datawave.datasource.serve.readstore import open_write_store
from datawave.datasource.serve.routes import (
    events,
    health,
    jobs,
    metadata,
    monitoring,
    security,
    sources,
)

__all__ = ["Problem", "create_app"]

log = logging.getLogger(__name__)

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
    auth: AuthSettings | None = None,
    auth_store: Any = None,
    threads: int = 32,
    owns_backend: bool = False,
    graphql: bool = True,
) -> FastAPI:
    """Build the API around ``backend``.

    Args:
        backend: owners, job manager, store and event feed the routes use.
        api: API settings (body limit); defaults apply when omitted.
        auth: who may call (default: on — every route but health, metrics and the API
            description needs a credential).
        auth_store: writable store for API keys and the audit log; default: a sealer-less
            store on the backend's store URL.
        threads: worker threads for blocking store reads.
        owns_backend: close the backend when the app shuts down.
        graphql: mount ``/graphql``.
    """
    api = api or ApiSettings()
    auth = auth or AuthSettings()
    if auth_store is None:
        auth_store = open_write_store(backend.store.url)
    ctx = ApiContext(backend, api, threads=threads, auth=auth, auth_store=auth_store)
    if not auth.enabled:
        log.warning("API authentication is OFF (auth.enabled=false): every caller is admin")

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
    for r in (sources.router, metadata.router, jobs.router, events.router, monitoring.router,
              security.router):  # fmt: skip
        app.include_router(r, prefix="/v1")
    if graphql:
        from datawave.datasource.serve.graphql import graphql_router

        app.include_router(graphql_router(), prefix="/graphql", include_in_schema=False)
    # Outermost last: authenticate first (no body is read for a stranger), then audit, then
    # the body guard, then the routes.
    appender = ctx.appender = Appender(auth_store, ctx.run)
    app.add_middleware(BodyGuard, max_body_bytes=api.max_body_bytes)
    app.add_middleware(AuditTrail, appender=appender)
    authenticator = Authenticator(auth, auth_store, roles=ctx.policy.roles)
    app.add_middleware(AuthGuard, authenticator=authenticator, run=ctx.run,
                       on_failure=FailureAudit(appender))  # fmt: skip
    if auth.tls.front_key_file is not None:  # outermost: client certificates via the mTLS front
        from datawave.datasource.serve.front import ForwardedCertificate, load_front_key

        app.add_middleware(ForwardedCertificate, key=load_front_key(auth.tls.front_key_file),
                           on_failure=FailureAudit(appender))  # fmt: skip
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
    doc["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "An API key (`dwk_...`) or an OIDC access token (JWT)"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }  # fmt: skip
    doc["security"] = [{"bearer": []}, {"apiKey": []}]
    ref = {"$ref": "#/components/schemas/Problem"}
    for name, path in doc.get("paths", {}).items():
        public = name in PUBLIC_PATHS
        for op in path.values():
            responses = op.get("responses", {})
            statuses = ["400", "404", "409", "412", "413", "415", "422", "500", "502", "503"]
            if public:
                op["security"] = []
            else:
                statuses += ["401", "403"]
            for status in statuses:
                responses.setdefault(status, {"description": "Problem"})
            for status, resp in responses.items():
                if status.startswith(("4", "5")):
                    resp["content"] = {PROBLEM_JSON: {"schema": ref}}
    for name in ("HTTPValidationError", "ValidationError"):
        comps.pop(name, None)
    app.openapi_schema = doc
    return doc
