"""The one place where plain classes become Ray actors (cf. Ray Serve's controller factory)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import ray

from datawave.datasource.actors.gateway import EdgeRouter
from datawave.datasource.actors.health import HealthScheduler
from datawave.datasource.actors.jobs import JobManager
from datawave.datasource.actors.metrics import Metrics
from datawave.datasource.actors.owner import SourceOwner, open_store
from datawave.datasource.actors.payload import local_settings, remote_settings
from datawave.datasource.config import DatawaveSettings
from datawave.datasource.models import RunSummary

__all__ = [
    "HEALTH_NAME",
    "JOBS_NAME",
    "OwnerActor",
    "RayOwnerDirectory",
    "deploy",
    "health_scheduler_class",
    "job_manager_class",
    "owner_class",
    "owner_name",
    "shutdown",
    "wait_ready",
]

JOBS_NAME = "datawave-jobs"
HEALTH_NAME = "datawave-health"


def owner_name(shard: int) -> str:
    return f"datawave-owner-{shard}"


class OwnerActor(SourceOwner):
    """Thin Ray-facing subclass: only adds what a remote caller needs (and metrics)."""

    def __init__(self, shard: int, settings: dict[str, Any]) -> None:
        # The actor process is an entry point: its environment (from the raylet) supplies the
        # store password, an `env` KEK and `env:` secret references; Ray never carries them.
        super().__init__(shard, local_settings(settings, os.environ), environ=os.environ)
        self.metrics = Metrics(ray_metrics=True)
        self.on_checks = self.metrics.record_checks
        self.edge_router = EdgeRouter(self.settings.ray.namespace)

    async def drain(self) -> list[Any]:
        return self.drain_events()

    async def discover(self, source_id: str, job_id: str | None = None) -> RunSummary:
        run = await super().discover(source_id, job_id)
        with contextlib.suppress(Exception):  # metrics never fail a run
            self.metrics.record_discovery(self.store.get_source(source_id), run)
        return run

    async def metrics_text(self) -> bytes:
        return self.metrics.render()


class RayOwnerDirectory:
    """Finds owner actors by name (cached); used by the JobManager and drivers."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._handles: dict[int, Any] = {}

    def handle(self, shard: int) -> Any:
        h = self._handles.get(shard)
        if h is None:
            h = ray.get_actor(owner_name(shard), namespace=self.namespace)
            self._handles[shard] = h
        return h

    async def call(self, shard: int, method: str, *args: Any) -> Any:
        try:
            return await getattr(self.handle(shard), method).remote(*args)
        except ray.exceptions.RayTaskError as exc:
            raise (exc.cause if isinstance(exc.cause, BaseException) else exc) from None


class JobsActor(JobManager):
    def __init__(self, settings: dict[str, Any]) -> None:
        s = local_settings(settings, os.environ)
        # No sealer: only owners open secrets.
        super().__init__(s, RayOwnerDirectory(s.ray.namespace), open_store(s, sealed=False))


class HealthActor(HealthScheduler):
    def __init__(self, settings: dict[str, Any]) -> None:
        s = local_settings(settings, os.environ)
        super().__init__(s, RayOwnerDirectory(s.ray.namespace), open_store(s, sealed=False),
                         metrics=Metrics(ray_metrics=True))  # fmt: skip
        # Start the loop on creation and after every restart (runs once __init__ returns).
        ray.get_runtime_context().current_actor.start.remote()

    async def drain(self) -> list[Any]:
        return self.drain_events()


def health_scheduler_class(settings: DatawaveSettings) -> Any:
    return ray.remote(  # type: ignore[call-overload]
        max_restarts=-1, max_task_retries=-1, max_concurrency=100, num_cpus=0
    )(HealthActor)


def owner_class(settings: DatawaveSettings) -> Any:
    o = settings.owners
    opts: dict[str, Any] = {
        "max_restarts": o.max_restarts,
        "max_task_retries": o.max_task_retries,
        "max_concurrency": o.max_concurrency,
        "num_cpus": o.num_cpus,
    }
    if o.memory_mb:
        opts["memory"] = o.memory_mb * 1024 * 1024
    return ray.remote(**opts)(OwnerActor)


def job_manager_class(settings: DatawaveSettings) -> Any:
    return ray.remote(  # type: ignore[call-overload]
        max_restarts=-1, max_concurrency=1000, num_cpus=0
    )(JobsActor)


def deploy(settings: DatawaveSettings, *, detached: bool = True) -> dict[str, Any]:
    """Create (or find) the owner shards and the job manager; idempotent."""
    # Migrations run once, here; the owners prove their keys open the stored secrets.
    open_store(settings, migrate=True, sealed=False).close()
    ns = settings.ray.namespace
    payload = remote_settings(settings)  # store password masked: actor args live in the GCS
    lifetime = "detached" if detached else None
    owner_cls = owner_class(settings)
    handles: dict[str, Any] = {"owners": []}
    for shard in range(settings.owners.shards):
        handles["owners"].append(
            owner_cls.options(
                name=owner_name(shard), namespace=ns, lifetime=lifetime, get_if_exists=True
            ).remote(shard, payload)
        )
    handles["jobs"] = (
        job_manager_class(settings)
        .options(name=JOBS_NAME, namespace=ns, lifetime=lifetime, get_if_exists=True)
        .remote(payload)
    )
    handles["health"] = (
        health_scheduler_class(settings)
        .options(name=HEALTH_NAME, namespace=ns, lifetime=lifetime, get_if_exists=True)
        .remote(payload)
    )
    return handles


def wait_ready(handles: dict[str, Any], timeout_s: float = 120) -> list[dict[str, Any]]:
    pings = [h.ping.remote() for h in handles["owners"]]
    out = ray.get(pings, timeout=timeout_s)
    ray.get(handles["jobs"].topology.remote(), timeout=timeout_s)
    if "health" in handles:
        ray.get(handles["health"].start.remote(), timeout=timeout_s)
    return list(out)


def shutdown(settings: DatawaveSettings) -> int:
    """Kill the core actors of the namespace; returns how many were found."""
    ns = settings.ray.namespace
    n = 0
    for name in [HEALTH_NAME, JOBS_NAME] + [owner_name(i) for i in range(settings.owners.shards)]:
        try:
            ray.kill(ray.get_actor(name, namespace=ns), no_restart=True)
            n += 1
        except ValueError:
            continue
    return n
