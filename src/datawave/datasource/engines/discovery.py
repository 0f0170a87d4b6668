"""The discovery engine: run a connector, diff against the store, write only what changed.

Rules that make a run safe to retry and safe to fail:
- nothing is written until the connector has returned a whole result; the change set is then
  applied in one transaction (a killed process leaves the previous metadata intact);
- an object is removed only when the listing of its parent completed without it;
- asset ids are deterministic, so a retried or replayed run lands on the same rows;
- an unchanged source produces an empty change set: zero rows written.

Rediscovery builds nothing unchanged: the engine hands the connector the signatures stored by
the previous run (``discover(known=...)``); tables whose catalog rows still sign the same come
back as ``unchanged`` keys with fresh statistics, count as listed (never deleted), and only the
others are fingerprinted and diffed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from datetime import UTC, datetime
from functools import partial
from typing import Any

from datawave.datasource.connectors import Connector, gc_paused
from datawave.datasource.engines.drift import diff_tables, table_added, table_removed
from datawave.datasource.engines.fingerprint import fingerprint, snapshot_fingerprint
from datawave.datasource.errors import ConnectorError, DatawaveError, redact
from datawave.datasource.models import (
    DiscoveryResult,
    Event,
    RunStatus,
    RunSummary,
    TableInfo,
    TableKind,
    columns_json,
    qualified_name,
)
from datawave.datasource.store import (
    ChangeSet,
    MetadataStore,
    SnapshotRow,
    TableRow,
    TableState,
    asset_id,
)

__all__ = ["DiscoveryEngine", "plan_changes"]

log = logging.getLogger(__name__)

Sink = Callable[[Event], None]
TableKey = tuple[str, str, str]

_VIEWS = frozenset({TableKind.VIEW.value, TableKind.MATERIALIZED_VIEW.value})

_Begun = tuple[dict[TableKey, TableState], dict[str, str]]


class _StoredSignatures(Mapping[str, str]):
    """The signatures of the stored state, loaded while the connector already connects and
    queries: the first lookup waits for them (connectors look them up once their catalog rows
    are in, a few round trips later). A store failure raises here too."""

    def __init__(self, begun: Future[_Begun]) -> None:
        self._begun = begun
        self._known: dict[str, str] | None = None

    def _resolve(self) -> dict[str, str]:
        if self._known is None:
            self._known = self._begun.result()[1]
        return self._known

    def __getitem__(self, key: str) -> str:
        return self._resolve()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._resolve().get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolve())

    def __len__(self) -> int:
        return len(self._resolve())


def _fill(future: Future[_Begun], fn: Callable[[], _Begun]) -> None:
    if future.set_running_or_notify_cancel():
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to whoever waits, as it is
            future.set_exception(exc)


def _stats_changed(old: int | None, new: int | None) -> bool:
    if old is None or new is None:
        return old != new
    return abs(new - old) > 0.1 * max(abs(old), 1)


def plan_changes(
    store: MetadataStore,
    source_id: str,
    run_id: str,
    result: DiscoveryResult,
    now: datetime,
    *,
    state: Mapping[TableKey, TableState] | None = None,
) -> tuple[ChangeSet, dict[str, int]]:
    """Compare ``result`` with what the store holds and return the minimal change set.

    Args:
        state: the store's table state if the caller already loaded it (the one the
            ``known`` signatures given to the connector came from); loaded here otherwise.
    """
    cs = ChangeSet(source_id=source_id, run_id=run_id, now=now)
    if state is None:
        state = store.load_table_state(source_id)
    old_dbs = store.load_databases(source_id)
    old_schemas = store.load_schemas(source_id)
    first_run = not state and not old_dbs

    # Databases and schemas: upsert changed, delete only on a complete parent listing.
    seen_dbs = {d.name: d for d in result.databases}
    cs.upsert_databases = [d for n, d in seen_dbs.items() if old_dbs.get(n) != d]
    gone_dbs = set(old_dbs) - set(seen_dbs) if result.databases_complete else set()
    cs.delete_databases = sorted(gone_dbs)
    seen_schemas = {(s.database, s.name): s for s in result.schemas}
    cs.upsert_schemas = [s for k, s in seen_schemas.items() if old_schemas.get(k) != s]
    gone_schemas = {
        k for k in old_schemas
        if k not in seen_schemas and (k[0] in gone_dbs or k[0] in result.complete_databases)
    }  # fmt: skip
    cs.delete_schemas = sorted(gone_schemas)

    # Tables.
    fps: dict[str, str] = {}
    changed_ids: dict[int, TableInfo] = {}
    seen_keys: set[tuple[str, str, str]] = set()
    counters = {"tables": 0, "columns": 0, "views": 0, "partitions": 0, "added": 0,
                "changed": 0, "unchanged": 0, "removed": 0, "skipped": 0}  # fmt: skip
    signatures = result.signatures
    # Tables often share their very column records (partitions, tenant copies of a schema; a
    # connector may intern equal columns): serialize each distinct list once.
    docs: dict[tuple[int, ...], bytes] = {}
    if result.unchanged:
        # Present and structurally as stored: no record was built, none is needed.
        for key, stored in state.items():
            qname = qualified_name(*key)
            stats = result.unchanged.get(qname)
            if stats is None:
                continue
            seen_keys.add(key)
            fps[qname] = stored.fingerprint
            counters["tables"] += 1
            counters["columns"] += stored.column_count
            counters["unchanged"] += 1
            counters["skipped"] += 1
            if stored.kind in _VIEWS:
                counters["views"] += 1
            elif stored.kind == TableKind.PARTITION.value:
                counters["partitions"] += 1
            estimate, size = stats
            if _stats_changed(stored.row_estimate, estimate) or _stats_changed(
                stored.size_bytes, size
            ):
                cs.stats_updates.append((stored.id, estimate, size))
    for t in result.tables:
        key = (t.database, t.schema_name, t.name)
        seen_keys.add(key)
        shared = tuple(map(id, t.columns))  # the records live as long as ``result``
        doc = docs.get(shared)
        if doc is None:
            doc = docs[shared] = columns_json(t.columns)  # hashed here, stored as is
        fp = fingerprint(t, doc)
        qname = t.qualified_name
        fps[qname] = fp
        signature = signatures.get(qname)
        counters["tables"] += 1
        counters["columns"] += len(t.columns)
        if t.kind in (TableKind.VIEW, TableKind.MATERIALIZED_VIEW):
            counters["views"] += 1
        elif t.kind is TableKind.PARTITION:
            counters["partitions"] += 1
        old = state.get(key)
        if old is None:
            tid = asset_id(source_id, *key)
            cs.insert_tables.append(TableRow(tid, t, fp, signature, doc))
            counters["added"] += 1
            if not first_run:
                cs.drift.append(table_added(source_id, run_id, t))
        elif old.fingerprint != fp:
            cs.replace_tables.append(TableRow(old.id, t, fp, signature, doc))
            changed_ids[old.id] = t
            counters["changed"] += 1
        else:
            counters["unchanged"] += 1
            if _stats_changed(old.row_estimate, t.row_estimate) or _stats_changed(
                old.size_bytes, t.size_bytes
            ):
                cs.stats_updates.append((old.id, t.row_estimate, t.size_bytes))
            # Same fingerprint from rows that sign differently (a change the fingerprint leaves
            # out, a new signature version, the first run after migration 0005): store the new
            # signature so the next run skips the table. Without one (a connector that does
            # not sign), the stored signature still describes this very record: keep it.
            if signature is not None and signature != old.signature:
                cs.signature_updates.append((old.id, signature))
    for key, old in state.items():
        if key in seen_keys:
            continue
        db, schema, _ = key
        confirmed = (
            (db, schema) in result.complete_schemas
            or (db, schema) in gone_schemas
            or (db in gone_dbs)
        )
        if confirmed:
            cs.delete_tables.append(old.id)
            cs.drift.append(table_removed(source_id, run_id, qualified_name(*key)))
            counters["removed"] += 1
        else:
            fps[qualified_name(*key)] = old.fingerprint  # kept: its parent was not fully listed

    if changed_ids:
        previous = store.load_tables(list(changed_ids))
        for tid, new in changed_ids.items():
            if tid in previous:
                cs.drift.extend(diff_tables(source_id, run_id, previous[tid], new))

    structural = bool(
        cs.insert_tables or cs.replace_tables or cs.delete_tables or cs.upsert_schemas
        or cs.delete_schemas or cs.upsert_databases or cs.delete_databases
    )  # fmt: skip
    if structural:
        cs.snapshot = SnapshotRow(str(uuid.uuid4()), snapshot_fingerprint(fps), fps)
    counters["drift_events"] = len(cs.drift)
    counters["breaking_drift"] = sum(1 for e in cs.drift if e.breaking)
    return cs, counters


class DiscoveryEngine:
    """Runs discoveries for one process (an owner actor, an edge agent, a CLI)."""

    def __init__(self, store: MetadataStore, *, sink: Sink | None = None, origin: str = "core"):
        self.store = store
        self.sink = sink
        self.origin = origin

    def _emit(
        self, type_: str, source_id: str, run_id: str, job_id: str | None, **data: Any
    ) -> None:
        if self.sink is not None:
            try:
                self.sink(
                    Event(type=type_, source_id=source_id, run_id=run_id, job_id=job_id, data=data)
                )
            except Exception:  # a broken listener never fails a run
                log.exception("event sink failed")

    async def run(
        self,
        source_id: str,
        connector: Connector,
        *,
        run_id: str | None = None,
        job_id: str | None = None,
        attempt: int = 1,
        timeout_s: float | None = None,
    ) -> RunSummary:
        """Discover ``source_id`` with ``connector`` and persist the differences."""
        run_id = run_id or str(uuid.uuid4())
        t0 = time.perf_counter()
        # The run is recorded and the stored state loaded while the connector connects and
        # runs its first queries: the signatures are waited for only when looked up.
        begun: Future[_Begun] = Future()
        threading.Thread(
            target=_fill,
            args=(begun, partial(self._begin, source_id, run_id, job_id, attempt)),
            name="dw-discovery-begin",
            daemon=True,
        ).start()
        started = asyncio.wrap_future(begun)

        def announce(f: asyncio.Future[_Begun]) -> None:
            if not f.cancelled() and f.exception() is None:
                self._emit("discovery.started", source_id, run_id, job_id, attempt=attempt)

        started.add_done_callback(announce)
        try:
            if _accepts_known(connector):
                discovering = connector.discover(known=_StoredSignatures(begun))
            else:
                discovering = connector.discover()
            if timeout_s is not None:
                result = await asyncio.wait_for(discovering, timeout=timeout_s)
            else:
                result = await discovering
        except (TimeoutError, DatawaveError, OSError) as exc:
            await started  # a run the store could not record fails with the store's error
            msg = (
                f"discovery timed out after {timeout_s:g}s"
                if isinstance(exc, TimeoutError) and not isinstance(exc, ConnectorError)
                else connector.redact(str(exc))
            )
            return await self._fail(source_id, run_id, job_id, msg, t0)
        except Exception as exc:  # unexpected: still fail the run cleanly, keep metadata
            await started
            log.exception("discovery of %s crashed", source_id)
            msg = connector.redact(f"{type(exc).__name__}: {exc}")
            return await self._fail(source_id, run_id, job_id, msg, t0)
        state, _ = await started
        t1 = time.perf_counter()
        return await asyncio.to_thread(
            self._persist, source_id, run_id, job_id, result, t0, t1, state
        )

    def _begin(self, source_id: str, run_id: str, job_id: str | None, attempt: int) -> _Begun:
        """Record the run; the stored table state, and its signatures by qualified name."""
        self.store.start_run(run_id, source_id, job_id=job_id, attempt=attempt, origin=self.origin)
        state = self.store.load_table_state(source_id)
        known = {
            qualified_name(*key): old.signature
            for key, old in state.items()
            if old.signature is not None
        }
        return state, known

    async def _fail(
        self, source_id: str, run_id: str, job_id: str | None, msg: str, t0: float
    ) -> RunSummary:
        summary = await asyncio.to_thread(
            self.store.finish_run, run_id, RunStatus.FAILED, errors=[redact(msg)],
            counters={"elapsed_ms": int((time.perf_counter() - t0) * 1000)},
        )  # fmt: skip
        self._emit("discovery.failed", source_id, run_id, job_id, error=msg)
        return summary

    def _persist(
        self,
        source_id: str,
        run_id: str,
        job_id: str | None,
        result: DiscoveryResult,
        t0: float,
        t1: float,
        state: Mapping[TableKey, TableState],
    ) -> RunSummary:
        if result.failures and not result.complete_schemas:
            # No table listing completed: a failed run, not a partial one; write nothing.
            summary = self.store.finish_run(
                run_id, RunStatus.FAILED, errors=list(result.failures),
                warnings=list(result.warnings), counters={"queries": result.queries},
            )  # fmt: skip
            self._emit("discovery.failed", source_id, run_id, job_id, error=result.failures[0])
            return summary
        now = datetime.now(UTC)
        with gc_paused():  # tens of thousands of long-lived rows: no cycles to collect
            cs, counters = plan_changes(self.store, source_id, run_id, result, now, state=state)
            t2 = time.perf_counter()
            written = self.store.apply_changes(cs)
            t3 = time.perf_counter()
        counters.update(
            rows_written=written,
            queries=result.queries,
            databases=len(result.databases),
            schemas=len(result.schemas),
            connector_ms=int((t1 - t0) * 1000),
            plan_ms=int((t2 - t1) * 1000),
            write_ms=int((t3 - t2) * 1000),
        )
        status = RunStatus.SUCCEEDED if result.complete else RunStatus.PARTIAL
        summary = self.store.finish_run(
            run_id, status, counters=counters, errors=list(result.failures),
            warnings=list(result.warnings),
            snapshot_id=cs.snapshot.id if cs.snapshot else None, drift_events=len(cs.drift),
        )  # fmt: skip
        for e in cs.drift:
            self._emit("drift", source_id, run_id, job_id,
                       **e.model_dump(mode="json", exclude={"source_id", "run_id"}))  # fmt: skip
        self._emit("discovery.finished", source_id, run_id, job_id, status=status.value,
                   counters=counters)  # fmt: skip
        return summary


def _accepts_known(connector: Connector) -> bool:
    """Plugins written before ``known`` existed still work: they are called without it."""
    try:
        return "known" in inspect.signature(connector.discover).parameters
    except (TypeError, ValueError):
        return False
