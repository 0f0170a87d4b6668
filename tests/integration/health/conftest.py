"""A small in-process fleet (real owners, real store, real sources) and loopback helpers:
a TCP proxy we can stop, slow down and restart, and an HTTP server that misbehaves."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from datawave.datasource.actors.health import HealthScheduler
from datawave.datasource.actors.owner import SourceOwner, open_store
from datawave.datasource.config import load_settings
from datawave.datasource.engines import shard_for


class Hook:
    """A webhook receiver: answers ``statuses`` in turn (then 200); ``hang_s`` stalls each."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.hang_s = 0.0
        self.hits: list[tuple[float, bytes]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                hook.hits.append((time.monotonic(), body))
                if hook.hang_s:
                    time.sleep(hook.hang_s)
                code = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


class Fleet:
    def __init__(self, tmp_path: Any, **health: Any) -> None:
        health.setdefault("jitter", 0)
        self.settings = load_settings(data_dir=tmp_path, owners={"shards": 2}, health=health)
        open_store(self.settings, migrate=True).close()
        self.owners = [SourceOwner(i, self.settings) for i in range(2)]
        self.store = open_store(self.settings)
        self.scheduler = HealthScheduler(self.settings, self, open_store(self.settings))

    async def call(self, shard: int, method: str, *args: Any) -> Any:
        return await getattr(self.owners[shard], method)(*args)

    async def register(self, name: str, type_: str, config: dict[str, Any], **labels: str) -> Any:
        import uuid

        sid = str(uuid.uuid4())
        owner = self.owners[shard_for(sid, 2)]
        spec = {"name": name, "type": type_, "config": config, "labels": labels}
        return await owner.register(spec, sid)

    async def close(self) -> None:
        await self.scheduler.close()
        for o in self.owners:
            await o.close()
        self.store.close()


@pytest.fixture
async def fleet_factory(tmp_path):  # type: ignore[no-untyped-def]
    made: list[Fleet] = []

    def make(**health: Any) -> Fleet:
        f = Fleet(tmp_path / f"f{len(made)}", **health)
        made.append(f)
        return f

    yield make
    for f in made:
        await f.close()
