"""The one place where plain classes become Ray actors (cf. Ray Serve's controller factory).

Process layout of a core (``owners.processes``; ``actors/README.md`` draws it)::

    datawave-core        CoreActor: the job manager, the health scheduler, the event hub, the
                         edge gateway, and with processes = 0 (one machine) every owner shard
    datawave-owner-{p}   OwnerActor p (processes = P >= 1): the owners of shards p, p + P, ...

A source's logical shard (``owner_shard``, a jump-consistent hash of its id) never changes: the
layout only decides which process hosts that shard's :class:`SourceOwner`. Every call to an
owner names its shard (``call(shard, method, *args)``), so a process hosting several shards
serves each exactly as a process of its own would: the same limits per shard, the same check
that a source belongs to the shard, the same idempotent and retried calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import ray

from datawave.datasource.actors.gateway import EdgeRouter, GatewayActor
from datawave.datasource.actors.health import HealthScheduler
from datawave.datasource.actors.jobs import JobManager, OwnerDirectory
from datawave.datasource.actors.metrics import Metrics
from datawave.datasource.actors.owner import SourceOwner, open_store
from datawave.datasource.actors.payload import local_settings, remote_settings
from datawave.datasource.config import DatawaveSettings
from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.errors import DatawaveError, NotFound
from datawave.datasource.models import Event, HealthReport, JobView, RunSummary, TestReport

__all__ = [
    "CORE_NAME",
    "HEALTH_NAME",
    "JOBS_NAME",
    "CoreActor",
    "EventHub",
    "HostedShards",
    "OwnerActor",
    "RayOwnerDirectory",
    "deploy",
    "hosted_shards",
    "owner_actor_name",
    "owner_name",
    "shutdown",
    "wait_ready",
]

log = logging.getLogger(__name__)

#: The core-services actor. The job manager, the health scheduler and the edge gateway live in
#: it, so their names are aliases of this one (``GATEWAY_NAME`` in ``gateway.py`` too):
#: ``ray.get_actor(JOBS_NAME)`` and ``ray.get_actor(HEALTH_NAME)`` return the same handle,
#: which answers the methods of all of them.
CORE_NAME = "datawave-core"
JOBS_NAME = CORE_NAME
HEALTH_NAME = CORE_NAME

#: What ``call(shard, method, ...)`` may run on a hosted :class:`SourceOwner`.
OWNER_METHODS = frozenset(
    {"ping", "register", "update", "remove", "test", "discover", "check_health"}
)


def owner_name(process: int) -> str:
    """Actor name of owner process ``process`` (layouts with ``owners.processes >= 1``)."""
    return f"datawave-owner-{process}"


def owner_actor_name(shard: int, processes: int) -> str:
    """The actor that hosts logical ``shard`` when the core runs ``processes`` owner processes."""
    return CORE_NAME if processes == 0 else owner_name(shard % processes)


def hosted_shards(process: int | None, settings: DatawaveSettings) -> list[int]:
    """The logical shards owner process ``process`` hosts (``None``: the core process)."""
    o = settings.owners
    if o.process_count == 0:
        return list(range(o.shards)) if process is None else []
    return [] if process is None else list(range(process, o.shards, o.process_count))


#: A pass over at least this many sources is followed by :func:`release_heap`.
LARGE_PASS = 1000


def release_heap() -> None:
    """Give the heap pages freed since the last call back to the OS (glibc ``malloc_trim``).

    A sweep of 10,000 sources allocates ~100 MB of short-lived reports and rows; without this
    the process keeps most of it resident until the next sweep reuses it. A few ms.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _after_pass(summary: Mapping[str, Any]) -> None:
    if int(summary.get("checked", 0)) >= LARGE_PASS:
        release_heap()


class EventHub(Protocol):
    """The ring buffer API replicas long-poll (``serve/events.py``; handed in by the caller,
    as layers forbid ``actors`` to import ``serve``)."""

    def publish(self, events: Iterable[Any]) -> int: ...

    async def since(
        self, seq: int, timeout_s: float = 10.0, limit: int = 1000
    ) -> dict[str, Any]: ...


