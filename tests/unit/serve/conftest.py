"""The API app over the in-process backend (the owner/job classes without Ray), on a temp
SQLite store; SQLite sources are files, so nothing here touches the network.

Auth is on, as in production: ``api`` sends an admin API key; ``keys`` holds tokens for a
viewer, an operator scoped to the ``fin`` collection and a viewer of one source name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from datawave.datasource.config import DatawaveSettings, load_settings
from datawave.datasource.security import Grant
from datawave.datasource.serve.app import create_app
from datawave.datasource.serve.local import LocalBackend
from tests.fixtures.api import bearer, make_sqlite

KEYS = {
    "admin": [Grant(role="admin")],
    "viewer": [Grant(role="viewer")],
    "fin-operator": [Grant(role="operator", collection="fin")],
    "shop-viewer": [Grant(role="viewer", source="shop")],
}


@pytest.fixture
def settings(tmp_path: Path) -> DatawaveSettings:
    return load_settings(data_dir=tmp_path / "dw", owners={"shards": 2},
                         api={"max_body_bytes": 4096})  # fmt: skip


@pytest.fixture
async def app(settings: DatawaveSettings):  # type: ignore[no-untyped-def]
    backend = LocalBackend(settings)
    application = create_app(backend, api=settings.api, owns_backend=True)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def keys(app) -> dict[str, str]:  # type: ignore[no-untyped-def]
    store = app.state.ctx.auth_store
    return {name: store.create_api_key(name=name, grants=grants, created_by="test")[1]
            for name, grants in KEYS.items()}  # fmt: skip


@pytest.fixture
async def api(app, keys) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api", headers=bearer(keys["admin"])
    ) as c:
        yield c


@pytest.fixture
async def anon(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as c:
        yield c


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return make_sqlite(tmp_path / "shop.sqlite")
