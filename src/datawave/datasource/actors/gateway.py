"""The EdgeGateway as a Ray actor, and the router owners use to send edge work to it.

The gateway's logic is a plain class in ``edge/gateway.py``. Layers forbid ``actors`` to import
``edge`` (they are siblings), so the CLI hands :func:`deploy_gateway` a *builder*, a plain
function that returns the gateway; this module only hosts what it is given, adds Ray metrics
and a name, in the factory style of ``factory.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.util.metrics import Gauge

from datawave.datasource.actors.payload import local_settings, remote_settings
from datawave.datasource.config import DatawaveSettings
from datawave.datasource.errors import DatawaveError
from datawave.datasource.models import Event, HealthReport, RunSummary, TestReport

__all__ = ["GATEWAY_NAME", "EdgeRouter", "FleetMetrics", "GatewayActor", "deploy_gateway"]

#: The gateway is hosted by the core-services actor (``factory.CORE_NAME``), under its name.
GATEWAY_NAME = "datawave-core"
#: How long an edge call may take beyond the edge's own limits before the caller gives up.
GATEWAY_GRACE_S = 30.0
#: What ``check_health`` on an edge may take: seconds per check and checks at once. They mirror
#: ``edge/protocol.py``, which this layer cannot import (a unit test keeps them equal).
HEALTH_TIMEOUT_S = 10.0
HEALTH_CONCURRENCY = 8


class FleetMetrics:
    """Ray gauges of the fleet, refreshed on every heartbeat and link change."""

    def __init__(self) -> None:
        self.nodes = Gauge("datawave_edge_nodes", "Edge nodes by link state", tag_keys=("state",))
        keys = ("site", "node")
        self.lag = Gauge(
            "datawave_edge_lag_seconds", "Age of the oldest unsynced record", tag_keys=keys
        )
        self.queue = Gauge(
            "datawave_edge_queue_depth", "Records waiting in the outbox", tag_keys=keys
        )
        self.age = Gauge(
            "datawave_edge_heartbeat_age_seconds", "Since the last heartbeat", tag_keys=keys
        )

    def update(self, fleet: list[Any]) -> None:
        counts: dict[str, int] = {"up": 0, "offline": 0, "unknown": 0}
        now = time.time()
        for n in fleet:
            counts[n.link_state] = counts.get(n.link_state, 0) + 1
            tags = {"site": n.site, "node": n.node}
            self.lag.set(float(n.lag_s or 0.0), tags=tags)
            self.queue.set(float(n.queue_depth or 0), tags=tags)
            if n.last_heartbeat_at is not None:
                self.age.set(max(0.0, now - n.last_heartbeat_at.timestamp()), tags=tags)
        for state, count in counts.items():
            self.nodes.set(float(count), tags={"state": state})


class GatewayActor:
    """Hosts the gateway ``build(settings, state, sink=..., on_fleet_change=..., environ=...)``
    returns."""

    def __init__(self, settings: dict[str, Any], state: dict[str, Any], build: Callable[..., Any]):
        self.settings = local_settings(settings, os.environ)  # store password from this process
        self.events: list[Event] = []
        self.metrics = FleetMetrics()
        self.gateway = build(self.settings, state, sink=self.events.append,
                             on_fleet_change=self.metrics.update, environ=os.environ)  # fmt: skip
        self._started = False
        # Connect on creation and after every restart (runs once __init__ returns).
        ray.get_runtime_context().current_actor.start.remote()

    async def start(self) -> bool:
        if not self._started:
            await self.gateway.start()
            self._started = True
        return True

    async def test(self, site: str, source_id: str) -> TestReport:
        report: TestReport = await self.gateway.test(site, source_id)
        return report

    async def discover(self, site: str, source_id: str, job_id: str | None = None) -> RunSummary:
        run: RunSummary = await self.gateway.discover(site, source_id, job_id=job_id)
        return run

    async def check_health(
        self, site: str, source_ids: list[str], timeouts: list[float] | None = None
    ) -> list[HealthReport]:
        reports: list[HealthReport] = await self.gateway.check_health(
            site, source_ids, timeouts=timeouts
        )
        return reports

    async def command(self, site: str, kind: str, args: dict[str, Any]) -> str:
        cid: str = await self.gateway.command(site, kind, args)
        return cid

    async def stats(self) -> dict[str, Any]:
        return {"counters": dict(self.gateway.counters),
                "rejected": dict(self.gateway.rejected_by_reason)}  # fmt: skip

    async def drain(self) -> list[Event]:
        out, self.events[:] = list(self.events), []
        return out


class EdgeRouter:
    """What an owner calls for a source with an ``edge_site``: the work runs on the edge."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._handle: Any = None

    def _gateway(self) -> Any:
        if self._handle is None:
            try:
                self._handle = ray.get_actor(GATEWAY_NAME, namespace=self.namespace)
            except ValueError:
                raise DatawaveError(
                    "this source runs on an edge site, but the core has no edge gateway "
                    "(start the core with `datawave up`)"
                ) from None
        return self._handle

    async def test(self, site: str, source_id: str) -> TestReport:
        report: TestReport = await self._gateway().test.remote(site, source_id)
        return report

    async def discover(self, site: str, source_id: str, job_id: str | None = None) -> RunSummary:
        run: RunSummary = await self._gateway().discover.remote(site, source_id, job_id)
        return run

    async def check_health(
        self, site: str, source_ids: list[str], timeouts: list[float] | None = None
    ) -> list[HealthReport]:
        """Health checks on the edge now; one report per id (``unknown`` when it is offline).

        Bounded: the gateway gives up on a silent edge after the checks' timeouts, and this
        call after that plus :data:`GATEWAY_GRACE_S` (a gateway that does not answer).
        """
        waves = -(-len(source_ids) // HEALTH_CONCURRENCY)
        limit = max(timeouts or [HEALTH_TIMEOUT_S]) * waves + GATEWAY_GRACE_S
        ref = self._gateway().check_health.remote(site, source_ids, timeouts)
        reports: list[HealthReport] = await asyncio.wait_for(ref, timeout=limit)
        return reports


def deploy_gateway(
    settings: DatawaveSettings, state: dict[str, Any], build: Callable[..., Any], *,
    detached: bool = True,
) -> Any:  # fmt: skip
    """Create (or find) the gateway actor and wait until it is connected to the hub."""
    opts: dict[str, Any] = {"max_restarts": -1, "max_task_retries": -1, "max_concurrency": 1000,
                            "num_cpus": 0}  # fmt: skip
    cls: Any = ray.remote(**opts)(GatewayActor)
    handle = cls.options(
        name=GATEWAY_NAME, namespace=settings.ray.namespace,
        lifetime="detached" if detached else None, get_if_exists=True,
    ).remote(remote_settings(settings), state, build)  # fmt: skip
    ray.get(handle.start.remote(), timeout=60)
    return handle


def shutdown_gateway(settings: DatawaveSettings) -> bool:
    try:
        ray.kill(ray.get_actor(GATEWAY_NAME, namespace=settings.ray.namespace), no_restart=True)
    except ValueError:
        return False
    return True
