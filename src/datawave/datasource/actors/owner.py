"""SourceOwner: the plain class behind each sharded owner actor.

One owner holds many sources (those whose id hashes to its shard): their connectors (and so
their connection pools), a per-source limit and a per-shard discovery limit. Every method is
idempotent and safe to retry: Ray re-runs a call on a restarted owner (``max_task_retries``).
The class knows nothing of Ray; :mod:`datawave.datasource.actors.factory` wraps it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from datawave.datasource.config import DatawaveSettings
from datawave.datasource.connectors import Connector, ConnectorRegistry, merge_secrets
from datawave.datasource.engines import DiscoveryEngine, SourceService
from datawave.datasource.engines.health import source_policy
from datawave.datasource.engines.probes import ProbePool, describe
from datawave.datasource.errors import Conflict, DatawaveError, NotFound
from datawave.datasource.models import (
    Event,
    HealthReport,
    HealthState,
    RunSummary,
    SourceRecord,
    SourceSpec,
    TestReport,
)
from datawave.datasource.security.secrets import SecretResolver
from datawave.datasource.store import AuditDraft, MetadataStore

__all__ = ["SourceOwner", "open_store"]

log = logging.getLogger(__name__)

#: Health checks use a source's credentials every few seconds: their ``credential.use`` entry
#: is written at most once per source per this many seconds (per owner process), while tests
#: and discoveries are audited every time.
CREDENTIAL_AUDIT_HEALTH_EVERY_S = 3600.0


def open_store(
    settings: DatawaveSettings,
    *,
    migrate: bool = False,
    environ: Mapping[str, str] | None = None,
    sealed: bool = True,
) -> MetadataStore:
    """The store of an owner: with a sealer whose keys are proven to open the stored secrets.

    Args:
        environ: this process's environment, read by its entry point (the ``env`` KEK provider).
        sealed: ``False`` for processes that must never hold a sealer (job manager, health).

    Raises:
        ConfigError: no key-encryption key, or one that does not match the store. In the dev
            profile a fresh file key is created only while the store holds no sealed secret.
    """
    store = MetadataStore.open(settings.resolved_store_url, migrate=migrate)
    if not sealed:
        return store
    try:
        store.attach_keyring(settings, environ=environ or {})
    except BaseException:
        store.close()
        raise
    return store


class SourceOwner:
    def __init__(
        self,
        shard: int,
        settings: Mapping[str, Any] | DatawaveSettings,
        *,
        environ: Mapping[str, str] | None = None,
        store: MetadataStore | None = None,
        registry: ConnectorRegistry | None = None,
    ) -> None:
        """Args:
        shard: the logical shard this owner answers for (``owner_shard`` of its sources).
        environ: this process's environment (the ``env`` KEK provider, ``env:`` references).
        store: a sealed store shared by the owners of one process (default: its own);
            a shared store is closed by whoever opened it, not by :meth:`close`.
        registry: the connector plugins, shared likewise.
        """
        self.settings = (
            settings
            if isinstance(settings, DatawaveSettings)
            else DatawaveSettings.model_validate(settings)
        )
        self.shard = shard
        self._owns_store = store is None
        self.store = store if store is not None else open_store(self.settings, environ=environ)
        self.registry = registry if registry is not None else ConnectorRegistry()
        self.resolver = SecretResolver(environ=environ)  # secret references resolve only here
        self.sources = SourceService(self.store, self.registry, shards=self.settings.owners.shards,
                                     resolver=self.resolver)  # fmt: skip
        self.events: list[Event] = []
        self.engine = DiscoveryEngine(self.store, sink=self.events.append, origin="core")
        self._connectors: dict[str, tuple[int, Connector]] = {}
        limits = self.settings.owners
        self._per_source: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(limits.per_source_concurrency)
        )
        self._discovery_lock: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._shard_discoveries = asyncio.Semaphore(limits.per_shard_discoveries)
        health = self.settings.health
        self.probes = ProbePool(
            lambda rec, secrets: self.registry.create(
                rec.type, merge_secrets(rec.config, secrets, resolver=self.resolver)
            ),
            self.store.get_secrets,
            per_host=health.per_host_concurrency,
            per_shard=health.per_shard_concurrency,
        )
        self.on_checks: Any = None  # hook: (records, reports) -> None, set by the actor (metrics)
        self.edge_router: Any = None  # hook: runs work of edge_site sources on the edge (actor)
        self.started_at = datetime.now(UTC)
        self.principal = f"system:owner-{shard}"  # how credential use is audited
        self.clock = time.monotonic
        self._health_audited: dict[str, float] = {}  # source id -> when its use was recorded
        # A restart means runs we had in flight died with the old process.
        self.interrupted = self.store.interrupt_running(
            shard=shard, reason=f"owner shard {shard} restarted"
        )
        if self.interrupted:
            log.warning("owner %s: marked %d runs interrupted", shard, self.interrupted)

    # -- helpers -----------------------------------------------------------------------------
    def _own(self, source_id: str) -> SourceRecord:
        rec = self.store.get_source(source_id)
        if rec.owner_shard != self.shard:
            raise NotFound(f"source {source_id} is owned by shard {rec.owner_shard}", kind="source")
        return rec

    def _connector(self, rec: SourceRecord) -> Connector:
        cached = self._connectors.get(rec.id)
        if cached is not None and cached[0] == rec.version:
            return cached[1]
        conn = self.sources.connector_for(rec)
        self._connectors[rec.id] = (rec.version, conn)
        if cached is not None:
            asyncio.get_running_loop().create_task(cached[1].close())
        return conn

    async def _drop_connector(self, source_id: str) -> None:
        cached = self._connectors.pop(source_id, None)
        if cached is not None:
            await cached[1].close()

    def _audit_credential_use(self, recs: Sequence[SourceRecord], purpose: str) -> None:
        """Record that the secrets of ``recs`` are about to be used to connect (blocking).

        Sources without secrets are skipped: there is no credential to account for.
        """
        drafts = [
            AuditDraft("credential.use", self.principal, source_id=r.id,
                       detail={"purpose": purpose, "fields": list(r.secret_fields)})
            for r in recs if r.secret_fields
        ]  # fmt: skip
        if drafts:
            self.store.append_audit_many(drafts)

    async def _audit_health_credentials(self, recs: Sequence[SourceRecord]) -> None:
        """Audit health-check credential use, once per source per
        :data:`CREDENTIAL_AUDIT_HEALTH_EVERY_S`; a store failure is logged, never fails checks."""
        now = self.clock()
        due = [
            r for r in recs
            if r.secret_fields and (
                r.id not in self._health_audited
                or now - self._health_audited[r.id] >= CREDENTIAL_AUDIT_HEALTH_EVERY_S
            )
        ]  # fmt: skip
        if not due:
            return
        try:
            await asyncio.to_thread(self._audit_credential_use, due, "health")
        except DatawaveError as exc:
            log.warning("owner %s: auditing credential use of %d sources failed (%s); "
                        "retried at the next check", self.shard, len(due), exc.code)  # fmt: skip
            return
        for r in due:
            self._health_audited[r.id] = now

    def drain_events(self) -> list[Event]:
        out, self.events[:] = list(self.events), []
        return out

    # -- API ---------------------------------------------------------------------------------
    async def ping(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "sources_cached": len(self._connectors),
            "health_probes": describe(self.probes),
            "started_at": self.started_at.isoformat(),
            "interrupted_on_start": self.interrupted,
        }

    async def register(self, spec: Mapping[str, Any], source_id: str) -> SourceRecord:
        parsed = SourceSpec.model_validate(dict(spec)) if not isinstance(spec, SourceSpec) else spec
        return await asyncio.to_thread(self.sources.register, parsed, source_id=source_id)

    async def update(
        self, source_id: str, patch: Mapping[str, Any], expected_version: int | None = None
    ) -> SourceRecord:
        self._own(source_id)
        rec = await asyncio.to_thread(
            self.sources.update, source_id, patch, expected_version=expected_version
        )
        await self._drop_connector(source_id)
        self.probes.forget_source(source_id)
        self._health_audited.pop(source_id, None)  # new credentials: audit their first use
        return rec

    async def remove(self, source_id: str, purge: bool = False) -> None:
        try:
            rec = self.store.get_source(source_id, include_deleted=purge)
        except NotFound:
            if purge:
                raise
            return  # already removed: idempotent
        await self._drop_connector(rec.id)
        self.probes.forget_source(rec.id)
        await asyncio.to_thread(self.store.delete_source, rec.id, purge=purge)

    async def test(self, source_id: str) -> TestReport:
        rec = self._own(source_id)
        if rec.edge_site and self.edge_router is not None:
            return await self.edge_router.test(rec.edge_site, rec.id)  # runs on the edge
        await asyncio.to_thread(self._audit_credential_use, [rec], "test")
        async with self._per_source[rec.id]:
            report = await self._connector(rec).test_connection()
        report = report.model_copy(update={"source_id": rec.id, "tested_at": datetime.now(UTC)})
        await asyncio.to_thread(self.store.record_test, rec.id, report)
        return report

    async def discover(self, source_id: str, job_id: str | None = None) -> RunSummary:
        rec = self._own(source_id)
        if rec.edge_site and self.edge_router is not None:
            return await self.edge_router.discover(rec.edge_site, rec.id, job_id)  # on the edge
        attempt = 1
        if job_id is not None:
            attempt = len(self.store.list_runs(rec.id, job_id=job_id)) + 1
        lock = self._discovery_lock[rec.id]
        if lock.locked() and job_id is None:
            raise Conflict(f"a discovery of {rec.name} is already running", kind="discovery")
        async with lock, self._shard_discoveries, self._per_source[rec.id]:
            await asyncio.to_thread(self._audit_credential_use, [rec], "discover")
            return await self.engine.run(
                rec.id,
                self._connector(rec),
                job_id=job_id,
                attempt=attempt,
                timeout_s=self.settings.discovery.run_timeout_s,
            )

    async def check_health(
        self, source_ids: list[str], timeouts: list[float] | None = None
    ) -> list[HealthReport]:
        """Check many sources in one call; one report per id, in order, never an exception.

        Sources sharing a target (same server, database and credentials) share one probe
        connection; probes are bounded per target host and per shard, and each check by its
        timeout (``timeouts``, else the source's ``health.timeout_s`` label or the setting).
        Sources with an ``edge_site`` are checked on their edge, one request per site, at the
        same time as the core's probes (the core cannot open their secrets).
        """
        found = await asyncio.to_thread(self.store.list_sources, ids=list(source_ids))
        by_id = {r.id: r for r in found}
        now = datetime.now(UTC)
        out: dict[int, HealthReport] = {}
        todo: list[tuple[int, SourceRecord, float]] = []
        on_edge: dict[str, list[tuple[int, SourceRecord, float]]] = defaultdict(list)
        for i, sid in enumerate(source_ids):
            rec = by_id.get(sid)
            if rec is None or rec.owner_shard != self.shard:
                why = (
                    f"no source {sid!r}"
                    if rec is None
                    else f"source {sid} is owned by shard {rec.owner_shard}"
                )
                out[i] = HealthReport(
                    source_id=sid, state=HealthState.UNKNOWN, error=why, checked_at=now
                )
                continue
            limit = timeouts[i] if timeouts else source_policy(rec, self.settings.health).timeout_s
            (on_edge[rec.edge_site] if rec.edge_site else todo).append((i, rec, limit))
        await self._audit_health_credentials([r for _, r, _ in todo])  # edges audit their own
        reports, *edge_parts = await asyncio.gather(
            self.probes.check_many([r for _, r, _ in todo], [t for _, _, t in todo]),
            *(self._check_on_edge(site, items) for site, items in on_edge.items()),
        )
        for (i, _, _), rep in zip(todo, reports, strict=True):
            out[i] = rep
        for items, part in zip(on_edge.values(), edge_parts, strict=True):
            for (i, _, _), rep in zip(items, part, strict=True):
                out[i] = rep
        if self.on_checks is not None and todo:
            try:
                self.on_checks([r for _, r, _ in todo], reports)
            except Exception:  # metrics must never fail a check
                log.exception("recording health metrics failed")
        return [out[i] for i in range(len(source_ids))]

    async def _check_on_edge(
        self, site: str, items: list[tuple[int, SourceRecord, float]]
    ) -> list[HealthReport]:
        """Health checks of one edge site's sources, run there; ``unknown`` (with the reason)
        when the edge cannot be asked or does not answer in time."""
        ids = [r.id for _, r, _ in items]
        try:
            if self.edge_router is None:
                raise DatawaveError("no edge gateway in this process")
            reports = list(await self.edge_router.check_health(site, ids, [t for _, _, t in items]))
            if [r.source_id for r in reports] != ids:
                raise DatawaveError("the gateway answered for other sources")
            return reports
        except Exception as exc:  # one report per id, never an exception
            why = "the edge gateway did not answer in time" if isinstance(exc, TimeoutError) \
                else str(exc) or type(exc).__name__  # fmt: skip
            log.warning("owner %s: health checks on edge site %s failed: %s", self.shard, site, why)
            now = datetime.now(UTC)
            return [HealthReport(source_id=sid, state=HealthState.UNKNOWN, checked_at=now,
                                 error=f"runs on edge site {site}: {why}") for sid in ids]  # fmt: skip

    async def close(self) -> None:
        for sid in list(self._connectors):
            await self._drop_connector(sid)
        await self.probes.close()
        if self._owns_store:
            self.store.close()
