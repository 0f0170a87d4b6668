"""ProbePool: cheap, real health checks for many sources that share few servers.

Ten thousand sources pointing at one PostgreSQL must not open ten thousand connections. The
pool keys a *probe* (a connector used only for ``check_health()``, keeping one connection) by
the target: connector type, config minus discovery-only fields, and a keyed digest of the
secrets (two sources with different passwords are different targets). Checks of sources with
the same target that overlap in time share one probe call (single flight), probes of one host
are bounded by a per-host semaphore, and all probes of a pool by a per-shard one. A probe that
exceeds its timeout is reported ``down`` and replaced; its stuck worker thread ends on the
driver's own socket timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from datawave.datasource.connectors import Connector
from datawave.datasource.models import HealthReport, HealthState, SourceRecord

__all__ = ["ProbePool", "ProbeStats", "Target", "describe", "target_of"]

log = logging.getLogger(__name__)

# Config fields that change what discovery reads, not which server a probe talks to.
_NOT_TARGET = frozenset({"filters", "step_timeout_s", "databases", "exclude_databases", "sample"})
_PROCESS_KEY = os.urandom(32)  # secrets digests are useless outside this process


@dataclass(frozen=True)
class Target:
    key: str  # identifies the probe; never contains a secret
    host: str | None  # what the per-host bound counts; None: a local file, no server to spare


def target_of(rec: SourceRecord, secrets: Mapping[str, str]) -> Target:
    public = {k: v for k, v in rec.config.items() if k not in _NOT_TARGET}
    digest = hmac.new(
        _PROCESS_KEY, json.dumps(dict(secrets), sort_keys=True).encode(), hashlib.sha256
    ).hexdigest()[:16]
    body = json.dumps([rec.type, public, digest], sort_keys=True, default=str)
    key = hashlib.blake2b(body.encode(), digest_size=12).hexdigest()
    host = rec.config.get("host")
    where = f"{rec.type}://{host}:{rec.config.get('port', '')}" if host else f"{rec.type}://local"
    return Target(key=key, host=where)


@dataclass
class ProbeStats:
    checks: int = 0
    probes: int = 0  # real probe calls (checks minus those that shared a probe)
    shared: int = 0
    timeouts: int = 0
    targets_opened: int = 0
    targets_evicted: int = 0


OpenProbe = Callable[[SourceRecord, Mapping[str, str]], Connector]
ReadSecrets = Callable[[str], Mapping[str, str]]


class ProbePool:
    """Per-owner cache of health probes, bounded per host and per shard.

    Args:
        open_probe: builds a connector for ``rec`` with its secrets merged in.
        read_secrets: the sealed secrets of a source (blocking; run on a worker thread).
        per_host: probes in flight per target host.
        per_shard: probes in flight in this pool.
        max_targets: probes kept open; the least recently used is closed beyond this.
    """

    def __init__(
        self,
        open_probe: OpenProbe,
        read_secrets: ReadSecrets,
        *,
        per_host: int = 8,
        per_shard: int = 128,
        max_targets: int = 2048,
    ) -> None:
        self._open_probe = open_probe
        self._read_secrets = read_secrets
        self._per_host_n = per_host
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._shard = asyncio.Semaphore(per_shard)
        self._max_targets = max_targets
        self._targets: dict[str, tuple[int, Target]] = {}  # source id -> (version, target)
        self._probes: OrderedDict[str, Connector] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[HealthReport]] = {}
        self.stats = ProbeStats()

    def __len__(self) -> int:
        return len(self._probes)

    async def check_many(
        self, records: Sequence[SourceRecord], timeouts: Sequence[float]
    ) -> list[HealthReport]:
        """Check ``records`` concurrently; never raises for a source problem."""
        missing = [r for r in records if self._targets.get(r.id, (-1,))[0] != r.version]
        if missing:
            secrets = await asyncio.to_thread(lambda: [self._secrets(r) for r in missing])
            for rec, sec in zip(missing, secrets, strict=True):
                self._targets[rec.id] = (rec.version, target_of(rec, sec))
        return list(await asyncio.gather(*(
            self.check(rec, t) for rec, t in zip(records, timeouts, strict=True)
        )))  # fmt: skip

    async def check(self, rec: SourceRecord, timeout_s: float) -> HealthReport:
        self.stats.checks += 1
        cached = self._targets.get(rec.id)
        if cached is None or cached[0] != rec.version:
            sec = await asyncio.to_thread(self._secrets, rec)
            cached = (rec.version, target_of(rec, sec))
            self._targets[rec.id] = cached
        target = cached[1]
        shared = self._inflight.get(target.key)
        if shared is not None:
            self.stats.shared += 1
            report = await asyncio.shield(shared)
        else:
            fut: asyncio.Future[HealthReport] = asyncio.get_running_loop().create_future()
            self._inflight[target.key] = fut
            try:
                report = await self._probe(rec, target, timeout_s)
                fut.set_result(report)
            except BaseException:  # _probe only raises when cancelled: waiters must not hang
                fut.cancel()
                raise
            finally:
                self._inflight.pop(target.key, None)
        return report.model_copy(update={"source_id": rec.id})

    def _secrets(self, rec: SourceRecord) -> Mapping[str, str]:
        return self._read_secrets(rec.id) if rec.secret_fields else {}

    async def _probe(self, rec: SourceRecord, target: Target, timeout_s: float) -> HealthReport:
        if target.host is None:  # local files: only the shard bound applies
            host: Any = contextlib.nullcontext()
        else:
            host = self._hosts.get(target.host)
            if host is None:
                host = self._hosts[target.host] = asyncio.Semaphore(self._per_host_n)
        async with self._shard, host:
            self.stats.probes += 1
            started = datetime.now(UTC)
            t0 = time.perf_counter()
            try:
                probe = self._probes.get(target.key)
                if probe is None:
                    secrets = (
                        await asyncio.to_thread(self._secrets, rec) if rec.secret_fields else {}
                    )
                    probe = self._open_probe(rec, secrets)
                    self._remember(target.key, probe)
                else:
                    self._probes.move_to_end(target.key)
                report = await asyncio.wait_for(probe.check_health(), timeout=timeout_s)
            except TimeoutError:
                self.stats.timeouts += 1
                self._forget(target.key)
                return HealthReport(
                    state=HealthState.DOWN,
                    latency_ms=round((time.perf_counter() - t0) * 1000, 3),
                    error=f"health check timed out after {timeout_s:g}s",
                    checked_at=started,
                )
            except Exception as exc:  # a broken plugin or config: the report carries it
                self._forget(target.key)
                return HealthReport(
                    state=HealthState.DOWN, error=f"{type(exc).__name__}: {exc}", checked_at=started
                )
        if report.checked_at is None:
            report = report.model_copy(update={"checked_at": started})
        return report

    def _remember(self, key: str, probe: Connector) -> None:
        self._probes[key] = probe
        self.stats.targets_opened += 1
        while len(self._probes) > self._max_targets:
            old_key, _ = next(iter(self._probes.items()))
            if old_key in self._inflight:
                break
            self._forget(old_key)
            self.stats.targets_evicted += 1

    def _forget(self, key: str) -> None:
        probe = self._probes.pop(key, None)
        if probe is not None:
            # Closing may wait on a stuck driver thread: never on the caller's time.
            asyncio.get_running_loop().create_task(_close_quietly(probe))

    def forget_source(self, source_id: str) -> None:
        """Drop the cached target of a source (after an update or removal)."""
        self._targets.pop(source_id, None)

    async def close(self) -> None:
        probes, self._probes = list(self._probes.values()), OrderedDict()
        await asyncio.gather(*(_close_quietly(p) for p in probes))


async def _close_quietly(probe: Connector) -> None:
    try:
        await asyncio.wait_for(probe.close(), timeout=30)
    except Exception as exc:
        log.debug("closing a health probe failed: %s", type(exc).__name__)


def describe(pool: ProbePool) -> dict[str, Any]:
    return {"targets": len(pool), **pool.stats.__dict__}
