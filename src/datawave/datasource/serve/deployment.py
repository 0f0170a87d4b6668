"""Ray Serve: the API deployment, its backend and the event hub actor.

Ray is imported here (and in ``actors``) only. The deployment class is thin: it builds a
:class:`RayBackend` and hands it to :func:`~datawave.datasource.serve.app.create_app` at replica
start (``__serve_build_asgi_app__``), so the routes never see Ray.

Routing: a request about a source goes to ``datawave-owner-{shard}`` (the shard is stored on the
source), bulk work to ``datawave-jobs``, both with ``await handle.method.remote(...)`` from the
replica's event loop; every replica talks to every owner directly, so nothing sits in between.
Reads of discovered metadata use the replica's own :class:`MetadataStore` on worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import ray
from ray import serve

from datawave.datasource.actors import factory
from datawave.datasource.actors.factory import JOBS_NAME, RayOwnerDirectory, owner_name
from datawave.datasource.actors.payload import local_settings, remote_settings
from datawave.datasource.config import DatawaveSettings, load_settings
from datawave.datasource.serve.app import create_app
from datawave.datasource.serve.events import EventHub, pump_forever
from datawave.datasource.serve.problems import Unavailable
from datawave.datasource.serve.readstore import open_read_store

__all__ = [
    "APP_NAME",
    "EVENTS_NAME",
    "ApiDeployment",
    "RayBackend",
    "build_app",
    "deploy_api",
    "event_hub",
]

log = logging.getLogger(__name__)

APP_NAME = "datawave"
EVENTS_NAME = "datawave-events"
DEPLOYMENT_NAME = "datawave-api"
HEALTH_NAME: str = getattr(factory, "HEALTH_NAME", "datawave-health")

_UNAVAILABLE = (
    ray.exceptions.RayActorError,
    ray.exceptions.ActorUnavailableError,
    ray.exceptions.GetTimeoutError,
)


class EventHubActor(EventHub):
    """The hub as an actor: pumps ``drain()`` of every owner shard (and of the health
    scheduler, when one runs) into the ring buffer."""

    def __init__(self, namespace: str, shards: int, capacity: int = 10_000) -> None:
        super().__init__(capacity)
        self.namespace = namespace
        self.names = [owner_name(s) for s in range(shards)] + [HEALTH_NAME]
        self._handles: dict[str, Any] = {}
        self._missing_at: dict[str, float] = {}
        self._pump: asyncio.Task[None] | None = None

    def _drainers(self) -> list[Any]:
        out = []
        now = time.monotonic()
        for name in self.names:
            h = self._handles.get(name)
            if h is None:
                if now - self._missing_at.get(name, -1e9) < 5.0:
                    continue  # looked for it recently
                try:
                    h = self._handles[name] = ray.get_actor(name, namespace=self.namespace)
                except ValueError:
                    self._missing_at[name] = now
                    continue
            out.append(h.drain.remote)
        return out

    async def since(self, seq: int, timeout_s: float = 10.0, limit: int = 1000) -> dict[str, Any]:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(pump_forever(self, self._drainers))
        return await super().since(seq, timeout_s, limit)

    async def ping(self) -> int:
        return self.seq


def event_hub(settings: DatawaveSettings, *, detached: bool = True) -> Any:
    """The hub of this namespace, created on first use (any replica may race to create it)."""
    remote: Any = ray.remote
    cls = remote(num_cpus=0, max_concurrency=1000, max_restarts=-1)(EventHubActor)
    return cls.options(
        name=EVENTS_NAME, namespace=settings.ray.namespace, get_if_exists=True,
        lifetime="detached" if detached else None,
    ).remote(settings.ray.namespace, settings.owners.shards)  # fmt: skip


class _RemoteFeed:
    def __init__(self, settings: DatawaveSettings) -> None:
        self.settings = settings
        self._hub: Any = None

    async def since(self, seq: int, timeout_s: float = 10.0, limit: int = 1000) -> dict[str, Any]:
        if self._hub is None:
            self._hub = event_hub(self.settings)
        try:
            return await self._hub.since.remote(seq, timeout_s, limit)  # type: ignore[no-any-return]
        except _UNAVAILABLE:
            self._hub = None
            raise


class RayBackend:
    """Owners and the job manager by actor name; the store opened in this process."""

    def __init__(self, settings: DatawaveSettings) -> None:
        self.settings = settings
        self.namespace = settings.ray.namespace
        self.shards = settings.owners.shards
        self.directory = RayOwnerDirectory(self.namespace)
        self.store = open_read_store(settings.resolved_store_url)  # reads only: no sealer
        self.events = _RemoteFeed(settings)
        self._jobs: Any = None

    def _jobs_handle(self) -> Any:
        if self._jobs is None:
            try:
                self._jobs = ray.get_actor(JOBS_NAME, namespace=self.namespace)
            except ValueError:
                raise Unavailable("the job manager is not running", component="jobs") from None
        return self._jobs

    async def call_owner(self, shard: int, method: str, *args: Any) -> Any:
        if not 0 <= shard < self.shards:
            raise Unavailable(f"no owner shard {shard}", component="owner")
        try:
            self.directory.handle(shard)  # ValueError: no such actor (yet)
        except ValueError:
            raise Unavailable(f"owner shard {shard} is not running", component="owner") from None
        try:
            return await self.directory.call(shard, method, *args)
        except _UNAVAILABLE as exc:
            self.directory._handles.pop(shard, None)
            raise Unavailable(f"owner shard {shard} is unavailable: {type(exc).__name__}",
                              component="owner", shard=shard) from None  # fmt: skip

    async def call_jobs(self, method: str, *args: Any) -> Any:
        handle = self._jobs_handle()
        try:
            return await getattr(handle, method).remote(*args)
        except ray.exceptions.RayTaskError as exc:
            raise (exc.cause if isinstance(exc.cause, BaseException) else exc) from None
        except _UNAVAILABLE as exc:
            self._jobs = None
            raise Unavailable(f"the job manager is unavailable: {type(exc).__name__}",
                              component="jobs") from None  # fmt: skip

    async def ready(self) -> dict[str, Any]:
        async def ping(shard: int) -> Any:
            return await self.call_owner(shard, "ping")

        pings = await asyncio.gather(*(ping(s) for s in range(self.shards)))
        await self.call_jobs("topology")
        return {"owners": len(pings), "jobs": True, "runtime": "ray"}

    async def close(self) -> None:
        self.store.close()


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress()
class ApiDeployment:
    """One API replica: a :class:`RayBackend` and the FastAPI app built around it."""

    def __init__(self, settings: dict[str, Any]) -> None:
        # The store password comes from this replica's environment, never from Serve's config.
        self.settings = local_settings(settings, os.environ)
        self.backend = RayBackend(self.settings)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.backend, api=self.settings.api, auth=self.settings.auth)

    async def check_health(self) -> None:
        """Liveness only: owners being down makes ``/readyz`` fail, not the replica."""


def _deployment() -> Any:
    return ApiDeployment  # a serve.Deployment, which mypy cannot see through the decorators


def _options(
    *, num_replicas: int | None, max_ongoing_requests: int, autoscaling: dict[str, Any] | None
) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "max_ongoing_requests": max_ongoing_requests,
        "ray_actor_options": {"num_cpus": 0},
        "health_check_period_s": 10,
    }
    if autoscaling:
        opts["autoscaling_config"] = autoscaling
    else:
        opts["num_replicas"] = num_replicas or 1
    return opts


def build_app(args: dict[str, Any] | None = None) -> Any:
    """App builder for ``serve run`` / ``serve deploy`` (``import_path`` in serve/config.yaml).

    ``args.settings`` overrides settings read from the environment (``DATAWAVE_*``); replica
    counts and ``max_ongoing_requests`` come from the config file's deployment section.
    """
    args = dict(args or {})
    settings = load_settings(**args.get("settings", {}))
    return _deployment().bind(remote_settings(settings))


def deploy_api(
    settings: DatawaveSettings,
    *,
    port: int | None = None,
    num_replicas: int = 2,
    max_ongoing_requests: int = 256,
    autoscaling: dict[str, Any] | None = None,
) -> str:
    """Start Serve's HTTP proxy and deploy the API on the connected cluster; return its URL."""
    host = settings.api.host
    port = settings.api.port if port is None else port
    serve.start(http_options={"host": host, "port": port})
    event_hub(settings)
    app = _deployment().options(
        **_options(num_replicas=num_replicas, max_ongoing_requests=max_ongoing_requests,
                   autoscaling=autoscaling)
    ).bind(remote_settings(settings))  # fmt: skip
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{host}:{port}"
