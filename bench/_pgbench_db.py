"""Builds the benchmark PostgreSQL databases (idempotent: skipped when already complete)."""

from __future__ import annotations

import psycopg

TYPES = [
    "bigint", "integer", "smallint", "numeric(12,2)", "text", "varchar(64)", "boolean",
    "timestamptz", "date", "jsonb", "uuid", "double precision",
]  # fmt: skip


def admin(host: str, port: int, user: str) -> psycopg.Connection:
    return psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True)


def ensure_database(
    host: str,
    port: int,
    user: str,
    name: str,
    schemas: int,
    per_schema: int,
    *,
    distinct_columns: bool = False,
) -> None:
    """``distinct_columns``: every table's columns get their own names (``c1_t17`` ...), so no
    two tables share a column definition (by default all tables have the same 12 columns)."""
    want = schemas * per_schema
    with admin(host, port, user) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            with psycopg.connect(host=host, port=port, user=user, dbname=name) as db:
                have = db.execute(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind = 'r' AND n.nspname LIKE 'bench_%%'"
                ).fetchone()
            if have and have[0] == want:
                return
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(host=host, port=port, user=user, dbname=name) as db:
        for s in range(schemas):
            schema = f"bench_{s}"
            stmts = [f"CREATE SCHEMA {schema}"]
            for t in range(per_schema):
                suffix = f"_s{s}t{t}" if distinct_columns else ""
                cols = ", ".join(f"c{i}{suffix} {TYPES[i]}" for i in range(1, 11))
                fk = (
                    f", prev_id bigint REFERENCES {schema}.t{t - 1}(id)"
                    if t
                    else ", prev_id bigint"
                )
                stmts.append(f"CREATE TABLE {schema}.t{t} (id bigint PRIMARY KEY, {cols}{fk})")
                if t % 4 == 0:
                    stmts.append(f"CREATE INDEX ON {schema}.t{t} (c4{suffix})")
                if t % 10 == 0:
                    stmts.append(f"COMMENT ON TABLE {schema}.t{t} IS 'benchmark table {t}'")
            db.execute(";\n".join(stmts))  # type: ignore[arg-type]
            db.commit()
        db.execute("ANALYZE")
