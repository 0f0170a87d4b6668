"""An in-process backend: the owner and job-manager classes without Ray.

Used by unit tests, by the schemathesis fuzz run against the app object, and to serve the API
from a single process (``python -m datawave.datasource.serve.local``, with HTTPS and client
certificates when ``auth.tls`` is set: see :mod:`.tls`). It runs exactly the code the actors
run; only the transport differs.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from datawave.datasource.actors.jobs import JobManager
from datawave.datasource.actors.owner import SourceOwner, open_store
from datawave.datasource.config import DatawaveSettings
from datawave.datasource.serve.events import EventHub, pump_forever
from datawave.datasource.serve.readstore import open_read_store

__all__ = ["LocalBackend"]


class _Directory:
    def __init__(self, owners: list[SourceOwner]) -> None:
        self.owners = owners

    async def call(self, shard: int, method: str, *args: Any) -> Any:
        return await getattr(self.owners[shard], method)(*args)


class LocalBackend:
    def __init__(self, settings: DatawaveSettings) -> None:
        self.settings = settings
        open_store(settings, migrate=True).close()
        self.shards = settings.owners.shards
        self.owners = [SourceOwner(i, settings) for i in range(self.shards)]
        self.directory = _Directory(self.owners)
        self.jobs = JobManager(settings, self.directory, open_store(settings))
        self.store = open_read_store(settings.resolved_store_url)
        self.hub = EventHub()
        self.events = self
        self._pump: asyncio.Task[None] | None = None

    def _drainers(self) -> list[Any]:
        async def drain(o: SourceOwner) -> list[Any]:
            return o.drain_events()

        return [lambda o=o: drain(o) for o in self.owners]

    def _ensure_pump(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(
                pump_forever(self.hub, self._drainers, interval_s=0.1)
            )

    async def since(self, seq: int, timeout_s: float = 10.0, limit: int = 1000) -> dict[str, Any]:
        self._ensure_pump()
        return await self.hub.since(seq, timeout_s, limit)

    async def call_owner(self, shard: int, method: str, *args: Any) -> Any:
        self._ensure_pump()
        return await self.directory.call(shard, method, *args)

    async def call_jobs(self, method: str, *args: Any) -> Any:
        self._ensure_pump()
        return await getattr(self.jobs, method)(*args)

    async def ready(self) -> dict[str, Any]:
        self._ensure_pump()
        pings = [await o.ping() for o in self.owners]
        return {"owners": len(pings), "jobs": True, "runtime": "local"}

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        for t in list(self.jobs._tasks.values()):
            t.cancel()
        for o in self.owners:
            await o.close()
        self.jobs.store.close()
        self.store.close()


def main() -> None:  # pragma: no cover - a convenience entry point
    """Serve the API from this process; HTTPS and client certificates per ``auth.tls``."""
    import uvicorn

    from datawave.datasource.config import load_settings
    from datawave.datasource.serve.app import create_app
    from datawave.datasource.serve.tls import server_config

    settings = load_settings()
    app = create_app(LocalBackend(settings), api=settings.api, auth=settings.auth,
                     owns_backend=True)  # fmt: skip
    config = server_config(app, host=settings.api.host, port=settings.api.port,
                           tls=settings.auth.tls)  # fmt: skip
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
