"""Typed drift between two versions of a table.

Breaking changes are those that can break a reader or writer: a table or column removed, a
column type changed, a column becoming NOT NULL, a primary or foreign key changed.
"""

from __future__ import annotations

from datawave.datasource.models import DriftEvent, DriftKind, TableInfo

__all__ = ["diff_tables", "table_added", "table_removed"]


def table_added(source_id: str, run_id: str, t: TableInfo) -> DriftEvent:
    return DriftEvent(
        source_id=source_id, run_id=run_id, kind=DriftKind.TABLE_ADDED, table=t.qualified_name,
        after={"kind": t.kind.value, "columns": len(t.columns)}, breaking=False,
    )  # fmt: skip


def table_removed(source_id: str, run_id: str, qualified: str) -> DriftEvent:
    return DriftEvent(
        source_id=source_id, run_id=run_id, kind=DriftKind.TABLE_REMOVED, table=qualified,
        breaking=True,
    )  # fmt: skip


def _keys(t: TableInfo) -> dict[str, object]:
    return {
        "primary_key": list(t.primary_key.columns) if t.primary_key else None,
        "unique": sorted(list(u.columns) for u in t.unique_constraints),
        "foreign_keys": sorted(
            (list(f.columns), f.ref_schema, f.ref_table, list(f.ref_columns))
            for f in t.foreign_keys
        ),
    }


def diff_tables(source_id: str, run_id: str, old: TableInfo, new: TableInfo) -> list[DriftEvent]:
    """Events that turn ``old`` into ``new`` (column renames appear as remove + add)."""
    events: list[DriftEvent] = []
    name = new.qualified_name

    def ev(kind: DriftKind, *, column: str | None = None, before: object = None,
           after: object = None, breaking: bool) -> None:  # fmt: skip
        events.append(
            DriftEvent(
                source_id=source_id, run_id=run_id, kind=kind, table=name, column=column,
                before=before, after=after, breaking=breaking,
            )
        )  # fmt: skip

    old_cols = {c.name: c for c in old.columns}
    new_cols = {c.name: c for c in new.columns}
    for cname, c in new_cols.items():
        if cname not in old_cols:
            ev(DriftKind.COLUMN_ADDED, column=cname, after={"data_type": c.data_type,
               "nullable": c.nullable}, breaking=not c.nullable and c.default is None)  # fmt: skip
    for cname in old_cols:
        if cname not in new_cols:
            ev(DriftKind.COLUMN_REMOVED, column=cname, before={"data_type": old_cols[cname].data_type},
               breaking=True)  # fmt: skip
    for cname, c in new_cols.items():
        o = old_cols.get(cname)
        if o is None:
            continue
        if o.data_type != c.data_type or o.enum_values != c.enum_values:
            ev(DriftKind.COLUMN_TYPE_CHANGED, column=cname,
               before={"data_type": o.data_type, "enum_values": o.enum_values},
               after={"data_type": c.data_type, "enum_values": c.enum_values},
               breaking=not _widening(o.enum_values, c.enum_values))  # fmt: skip
        if o.nullable != c.nullable:
            ev(DriftKind.COLUMN_NULLABILITY_CHANGED, column=cname, before={"nullable": o.nullable},
               after={"nullable": c.nullable}, breaking=not c.nullable)  # fmt: skip
    ko, kn = _keys(old), _keys(new)
    if ko != kn:
        ev(DriftKind.KEY_CHANGED, before=ko, after=kn, breaking=True)
    other = ("kind", "comment", "definition", "parent", "partition_key", "partition_bound")
    changed = {
        f: (getattr(old, f), getattr(new, f)) for f in other if getattr(old, f) != getattr(new, f)
    }
    old_ix = sorted((i.name, i.columns, i.unique, i.predicate) for i in old.indexes)
    new_ix = sorted((i.name, i.columns, i.unique, i.predicate) for i in new.indexes)
    col_meta = [
        cname for cname, c in new_cols.items()
        if cname in old_cols and (old_cols[cname].comment, old_cols[cname].default,
                                  old_cols[cname].generated, old_cols[cname].ordinal)
        != (c.comment, c.default, c.generated, c.ordinal)
    ]  # fmt: skip
    if changed or old_ix != new_ix or col_meta or (not events and old != new):
        ev(
            DriftKind.TABLE_CHANGED,
            before={f: v[0] for f, v in changed.items()} | ({"indexes": [i[0] for i in old_ix]}
                                                            if old_ix != new_ix else {}),
            after={f: v[1] for f, v in changed.items()} | ({"indexes": [i[0] for i in new_ix]}
                                                           if old_ix != new_ix else {})
            | ({"columns_changed": col_meta} if col_meta else {}),
            breaking=("kind" in changed),
        )  # fmt: skip
    return events


def _widening(old: tuple[str, ...] | None, new: tuple[str, ...] | None) -> bool:
    """An enum that only gained values is a compatible change; anything else breaks."""
    if old is None or new is None:
        return False
    return set(old) <= set(new) and old != new