class HostedShards:
    """The :class:`SourceOwner` of every shard one process hosts. They share the process's
    store, connector plugins and metrics; each keeps its own limits, probes and state.

    Implements :class:`~datawave.datasource.actors.jobs.OwnerDirectory` for in-process callers.
    """

    def __init__(self, shards: Sequence[int], settings: DatawaveSettings, metrics: Metrics) -> None:
        self.metrics = metrics
        self.owners: dict[int, SourceOwner] = {}
        self.store = open_store(settings, environ=os.environ) if shards else None
        registry = ConnectorRegistry()
        router = EdgeRouter(settings.ray.namespace)
        for shard in shards:
            owner = SourceOwner(shard, settings, environ=os.environ, store=self.store,
                                registry=registry)  # fmt: skip
            owner.on_checks = metrics.record_checks
            owner.edge_router = router
            self.owners[shard] = owner

    async def call(self, shard: int, method: str, *args: Any) -> Any:
        """Run ``method`` (one of :data:`OWNER_METHODS`) on the owner of ``shard``."""
        if method not in OWNER_METHODS:
            raise NotFound(f"owners have no method {method!r}", kind="method")
        owner = self.owners.get(shard)
        if owner is None:
            raise NotFound(f"shard {shard} is not hosted here (this process hosts "
                           f"{sorted(self.owners) or 'none'})", kind="shard")  # fmt: skip
        out = await getattr(owner, method)(*args)
        if method == "discover":
            with contextlib.suppress(Exception):  # metrics never fail a run
                self.metrics.record_discovery(owner.store.get_source(args[0]), out)
        return out

    def drain(self) -> list[Event]:
        out: list[Event] = []
        for owner in self.owners.values():
            out.extend(owner.drain_events())
        return out

    async def close(self) -> None:
        for owner in self.owners.values():
            await owner.close()
        if self.store is not None:
            self.store.close()


class OwnerActor:
    """An owner process of its own (``owners.processes >= 1``): the shards it hosts."""

    def __init__(self, shards: list[int], settings: dict[str, Any]) -> None:
        # The actor process is an entry point: its environment (from the raylet) supplies the
        # store password, an `env` KEK and `env:` secret references; Ray never carries them.
        s = local_settings(settings, os.environ)
        self.metrics = Metrics(ray_metrics=True)
        self.shards = HostedShards(shards, s, self.metrics)

    async def call(self, shard: int, method: str, *args: Any) -> Any:
        return await self.shards.call(shard, method, *args)

    async def ping(self) -> dict[str, Any]:
        """This process: its pid and the shards it hosts (``call(shard, "ping")`` for one)."""
        return {"pid": os.getpid(), "shards": sorted(self.shards.owners)}

    async def drain(self) -> list[Event]:
        return self.shards.drain()

    async def metrics_text(self) -> bytes:
        """This process's metrics: every hosted shard's together (scrape each process once)."""
        return self.metrics.render()


class RayOwnerDirectory:
    """Finds the actor hosting a shard by name (cached); used by the core and by drivers."""

    def __init__(self, namespace: str, processes: int) -> None:
        self.namespace = namespace
        self.processes = processes
        self._handles: dict[str, Any] = {}

    def handle(self, shard: int) -> Any:
        """The actor hosting ``shard``; ``ValueError`` when it does not run."""
        name = owner_actor_name(shard, self.processes)
        h = self._handles.get(name)
        if h is None:
            h = self._handles[name] = ray.get_actor(name, namespace=self.namespace)
        return h

    def forget(self, shard: int) -> None:
        """Drop a cached handle (look the actor up again next time)."""
        self._handles.pop(owner_actor_name(shard, self.processes), None)

    def ref(self, shard: int, method: str, *args: Any) -> Any:
        """The object ref of ``method`` on the owner of ``shard`` (for ``ray.get``)."""
        return self.handle(shard).call.remote(shard, method, *args)

    async def call(self, shard: int, method: str, *args: Any) -> Any:
        try:
            return await self.ref(shard, method, *args)
        except ray.exceptions.RayTaskError as exc:
            raise (exc.cause if isinstance(exc.cause, BaseException) else exc) from None


#: ``(state, build)`` of the edge gateway the core hosts: ``build(settings, state, sink=...,
#: on_fleet_change=..., environ=...)`` returns it (see ``gateway.py``, ``edge/hub.py``).
GatewaySpec = tuple[dict[str, Any], Callable[..., Any]]


