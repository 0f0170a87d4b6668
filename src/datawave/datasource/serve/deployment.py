"""Ray Serve: the API deployment and its backend.

Ray is imported here (and in ``actors``) only. The deployment class is thin: it builds a
:class:`RayBackend` and hands it to :func:`~datawave.datasource.serve.app.create_app` at replica
start (``__serve_build_asgi_app__``), so the routes never see Ray.

Routing: a request about a source goes to the process that hosts its shard (the shard is stored
on the source; ``RayOwnerDirectory`` maps it to ``datawave-core`` or ``datawave-owner-{p}``, per
``owners.processes``), bulk work and the event feed to the core-services actor ``datawave-core``,
all with ``await handle.method.remote(...)`` from the replica's event loop; every replica
talks to every owner directly, so nothing sits in between. Reads of discovered metadata use the
replica's own :class:`MetadataStore` on worker threads. One replica is the default (``datawave up``): on one
machine a second one only adds a process; serve/config.yaml scales replicas on a cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import ray
from ray import serve

from datawave.datasource.actors.factory import CORE_NAME, JOBS_NAME, RayOwnerDirectory
from datawave.datasource.actors.payload import local_settings, remote_settings
from datawave.datasource.config import DatawaveSettings, load_settings
from datawave.datasource.serve.app import create_app
from datawave.datasource.serve.problems import Unavailable
from datawave.datasource.serve.readstore import open_read_store

__all__ = [
    "APP_NAME",
    "ApiDeployment",
    "RayBackend",
    "build_app",
    "deploy_api",
]

log = logging.getLogger(__name__)

APP_NAME = "datawave"
DEPLOYMENT_NAME = "datawave-api"

_UNAVAILABLE = (
    ray.exceptions.RayActorError,
    ray.exceptions.ActorUnavailableError,
    ray.exceptions.GetTimeoutError,
)


class _RemoteFeed:
    """The event hub in the core-services actor (``datawave-core``), long-polled."""

    def __init__(self, settings: DatawaveSettings) -> None:
        self.settings = settings
        self._core: Any = None

    async def since(self, seq: int, timeout_s: float = 10.0, limit: int = 1000) -> dict[str, Any]:
        if self._core is None:
            try:
                self._core = ray.get_actor(CORE_NAME, namespace=self.settings.ray.namespace)
            except ValueError:
                raise Unavailable("the core services are not running", component="events") from None
        try:
            return await self._core.since.remote(seq, timeout_s, limit)  # type: ignore[no-any-return]
        except _UNAVAILABLE:
            self._core = None
            raise


class RayBackend:
    """Owners and the job manager by actor name; the store opened in this process."""

    def __init__(self, settings: DatawaveSettings) -> None:
        self.settings = settings
        self.namespace = settings.ray.namespace
        self.shards = settings.owners.shards
        self.directory = RayOwnerDirectory(self.namespace, settings.owners.process_count)
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
            self.directory.forget(shard)
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
    num_replicas: int = 1,
    max_ongoing_requests: int = 256,
    autoscaling: dict[str, Any] | None = None,
) -> str:
    """Start Serve's HTTP proxy and deploy the API on the connected cluster; return its URL."""
    host = settings.api.host
    port = settings.api.port if port is None else port
    serve.start(http_options={"host": host, "port": port})
    app = _deployment().options(
        **_options(num_replicas=num_replicas, max_ongoing_requests=max_ongoing_requests,
                   autoscaling=autoscaling)
    ).bind(remote_settings(settings))  # fmt: skip
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{host}:{port}"
