"""The HTTP API: FastAPI app on Ray Serve (REST, WebSocket, GraphQL, streaming) and its client.

Attributes are imported lazily so ``serve.client`` (used by the CLI) does not pull in FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AsyncHttpClient", "Backend", "HttpClient", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from datawave.datasource.serve.app import create_app

        return create_app
    if name == "Backend":
        from datawave.datasource.serve.backend import Backend

        return Backend
    if name in ("HttpClient", "AsyncHttpClient"):
        from datawave.datasource.serve import client

        return getattr(client, name)
    raise AttributeError(name)