class CoreActor:
    """The core services in one process: the job manager, the health scheduler, the event hub
    API replicas long-poll, the edge gateway and, with ``owners.processes = 0``, every owner
    shard. Each is the plain class it always was; this class only forwards Ray calls to them
    under one name (:data:`CORE_NAME`). Their method names do not collide, except ``start``
    and ``drain``, which act on all of them.

    Args:
        settings: the remote settings payload.
        hub: builds the event hub; without one, :meth:`since` says the core has none.
        gateway: the edge gateway to host (``datawave up``); without one, edge calls fail.
    """

    def __init__(
        self,
        settings: dict[str, Any],
        hub: Callable[[], EventHub] | None = None,
        gateway: GatewaySpec | None = None,
    ) -> None:
        s = local_settings(settings, os.environ)
        self.settings = s
        self.metrics = Metrics(ray_metrics=True)  # the owners' and the scheduler's, one registry
        self.shards = HostedShards(hosted_shards(None, s), s, self.metrics)
        self.directory: OwnerDirectory = (
            self.shards
            if s.owners.process_count == 0
            else RayOwnerDirectory(s.ray.namespace, s.owners.process_count)
        )
        self.store = open_store(s, sealed=False)  # the services' store: no sealer
        self.jobs = JobManager(s, self.directory, self.store)
        self.health = HealthScheduler(s, self.directory, self.store, metrics=self.metrics,
                                      after_pass=_after_pass)  # fmt: skip
        self.hub = hub() if hub is not None else None
        self._pump: asyncio.Task[None] | None = None
        self._missing_at: dict[int, float] = {}
        self._starting = asyncio.Lock()  # the gateway's start is not safe to run twice at once
        self.gateway = GatewayActor(settings, *gateway) if gateway is not None else None
        # Start the loops on creation and after every restart (runs once __init__ returns).
        ray.get_runtime_context().current_actor.start.remote()

    # -- lifecycle and owners ----------------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        """Start the health loop and connect the gateway (idempotent)."""
        async with self._starting:
            if self.gateway is not None:
                await self.gateway.start()
            return await self.health.start()

    async def call(self, shard: int, method: str, *args: Any) -> Any:
        """Run an owner method of ``shard``, when this process hosts it."""
        return await self.shards.call(shard, method, *args)

    async def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "shards": sorted(self.shards.owners)}

    async def drain(self) -> list[Event]:
        """Events of this process: its owners', the scheduler's and the gateway's. The event
        hub drains them once an API reader follows it: exactly one reader may drain (follow
        events with :meth:`since`)."""
        out = self.shards.drain() + self.health.drain_events()
        if self.gateway is not None:
            out += await self.gateway.drain()
        return out

    async def metrics_text(self) -> bytes:
        return self.metrics.render()

    # -- job manager -------------------------------------------------------------------------
    async def submit(self, selector: Any, job_id: str | None = None) -> JobView:
        return await self.jobs.submit(selector, job_id)

    async def get(self, job_id: str, with_items: bool = False) -> JobView:
        return await self.jobs.get(job_id, with_items)

    async def wait(self, job_id: str, timeout_s: float | None = None) -> JobView:
        return await self.jobs.wait(job_id, timeout_s)

    async def cancel(self, job_id: str) -> JobView:
        return await self.jobs.cancel(job_id)

    async def topology(self) -> dict[str, Any]:
        return {**await self.jobs.topology(), "processes": self.settings.owners.process_count}

    # -- health scheduler --------------------------------------------------------------------
    async def stop(self) -> None:
        await self.health.stop()

    async def tick(self) -> dict[str, Any]:
        return await self.health.tick()

    async def refresh(self) -> int:
        return await self.health.refresh()

    async def sweep(self, evaluate: bool = True) -> dict[str, Any]:
        return await self.health.sweep(evaluate)

    async def ingest(self, reports: list[HealthReport]) -> int:
        return await self.health.ingest(reports)

    async def set_edge_links(self, links: Mapping[str, str]) -> None:
        await self.health.set_edge_links(links)

    async def evaluate(self) -> dict[str, int]:
        return await self.health.evaluate()

    async def status(self) -> dict[str, Any]:
        return await self.health.status()

    async def deliveries(self) -> list[dict[str, Any]]:
        return await self.health.deliveries()

    # -- edge gateway ------------------------------------------------------------------------
    def _gateway(self) -> GatewayActor:
        if self.gateway is None:
            raise DatawaveError("this core hosts no edge gateway (start it with `datawave up`)")
        return self.gateway

    async def test(self, site: str, source_id: str) -> TestReport:
        return await self._gateway().test(site, source_id)

    async def discover(self, site: str, source_id: str, job_id: str | None = None) -> RunSummary:
        return await self._gateway().discover(site, source_id, job_id)

    async def check_health(
        self, site: str, source_ids: list[str], timeouts: list[float] | None = None
    ) -> list[HealthReport]:
        return await self._gateway().check_health(site, source_ids, timeouts)

    async def command(self, site: str, kind: str, args: dict[str, Any]) -> str:
        return await self._gateway().command(site, kind, args)

    async def stats(self) -> dict[str, Any]:
        return await self._gateway().stats()

    # -- event hub ---------------------------------------------------------------------------
    async def since(self, seq: int, timeout_s: float = 10.0, limit: int = 1000) -> dict[str, Any]:
        """Events after ``seq`` (see ``serve/events.py``); the first reader starts the pump."""
        if self.hub is None:
            raise DatawaveError("this core has no event hub (deploy it with one)")
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._pump_forever(self.hub))
        return await self.hub.since(seq, timeout_s, limit)

    async def stop_pump(self) -> None:
        """Stop moving events into the hub (the next :meth:`since` starts it again): until
        then :meth:`drain` and the owners' own ``drain`` are their callers' again."""
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None

    async def _pump_forever(self, hub: EventHub, interval_s: float = 0.25) -> None:
        """Move the events of this process and of every owner process into the hub."""

        async def one(drain: Callable[[], Awaitable[list[Any]]]) -> list[Any]:
            try:
                return await asyncio.wait_for(drain(), 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an owner restarting: try again on the next tick
                log.debug("event drain failed: %s", exc)
                return []

        while True:
            for batch in await asyncio.gather(*(one(d) for d in self._drainers())):
                if batch:
                    hub.publish(batch)
            await asyncio.sleep(interval_s)

    def _drainers(self) -> list[Callable[[], Awaitable[list[Any]]]]:
        out: list[Callable[[], Awaitable[list[Any]]]] = [self.drain]
        if not isinstance(self.directory, RayOwnerDirectory):
            return out
        now = time.monotonic()
        for process in range(self.settings.owners.process_count):
            if now - self._missing_at.get(process, -1e9) < 5.0:
                continue  # looked for it recently
            try:
                handle = self.directory.handle(process)  # process p hosts shard p
            except ValueError:
                self._missing_at[process] = now
                continue
            out.append(handle.drain.remote)
        return out


def _actor_options(settings: DatawaveSettings, *, shards: int) -> dict[str, Any]:
    """Ray options of a process hosting ``shards`` owner shards (0: core services only)."""
    o = settings.owners
    if not shards:  # only waits on others (long polls, bulk jobs): many calls, no reservation
        return {"max_restarts": -1, "max_task_retries": -1, "max_concurrency": 1000,
                "num_cpus": 0}  # fmt: skip
    opts: dict[str, Any] = {
        "max_restarts": o.max_restarts,
        "max_task_retries": o.max_task_retries,
        # Per shard: a process hosting several serves each as fully as a process of its own.
        "max_concurrency": o.max_concurrency * shards + 1000,
        "num_cpus": o.num_cpus,
    }
    if o.memory_mb:
        opts["memory"] = o.memory_mb * 1024 * 1024
    return opts


def deploy(
    settings: DatawaveSettings,
    *,
    detached: bool = True,
    hub: Callable[[], EventHub] | None = None,
    gateway: GatewaySpec | None = None,
) -> dict[str, Any]:
    """Create (or find) the core-services actor and the owner processes; idempotent.

    Args:
        hub: builds the event hub the API follows (``serve.events.EventHub``).
        gateway: ``(state, build)`` of the edge gateway the core hosts (``datawave up``).
    """
    # Migrations run once, here; the owners prove their keys open the stored secrets.
    open_store(settings, migrate=True, sealed=False).close()
    ns = settings.ray.namespace
    payload = remote_settings(settings)  # store password masked: actor args live in the GCS
    lifetime = "detached" if detached else None
    owners = []
    for p in range(settings.owners.process_count):
        shards = hosted_shards(p, settings)
        cls: Any = ray.remote(**_actor_options(settings, shards=len(shards)))(OwnerActor)
        owners.append(cls.options(name=owner_name(p), namespace=ns, lifetime=lifetime,
                                  get_if_exists=True).remote(shards, payload))  # fmt: skip
    core_opts = _actor_options(settings, shards=len(hosted_shards(None, settings)))
    core_cls: Any = ray.remote(**core_opts)(CoreActor)
    core = core_cls.options(
        name=CORE_NAME, namespace=ns, lifetime=lifetime, get_if_exists=True
    ).remote(payload, hub, gateway)
    return {"owners": owners, "core": core, "shards": settings.owners.shards,
            "processes": settings.owners.process_count}  # fmt: skip


def wait_ready(handles: dict[str, Any], timeout_s: float = 120) -> list[dict[str, Any]]:
    """Wait for the core services and every shard; one ping per logical shard, in order."""
    core, owners, processes = handles["core"], handles["owners"], handles["processes"]
    pings = [
        (owners[s % processes] if processes else core).call.remote(s, "ping")
        for s in range(handles["shards"])
    ]
    out = ray.get(pings, timeout=timeout_s)
    ray.get(core.start.remote(), timeout=timeout_s)
    return list(out)


def shutdown(settings: DatawaveSettings) -> int:
    """Kill the core actors of the namespace; returns how many were found."""
    ns = settings.ray.namespace
    n = 0
    for name in [CORE_NAME] + [owner_name(p) for p in range(settings.owners.process_count)]:
        try:
            ray.kill(ray.get_actor(name, namespace=ns), no_restart=True)
            n += 1
        except ValueError:
            continue
    return n
