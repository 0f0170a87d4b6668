"""The files connector against real files: a copy of ``demo/lake`` plus edge cases made here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datawave.datasource.connectors.files import FilesConnector
from datawave.datasource.connectors.registry import ConnectorRegistry
from datawave.datasource.errors import ConnectorError
from datawave.datasource.models import DiscoveryResult, HealthState, StepStatus, TableInfo

DEMO_LAKE = Path(__file__).resolve().parents[3] / "demo" / "lake"


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    shutil.copytree(DEMO_LAKE, root)
    return root


def connector(root: Path, **config: Any) -> FilesConnector:
    return FilesConnector.create({"root": str(root), **config})


async def discover(root: Path, **config: Any) -> DiscoveryResult:
    async with connector(root, **config) as conn:
        return await conn.discover()


def tables(result: DiscoveryResult) -> dict[str, TableInfo]:
    return {f"{t.schema_name}.{t.name}": t for t in result.tables}


def columns(table: TableInfo) -> list[tuple[str, str, bool]]:
    assert [c.ordinal for c in table.columns] == list(range(1, len(table.columns) + 1))
    return [(c.name, c.data_type, c.nullable) for c in table.columns]


def write(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def write_parquet(root: Path, rel: str, table: pa.Table) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


# --------------------------------------------------------------------------- the demo lake


async def test_demo_lake_is_discovered_exactly(lake: Path) -> None:
    result = await discover(lake)

    assert [(d.name, d.size_bytes) for d in result.databases] == [("lake", 103_851)]
    assert [s.name for s in result.schemas] == ["default", "raw"]
    assert list(tables(result)) == [
        "default.customers",
        "default.events",
        "default.sales",
        "raw.clicks",
    ]
    t = tables(result)

    customers = t["default.customers"]
    assert (customers.kind, customers.row_estimate, customers.size_bytes) == ("file", 200, 13_834)
    assert customers.properties == {"format": "csv", "path": "customers.csv"}
    assert columns(customers) == [
        ("id", "int64", True),
        ("email", "string", True),
        ("first_name", "string", True),
        ("last_name", "string", True),
        ("country", "string", True),
        ("signup_date", "date32[day]", True),
        ("ltv", "double", True),
    ]

    events = t["default.events"]
    assert (events.kind, events.row_estimate) == ("file", 400)
    assert columns(events) == [
        ("event_id", "int64", True),
        ("ts", "timestamp[s]", True),
        ("customer_id", "int64", True),
        ("type", "string", True),
        ("context", "struct<ip: string, mobile: bool>", True),
        ("tags", "list<item: string>", True),
    ]
    assert [c.name for c in events.columns if c.is_array] == ["tags"]

    sales = t["default.sales"]
    assert sales.kind == "partitioned_table"
    assert (sales.row_estimate, sales.partition_key) == (240 + 210 + 260, "year, month")
    assert sales.properties == {"format": "parquet", "path": "sales", "files": "3"}
    assert columns(sales) == [
        ("sale_id", "int64", False),
        ("sold_at", "timestamp[ms]", False),
        ("customer_id", "int32", False),
        ("sku", "string", False),
        ("quantity", "int16", False),
        ("amount", "decimal128(10, 2)", False),
        ("coupon", "string", True),
        ("year", "int32", True),
        ("month", "int32", True),
    ]

    clicks = t["raw.clicks"]
    assert (clicks.kind, clicks.row_estimate) == ("file", 500)
    assert clicks.properties == {"format": "parquet", "path": "raw/clicks.parquet"}
    assert columns(clicks)[:2] == [
        ("click_id", "int64", False),
        ("clicked_at", "timestamp[ms, tz=UTC]", False),
    ]

    assert result.databases_complete and result.complete
    assert result.complete_databases == {"lake"}
    assert result.complete_schemas == {("lake", "default"), ("lake", "raw")}
    assert (result.queries, result.queries_per_database) == (6, {"lake": 6})  # 6 file reads
    assert result.warnings == () and result.failures == ()


async def test_discovery_is_deterministic_and_counts_reads(lake: Path) -> None:
    conn = connector(lake, database_name="shop_lake")
    first, second = await conn.discover(), await conn.discover()

    assert first == second
    assert first.databases[0].name == "shop_lake"
    assert {t.database for t in first.tables} == {"shop_lake"}
    assert conn.report.queries == 12 and conn.report.errors == 0


async def test_registry_lists_the_plugin_enabled() -> None:
    (info,) = [p for p in ConnectorRegistry().list() if p.name == "files"]
    assert info.enabled and info.cls is FilesConnector and info.extra == "files"


# --------------------------------------------------------------------------- layouts


async def test_nested_unicode_and_spaced_names(tmp_path: Path) -> None:
    write(tmp_path, "top.csv", "a\n1\n")
    write(tmp_path, "raw/2024/deep.csv", "a\n1\n")
    write(tmp_path, "données clients/été 2024.csv", "nom;âge\nZoë;7\n")

    result = await discover(tmp_path, csv_delimiter=";")

    assert list(tables(result)) == ["default.top", "données clients.été 2024", "raw/2024.deep"]
    assert [s.name for s in result.schemas] == ["default", "données clients", "raw/2024"]
    odd = tables(result)["données clients.été 2024"]
    assert odd.qualified_name == f'{tmp_path.name}."données clients"."été 2024"'
    assert columns(odd) == [("nom", "string", True), ("âge", "int64", True)]
    assert odd.properties["path"] == "données clients/été 2024.csv"
    assert result.complete_schemas == {(tmp_path.name, s.name) for s in result.schemas}


async def test_partitioned_csv_with_string_keys_and_schema_evolution(tmp_path: Path) -> None:
    write(tmp_path, "raw/visits/region=eu/day=1/a.csv", "id,n\n1,2\n2,3\n")
    write(tmp_path, "raw/visits/region=us%20east/day=2/a.csv", "id,n\n3,4\n")
    write(tmp_path, "raw/visits/_SUCCESS", "")
    write_parquet(tmp_path, "orders/month=1/p.parquet", pa.table({"id": pa.array([1], pa.int32())}))
    write_parquet(
        tmp_path,
        "orders/month=2/p.parquet",
        pa.table({"id": pa.array([2, 3], pa.int64()), "note": ["x", None], "month": [2, 2]}),
    )

    result = await discover(tmp_path)

    visits = tables(result)["raw.visits"]
    assert visits.partition_key == "region, day"
    assert columns(visits) == [
        ("id", "int64", True),
        ("n", "int64", True),
        ("region", "string", True),
        ("day", "int32", True),
    ]
    assert visits.properties == {"format": "csv", "path": "raw/visits", "files": "2"}
    assert visits.row_estimate == 3  # bytes per sampled row x the other file: 2 + 1

    orders = tables(result)["default.orders"]
    # Footers are unified (int32 and int64 promote), and a key stored in the files stays once.
    assert columns(orders) == [
        ("id", "int64", True),
        ("note", "string", True),
        ("month", "int64", True),
    ]
    assert (orders.partition_key, orders.row_estimate) == ("month", 3)
    assert result.queries == 1 + 2
    assert result.complete


async def test_formats_option_limits_what_is_read(lake: Path) -> None:
    result = await discover(lake, formats=["parquet"])

    assert list(tables(result)) == ["default.sales", "raw.clicks"]
    assert result.queries == 4


async def test_name_collision_keeps_both_tables(tmp_path: Path) -> None:
    write(tmp_path, "a.csv", "x\n1\n")
    write(tmp_path, "a.jsonl", '{"y": 1}\n')

    result = await discover(tmp_path)

    assert list(tables(result)) == ["default.a", "default.a.jsonl"]
    assert result.warnings == ("a.jsonl: table name 'a' is taken, named 'a.jsonl'",)
    assert result.complete


# --------------------------------------------------------------------------- sampling


async def test_large_csv_is_sampled_and_rows_extrapolated(tmp_path: Path) -> None:
    rows = [f"{i:05d};name-{i % 97:02d};{i % 10}.5" for i in range(20_000)]
    write(tmp_path, "big.csv", "id;name;score\n" + "\n".join(rows) + "\n")
    size = (tmp_path / "big.csv").stat().st_size

    result = await discover(tmp_path, csv_delimiter=";", sample_bytes=4096)

    big = tables(result)["default.big"]
    assert columns(big) == [
        ("id", "int64", True),
        ("name", "string", True),
        ("score", "double", True),
    ]
    assert big.row_estimate is not None and abs(big.row_estimate - 20_000) < 2_000
    assert big.size_bytes == size
    assert result.queries == 1 and result.complete


async def test_large_jsonl_is_sampled_and_rows_extrapolated(tmp_path: Path) -> None:
    lines = [json.dumps({"id": i, "tags": ["a"] * (i % 3), "ok": i % 2 == 0}) for i in range(5_000)]
    write(tmp_path, "logs/app.ndjson", "\n".join(lines) + "\n")

    result = await discover(tmp_path, sample_bytes=2048)

    app = tables(result)["logs.app"]
    assert columns(app) == [
        ("id", "int64", True),
        ("tags", "list<item: string>", True),
        ("ok", "bool", True),
    ]
    assert app.row_estimate is not None and abs(app.row_estimate - 5_000) < 500


async def test_empty_and_header_only_files_are_tables_without_rows(tmp_path: Path) -> None:
    write(tmp_path, "empty.csv", "")
    write(tmp_path, "blank.jsonl", "\n\n")
    write(tmp_path, "header.csv", "a,b\n")

    result = await discover(tmp_path)

    t = tables(result)
    assert (t["default.empty"].columns, t["default.empty"].row_estimate) == ((), 0)
    assert (t["default.blank"].columns, t["default.blank"].row_estimate) == ((), 0)
    assert columns(t["default.header"]) == [("a", "null", True), ("b", "null", True)]
    assert t["default.header"].row_estimate == 0
    assert sorted(result.warnings) == [
        "blank.jsonl: no data, the table has no columns",
        "empty.csv: no data, the table has no columns",
    ]
    assert result.complete and result.complete_schemas == {(tmp_path.name, "default")}


# --------------------------------------------------------------------------- bad files


async def test_unparseable_files_fail_their_folder_only(lake: Path) -> None:
    write(lake, "raw/ragged.csv", "a,b\n1,2\n3,4,5\n")
    write(lake, "raw/broken.parquet", b"PAR1 not really")
    write(lake, "bad/rows.jsonl", '{"a": 1}\n{oops\n')

    result = await discover(lake)

    assert list(tables(result)) == [
        "default.customers",
        "default.events",
        "default.sales",
        "raw.clicks",
    ]
    assert [s.name for s in result.schemas] == ["bad", "default", "raw"]
    assert len(result.failures) == 3
    failures = sorted(result.failures)
    assert failures[0].startswith("bad/rows.jsonl: cannot read jsonl: JSON parse error")
    assert failures[1].startswith("raw/broken.parquet: cannot read parquet: ")
    assert failures[2].startswith("raw/ragged.csv: cannot read csv: CSV parse error")
    assert not any(str(lake) in f for f in failures)  # relative paths only
    # Nothing under a folder with a bad file may be deleted downstream.
    assert result.complete_schemas == {("lake", "default")}
    assert result.complete_databases == {"lake"}
    assert result.databases_complete and not result.complete


async def test_a_corrupt_partition_fails_the_dataset(lake: Path) -> None:
    write(lake, "sales/year=2025/month=4/part-0.parquet", b"truncated upload")

    result = await discover(lake)

    assert "default.sales" not in tables(result)
    (failure,) = result.failures
    assert failure.startswith("sales: cannot read parquet: ")
    assert ("lake", "default") not in result.complete_schemas
    assert ("lake", "raw") in result.complete_schemas


async def test_max_files_makes_the_database_incomplete(lake: Path) -> None:
    result = await discover(lake, max_files=2)

    assert len(result.tables) == 2
    assert result.failures == ("listing stopped after 2 data files (max_files)",)
    assert result.complete_databases == frozenset()
    # customers and events were listed, but "sales" (a table of "default") was never reached.
    assert list(tables(result)) == ["default.customers", "default.events"]
    assert result.complete_schemas == frozenset()


def deny(path: Path) -> None:
    """``chmod 000``, or skip when this user reads anyway (root with CAP_DAC_OVERRIDE).

    As root, run these with ``setpriv --bounding-set -dac_override,-dac_read_search``.
    """
    path.chmod(0)
    try:
        with open(path, "rb") if path.is_file() else os.scandir(path):
            pass
    except PermissionError:
        return
    path.chmod(0o755)
    pytest.skip("this user reads files with mode 000")


async def test_unreadable_folder_is_a_failure(lake: Path) -> None:
    secret = lake / "secret"
    write(lake, "secret/x.csv", "a\n1\n")
    deny(secret)
    try:
        result = await discover(lake)
        report = await connector(lake).test_connection()
    finally:
        secret.chmod(0o755)

    assert result.failures == ("secret: cannot list folder: Permission denied",)
    assert result.complete_databases == frozenset()
    # "secret" might have been a partitioned table of the root folder.
    assert result.complete_schemas == {("lake", "raw")}
    assert [s.status for s in report.steps] == ["ok", "failed", "skipped"]
    assert report.steps[1].error_code == "permission_denied"


# --------------------------------------------------------------------------- filters


async def test_filters_apply_to_folders_and_files(lake: Path) -> None:
    result = await discover(lake, filters={"exclude_schemas": ["raw"], "exclude_tables": ["ev*"]})
    assert list(tables(result)) == ["default.customers", "default.sales"]
    assert [s.name for s in result.schemas] == ["default"]
    assert result.queries == 1 + 3  # excluded files are not read

    result = await discover(lake, filters={"include_tables": ["raw.*", "customers"]})
    assert list(tables(result)) == ["default.customers", "raw.clicks"]
    assert result.complete_schemas == {("lake", "default"), ("lake", "raw")}

    result = await discover(lake, filters={"exclude_databases": ["lake"]})
    assert result.databases == () and result.tables == ()
    assert result.databases_complete and result.queries == 0


# --------------------------------------------------------------------------- test / health


async def test_connection_steps_on_the_demo_lake(lake: Path) -> None:
    report = await connector(lake).test_connection()

    assert report.ok
    assert [(s.name, s.status) for s in report.steps] == [
        ("open_root", StepStatus.OK),
        ("list_files", StepStatus.OK),
        ("read_sample", StepStatus.OK),
    ]
    listing = report.steps[1].detail
    assert listing["files"] == {"csv": 1, "parquet": 4, "jsonl": 1}
    assert listing["tables"] == 4
    assert report.steps[2].detail == {
        "sampled": 3,
        "csv": {"path": "customers.csv", "columns": 7},
        "jsonl": {"path": "events.jsonl", "columns": 6},
        "parquet": {"path": "sales/year=2025/month=1/part-0.parquet", "columns": 7},
    }


async def test_connection_names_the_failing_step(tmp_path: Path) -> None:
    missing = await connector(tmp_path / "nope").test_connection()
    assert not missing.ok
    assert [s.status for s in missing.steps] == ["failed", "skipped", "skipped"]
    assert missing.failed_step is not None and "does not exist" in (missing.failed_step.error or "")

    write(tmp_path, "file.csv", "a\n1\n")
    not_dir = await connector(tmp_path / "file.csv").test_connection()
    assert not_dir.steps[0].error == f"root {str(tmp_path / 'file.csv')!r} is not a directory"

    write(tmp_path, "z.csv", '"a,b\n')  # an unterminated quote
    write(tmp_path, "a.csv", "a,b\n1,2,3\n")
    bad = await connector(tmp_path).test_connection()
    assert [s.status for s in bad.steps] == ["ok", "ok", "failed"]
    assert (bad.steps[2].error or "").startswith("a.csv: cannot read csv: CSV parse error")

    empty = await connector(tmp_path / "empty", database_name="x").test_connection()
    assert not empty.ok  # does not exist yet
    (tmp_path / "empty").mkdir()
    empty = await connector(tmp_path / "empty").test_connection()
    assert empty.ok and empty.steps[2].detail == {"sampled": 0}


async def test_discover_raises_when_the_root_is_unreadable(tmp_path: Path) -> None:
    conn = connector(tmp_path / "gone")
    with pytest.raises(ConnectorError, match="does not exist") as info:
        await conn.discover()
    assert info.value.code == "connector_error"
    assert conn.report.errors == 1


async def test_health(lake: Path, tmp_path: Path) -> None:
    healthy = await connector(lake).check_health()
    assert healthy.state == HealthState.HEALTHY and healthy.latency_ms is not None

    down = await connector(tmp_path / "gone").check_health()
    assert down.state == HealthState.DOWN
    assert down.error == f"root {str(tmp_path / 'gone')!r} does not exist"


async def test_unreadable_partition_or_file_keeps_the_stored_tables(lake: Path) -> None:
    partition, customers = lake / "sales" / "year=2025" / "month=2", lake / "customers.csv"
    deny(partition)
    deny(customers)
    try:
        result = await discover(lake)
    finally:
        partition.chmod(0o755)
        customers.chmod(0o644)

    assert list(tables(result)) == ["default.events", "raw.clicks"]
    assert sorted(result.failures) == [
        "customers.csv: cannot read csv: [Errno 13] Permission denied: 'customers.csv'",
        "sales/year=2025/month=2: cannot list folder: Permission denied",
    ]
    assert result.complete_schemas == {("lake", "raw")}
    assert result.complete_databases == frozenset()
