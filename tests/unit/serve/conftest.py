"""The API app over the in-process backend (the owner/job classes without Ray), on a temp
SQLite store; SQLite sources are files, so nothing here touches the network."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from datawave.datasource.config import DatawaveSettings, load_settings
from datawave.datasource.serve.app import create_app
from datawave.datasource.serve.local import LocalBackend


def make_sqlite(path: Path, tables: int = 3) -> Path:
    conn = sqlite3.connect(path)
    for i in range(tables):
        conn.execute(
            f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount_{i} NUMERIC)"
        )
    conn.commit()
    conn.close()
    return path


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
async def api(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as c:
        yield c


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return make_sqlite(tmp_path / "shop.sqlite")
