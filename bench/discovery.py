"""Discovery benchmark: datawave vs. the raw catalog queries vs. a per-table Inspector loop.

Creates (if absent) a PostgreSQL database of 5 schemas x 1,000 tables (12 columns each, a PK, a
FK to the previous table, an index on every 4th table, a comment on every 10th) and a 50-table
one, then times in ONE run:
  (a) catalog_s     the connector's own pg_catalog queries, executed and fetched raw;
  (b) inspector_s   SQLAlchemy's Inspector per table (columns, pk, fks, indexes): how classic
                    catalog ingesters reflect;
  (c) datawave_s    datawave's full discovery, persisted to a fresh store;
  (d) rediscover_s  datawave's rediscovery of the unchanged database (must write 0 rows).
(a), (c) and (d) are the best of 3 (``--repeat``; each datawave run into a new, empty store), so
one noisy moment on a shared machine does not decide a ratio; (b) is one 15-30 s loop, which
averages such moments out by itself.
All tables have the same 12 columns, as tenant copies of a schema or the partitions of a table
do; datawave builds equal columns once, so ``--distinct-columns`` runs the same on a database
where every table has its own column names (no shared definition) to show the other case.
Prints one JSON line last.
Usage: python bench/discovery.py [--store sqlite|postgresql] [--distinct-columns]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pgbench_db import admin, ensure_database

from datawave.datasource.connectors import ConnectorRegistry
from datawave.datasource.connectors.pg_catalog import DATABASE_QUERIES
from datawave.datasource.engines import DiscoveryEngine, SourceService
from datawave.datasource.store import AesGcmSealer, MetadataStore

HOST = os.environ.get("DATAWAVE_BENCH_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("DATAWAVE_BENCH_PG_PORT", "5432"))
USER = os.environ.get("DATAWAVE_BENCH_PG_USER", "postgres")
BIG, SMALL = "dw_bench_5000", "dw_bench_50"
DISTINCT = "dw_bench_5000_distinct"  # --distinct-columns: no two tables share a column


def catalog_seconds(dbname: str) -> float:
    """Run the connector's fixed query set raw (execute + fetchall), best of 3."""
    best = float("inf")
    # The same session settings the connector uses, so the baseline is like for like.
    opts = "-c search_path=pg_catalog -c jit=off"
    with psycopg.connect(host=HOST, port=PORT, user=USER, dbname=dbname, options=opts) as conn:
        schemas = [r[0] for r in conn.execute(DATABASE_QUERIES[0]).fetchall()]
        for _ in range(3):
            t = time.perf_counter()
            for sql in DATABASE_QUERIES:
                conn.execute(sql, {"schemas": schemas}).fetchall()  # type: ignore[arg-type]
            best = min(best, time.perf_counter() - t)
    return best


def inspector_seconds(dbname: str) -> tuple[float, int]:
    from sqlalchemy import create_engine, inspect

    eng = create_engine(f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{dbname}")
    t = time.perf_counter()
    n = 0
    with eng.connect() as conn:
        insp = inspect(conn)
        for schema in insp.get_schema_names():
            if schema.startswith("pg_") or schema == "information_schema":
                continue
            for table in insp.get_table_names(schema=schema):
                insp.get_columns(table, schema=schema)
                insp.get_pk_constraint(table, schema=schema)
                insp.get_foreign_keys(table, schema=schema)
                insp.get_indexes(table, schema=schema)
                n += 1
    eng.dispose()
    return time.perf_counter() - t, n


async def datawave_run(
    store: MetadataStore, dbname: str
) -> tuple[float, float, dict[str, int], int]:
    registry = ConnectorRegistry()
    svc = SourceService(store, registry, shards=1)
    rec = svc.register(
        {
            "name": f"bench-{dbname}-{uuid.uuid4().hex[:6]}",
            "type": "postgresql",
            "config": {
                "host": HOST,
                "port": PORT,
                "user": USER,
                "auth": "none",
                "database": dbname,
                "databases": [dbname],
            },
        }
    )
    engine = DiscoveryEngine(store)
    conn = svc.connector_for(rec)
    t = time.perf_counter()
    first = await engine.run(rec.id, conn)
    full_s = time.perf_counter() - t
    t = time.perf_counter()
    again = await engine.run(rec.id, conn)
    re_s = time.perf_counter() - t
    await conn.close()
    assert first.status.value == "succeeded", first.errors
    assert again.status.value == "succeeded", again.errors
    return full_s, re_s, first.counters, again.counters["rows_written"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--skip-inspector", action="store_true", help="for quick local runs only")
    ap.add_argument("--repeat", type=int, default=3, help="datawave runs; the best one counts")
    ap.add_argument(
        "--distinct-columns",
        action="store_true",
        help="a database where every table has its own column names (no shared definitions)",
    )
    args = ap.parse_args()
    big = DISTINCT if args.distinct_columns else BIG

    ensure_database(HOST, PORT, USER, big, 5, 1000, distinct_columns=args.distinct_columns)
    ensure_database(HOST, PORT, USER, SMALL, 1, 50)

    tmp = tempfile.mkdtemp(prefix="dw-bench-")
    stores: list[str] = []

    def fresh_store() -> MetadataStore:
        """An empty store: every full discovery starts from nothing, as a first one does."""
        if args.store == "sqlite":
            url = f"sqlite:///{tmp}/store-{len(stores)}.db"
        else:
            name = f"dw_bench_store_{uuid.uuid4().hex[:6]}"
            with admin(HOST, PORT, USER) as a:
                a.execute(f'CREATE DATABASE "{name}"')
            url = f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{name}"
        stores.append(url)
        return MetadataStore.open(url, sealer=AesGcmSealer(os.urandom(32)))

    try:
        catalog_s = catalog_seconds(big)
        # Best of ``--repeat`` like the catalog baseline: each run discovers into a fresh store
        # and then rediscovers; a run that wrote on rediscovery fails the bar.
        runs = []
        for _ in range(args.repeat):
            store = fresh_store()
            try:
                runs.append(asyncio.run(datawave_run(store, big)))
            finally:
                store.close()
        full_s = min(r[0] for r in runs)
        re_s = min(r[1] for r in runs)
        counters = runs[0][2]
        written = max(r[3] for r in runs)
        store = fresh_store()
        try:
            _, _, small_counters, _ = asyncio.run(datawave_run(store, SMALL))
        finally:
            store.close()
        if args.skip_inspector:
            inspector_s = float("nan")
        else:
            inspector_s, _ = inspector_seconds(big)
    finally:
        for url in stores:
            if url.startswith("postgresql"):
                with admin(HOST, PORT, USER) as a:
                    a.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    out = {
        "tables": counters["tables"],
        "columns": counters["columns"],
        "catalog_s": round(catalog_s, 3),
        "inspector_s": round(inspector_s, 3),
        "datawave_s": round(full_s, 3),
        "rediscover_s": round(re_s, 3),
        "queries_per_db": counters["queries"],
        "queries_per_db_50_tables": small_counters["queries"],
        "rows_written_first": counters["rows_written"],
        "rows_written_rediscover": written,
        "store": args.store,
        "distinct_columns": args.distinct_columns,
        "ratios": {
            "datawave_over_catalog": round(full_s / catalog_s, 2),
            "inspector_over_datawave": round(inspector_s / full_s, 1),
            "rediscover_over_catalog": round(re_s / catalog_s, 2),
        },
        "bar_met": (
            full_s <= 3 * catalog_s
            and (args.skip_inspector or inspector_s / full_s >= 20)
            and re_s <= 1.5 * catalog_s
            and written == 0
            and counters["queries"] == small_counters["queries"]
        ),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
