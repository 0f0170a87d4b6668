"""Ship only what changed: edge-side planning against the local cache, core-side apply.

The edge keeps a *baseline* per source in its LMDB cache: the fingerprint and statistics of
every table it last shipped, and its databases and schemas. After a discovery it ships:

- the tables that are new, whose fingerprint changed, or whose statistics moved by more than
  10% (the same rule as :func:`~datawave.datasource.engines.discovery.plan_changes`);
- the databases and schemas that are new or changed;
- *removals on positive evidence*: an object in the baseline is reported removed only when the
  listing of its parent completed without it, exactly the rule the core applies;
- ``base_fp``, the snapshot fingerprint of the baseline, so the core can tell when its view
  and the edge's have diverged (a restored store, a wiped cache) and ask for a full run.

Without a baseline (first run, or after a resync) the whole result is shipped and the core
diffs it with :func:`plan_changes` as if it had run the discovery itself. Either way the core
writes the same rows a core-side discovery would: asset ids are deterministic.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from datawave.datasource.engines import fingerprint, plan_changes, snapshot_fingerprint
from datawave.datasource.engines.drift import table_removed
from datawave.datasource.models import (
    DatabaseInfo,
    DiscoveryResult,
    SchemaInfo,
    TableInfo,
    qualified_name,
)
from datawave.datasource.store import ChangeSet, MetadataStore, SnapshotRow

__all__ = ["Baseline", "apply_delta", "plan_delta", "result_from_payload"]

Baseline = dict[str, Any]
_SEP = "\x00"


def _stats_moved(old: int | None, new: int | None) -> bool:
    if old is None or new is None:
        return old != new
    return abs(new - old) > 0.1 * max(abs(old), 1)


def _tkey(t: TableInfo) -> str:
    return _SEP.join(t.key)


def _dump(model: Any) -> dict[str, Any]:
    return dict(model.model_dump(mode="json", by_alias=True))


def plan_delta(
    baseline: Baseline | None, result: DiscoveryResult
) -> tuple[dict[str, Any], Baseline]:
    """The payload to ship for ``result`` and the baseline to keep once it is queued.

    Returns:
        ``(payload, new_baseline)``; ``payload["full"]`` says whether it is a whole result.
    """
    tables = {_tkey(t): t for t in result.tables}
    fps = {k: fingerprint(t) for k, t in tables.items()}
    new_base: Baseline = {
        "tables": {k: [fps[k], t.row_estimate, t.size_bytes] for k, t in tables.items()},
        "databases": {d.name: _dump(d) for d in result.databases},
        "schemas": {f"{s.database}{_SEP}{s.name}": _dump(s) for s in result.schemas},
    }
    common = {
        "queries": result.queries,
        "warnings": list(result.warnings),
        "failures": list(result.failures),
        "databases_complete": result.databases_complete,
        "complete_databases": sorted(result.complete_databases),
        "complete_schemas": sorted([list(p) for p in result.complete_schemas]),
        "table_count": len(tables),
    }
    if baseline is None:
        payload = {
            "full": True,
            "databases": [_dump(d) for d in result.databases],
            "schemas": [_dump(s) for s in result.schemas],
            "tables": [_dump(t) for t in result.tables],
            **common,
        }
        return payload, new_base

    old_tables: dict[str, list[Any]] = baseline.get("tables", {})
    # Kept tables (parent not fully listed) stay in the baseline, as the core keeps them.
    changed: list[dict[str, Any]] = []
    for k, t in tables.items():
        old = old_tables.get(k)
        if (
            old is None
            or old[0] != fps[k]
            or _stats_moved(old[1], t.row_estimate)
            or _stats_moved(old[2], t.size_bytes)
        ):
            changed.append(_dump(t))
    gone_dbs = (
        sorted(set(baseline.get("databases", {})) - set(new_base["databases"]))
        if result.databases_complete
        else []
    )
    gone_schemas = []
    for key in baseline.get("schemas", {}):
        if key in new_base["schemas"]:
            continue
        db = key.split(_SEP)[0]
        if db in gone_dbs or db in result.complete_databases:
            gone_schemas.append(key.split(_SEP))
        else:
            new_base["schemas"][key] = baseline["schemas"][key]
    gone_schema_keys = {tuple(s) for s in gone_schemas}
    removed = []
    for k, old in old_tables.items():
        if k in tables:
            continue
        db, schema, _ = k.split(_SEP)
        if (
            (db, schema) in result.complete_schemas
            or (db, schema) in gone_schema_keys
            or (db in gone_dbs)
        ):
            removed.append(k.split(_SEP))
        else:
            new_base["tables"][k] = old
    for name in baseline.get("databases", {}):
        if name not in new_base["databases"] and name not in gone_dbs:
            new_base["databases"][name] = baseline["databases"][name]
    payload = {
        "full": False,
        "base_fp": baseline_fingerprint(baseline),
        "databases": [d for n, d in new_base["databases"].items()
                      if baseline.get("databases", {}).get(n) != d],
        "schemas": [s for k, s in new_base["schemas"].items()
                    if baseline.get("schemas", {}).get(k) != s],
        "tables": changed,
        "removed_tables": removed,
        "removed_schemas": gone_schemas,
        "removed_databases": gone_dbs,
        **common,
    }  # fmt: skip
    return payload, new_base


def baseline_fingerprint(baseline: Baseline) -> str:
    """The snapshot fingerprint the core holds when it agrees with this baseline."""
    fps = {qualified_name(*k.split(_SEP)): v[0] for k, v in baseline.get("tables", {}).items()}
    return snapshot_fingerprint(fps)


def result_from_payload(payload: Mapping[str, Any], *, full: bool) -> DiscoveryResult:
    """Rebuild a :class:`DiscoveryResult` from a payload (a delta has no complete listings)."""
    return DiscoveryResult(
        databases=tuple(DatabaseInfo.model_validate(d) for d in payload.get("databases", ())),
        schemas=tuple(SchemaInfo.model_validate(s) for s in payload.get("schemas", ())),
        tables=tuple(TableInfo.model_validate(t) for t in payload.get("tables", ())),
        databases_complete=bool(payload.get("databases_complete")) if full else False,
        complete_databases=frozenset(payload.get("complete_databases", ()))
        if full
        else frozenset(),
        complete_schemas=frozenset(tuple(p) for p in payload.get("complete_schemas", ()))
        if full
        else frozenset(),
        queries=int(payload.get("queries", 0)),
        warnings=tuple(payload.get("warnings", ())),
        failures=tuple(payload.get("failures", ())),
    )


def apply_delta(
    store: MetadataStore, source_id: str, run_id: str, payload: Mapping[str, Any], now: datetime
) -> tuple[ChangeSet, dict[str, int], bool]:
    """Plan the change set for an edge payload; nothing is written here.

    Returns:
        ``(change_set, counters, diverged)``: ``diverged`` means the edge's baseline is not
        what the core holds, so the edge should run a full discovery next.
    """
    full = bool(payload.get("full"))
    result = result_from_payload(payload, full=full)
    cs, counters = plan_changes(store, source_id, run_id, result, now)
    if full:
        return cs, counters, False
    latest = store.latest_snapshot(source_id)
    core_fp = latest["fingerprint"] if latest is not None else snapshot_fingerprint({})
    diverged = core_fp != payload.get("base_fp")
    state = store.load_table_state(source_id)
    removed = {tuple(k) for k in payload.get("removed_tables", ())}
    for key in sorted(removed):
        old = state.get(key)  # type: ignore[call-overload]
        if old is None or old.id in cs.delete_tables:
            continue
        cs.delete_tables.append(old.id)
        cs.drift.append(table_removed(source_id, run_id, qualified_name(*key)))
        counters["removed"] = counters.get("removed", 0) + 1
    have_schemas = store.load_schemas(source_id)
    cs.delete_schemas = sorted(
        {tuple(s) for s in payload.get("removed_schemas", ()) if tuple(s) in have_schemas}  # type: ignore[misc]
    )
    have_dbs = store.load_databases(source_id)
    cs.delete_databases = sorted(d for d in payload.get("removed_databases", ()) if d in have_dbs)
    structural = bool(
        cs.insert_tables or cs.replace_tables or cs.delete_tables or cs.upsert_schemas
        or cs.delete_schemas or cs.upsert_databases or cs.delete_databases
    )  # fmt: skip
    if structural:
        fps = {qualified_name(*k): s.fingerprint for k, s in state.items() if k not in removed}
        fps.update({r.table.qualified_name: r.fingerprint for r in cs.insert_tables})
        fps.update({r.table.qualified_name: r.fingerprint for r in cs.replace_tables})
        cs.snapshot = SnapshotRow(str(uuid.uuid4()), snapshot_fingerprint(fps), fps)
    else:
        cs.snapshot = None
    counters["tables"] = int(payload.get("table_count", counters.get("tables", 0)))
    counters["drift_events"] = len(cs.drift)
    counters["breaking_drift"] = sum(1 for e in cs.drift if e.breaking)
    return cs, counters, diverged
