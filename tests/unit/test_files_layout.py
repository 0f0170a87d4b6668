"""How ``scan_tree`` turns a folder tree into schemas and tables; no file is opened here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from datawave.datasource.connectors.files import FilesConfig, TableSource, scan_tree
from datawave.datasource.errors import ValidationFailed


def touch(root: Path, *rels: str, size: int = 0) -> None:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)


def by_name(sources: list[TableSource]) -> dict[tuple[str, str], TableSource]:
    return {(s.schema, s.name): s for s in sources}


def test_files_map_to_folder_schemas_and_stem_tables(tmp_path: Path) -> None:
    touch(tmp_path, "a.csv", "b.PARQUET", "c.pq", "d.ndjson", "raw/e.jsonl", "raw/2024/f.csv")
    touch(tmp_path, "notes.txt", "raw/g.csv.gz", "empty/readme.md")

    layout = scan_tree(tmp_path)

    assert [(s.schema, s.name, s.format) for s in layout.sources] == [
        ("default", "a", "csv"),
        ("default", "b", "parquet"),
        ("default", "c", "parquet"),
        ("default", "d", "jsonl"),
        ("raw", "e", "jsonl"),
        ("raw/2024", "f", "csv"),
    ]
    assert layout.schemas == {"default", "raw", "raw/2024"}
    assert layout.folders == {"default": True, "raw": True, "raw/2024": True, "empty": True}
    assert layout.complete and not layout.failures
    assert dict(layout.counts) == {"csv": 2, "parquet": 2, "jsonl": 2}


def test_hive_folder_is_one_table_in_its_parent_schema(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "raw/sales/year=2024/month=12/part-0.parquet",
        "raw/sales/year=2025/month=1/part-0.parquet",
        "raw/sales/year=2025/month=1/part-1.parquet",
        "raw/sales/year=2025/month=1/_SUCCESS",
        "raw/sales/year=2025/month=1/.part-1.parquet.crc",
        size=3,
    )

    layout = scan_tree(tmp_path)

    (src,) = layout.sources
    assert (src.schema, src.name, src.rel, src.partitioned) == ("raw", "sales", "raw/sales", True)
    assert [f.rel for f in src.files] == [
        "raw/sales/year=2024/month=12/part-0.parquet",
        "raw/sales/year=2025/month=1/part-0.parquet",
        "raw/sales/year=2025/month=1/part-1.parquet",
    ]
    assert src.size_bytes == 9
    assert "raw/sales" not in layout.folders  # a dataset is not a schema


def test_folder_with_files_beside_key_value_dirs_is_not_a_dataset(tmp_path: Path) -> None:
    touch(tmp_path, "t/year=2024/a.csv", "t/loose.csv")

    layout = scan_tree(tmp_path)

    assert {(s.schema, s.name) for s in layout.sources} == {("t", "loose"), ("t/year=2024", "a")}


def test_root_that_is_itself_partitioned(tmp_path: Path) -> None:
    touch(tmp_path, "dt=2025-01-01/a.jsonl", "dt=2025-01-02/b.jsonl")

    layout = scan_tree(tmp_path, root_table="events")

    (src,) = layout.sources
    assert (src.schema, src.name, src.rel, src.partitioned) == ("default", "events", "", True)
    assert layout.folders == {"default": True}


def test_name_collisions_fall_back_to_file_names(tmp_path: Path) -> None:
    touch(tmp_path, "a.csv", "a.parquet", "sales.csv", "sales/k=1/x.csv")

    layout = scan_tree(tmp_path)

    names = {s.rel: s.name for s in layout.sources}
    assert names == {
        "a.csv": "a",
        "a.parquet": "a.parquet",
        "sales": "sales",
        "sales.csv": "sales.csv",
    }
    assert len([w for w in layout.warnings if "is taken" in w]) == 2


def test_mixed_formats_in_a_partitioned_folder_fail_it(tmp_path: Path) -> None:
    touch(tmp_path, "ds/k=1/a.csv", "ds/k=2/b.parquet", "ok.csv")

    layout = scan_tree(tmp_path)

    assert [s.name for s in layout.sources] == ["ok"]
    assert layout.failures == ["ds: partitioned folder mixes formats (csv, parquet)"]
    assert layout.folders["default"] is False
    assert "default" in layout.schemas


def test_formats_filter_what_counts_as_a_table(tmp_path: Path) -> None:
    touch(tmp_path, "a.csv", "b.parquet", "ds/k=1/c.csv")

    layout = scan_tree(tmp_path, formats=["parquet"])

    assert [s.name for s in layout.sources] == ["b"]
    assert dict(layout.counts) == {"parquet": 1}


def test_max_files_stops_the_walk_and_marks_it_partial(tmp_path: Path) -> None:
    touch(tmp_path, *(f"f{i}.csv" for i in range(5)), "sub/g.csv")

    layout = scan_tree(tmp_path, max_files=3)

    assert len(layout.sources) == 3
    assert layout.truncated and not layout.complete
    assert layout.folders["default"] is False
    assert layout.failures == ["listing stopped after 3 data files (max_files)"]


def test_symlinks_are_skipped_unless_followed(tmp_path: Path) -> None:
    touch(tmp_path, "data/a.csv", "elsewhere/b.csv")
    os.symlink(tmp_path / "elsewhere", tmp_path / "data" / "linked")
    os.symlink(tmp_path / "elsewhere" / "b.csv", tmp_path / "data" / "c.csv")
    os.symlink(tmp_path / "data", tmp_path / "data" / "loop")  # a cycle when followed
    os.symlink(tmp_path / "nowhere.csv", tmp_path / "data" / "broken.csv")
    root = tmp_path / "data"

    plain = scan_tree(root)
    assert [s.rel for s in plain.sources] == ["a.csv"]
    assert plain.warnings == ["skipped 4 symbolic link(s) (follow_symlinks=false)"]

    followed = scan_tree(root, follow_symlinks=True)
    assert [s.rel for s in followed.sources] == ["a.csv", "c.csv", "linked/b.csv"]
    assert "loop: skipped, symbolic link loop" in followed.warnings
    assert "broken.csv: broken symbolic link" in followed.warnings
    assert followed.complete


def test_undecodable_names_are_skipped_with_a_warning(tmp_path: Path) -> None:
    touch(tmp_path, "ok.csv")
    bad = os.path.join(os.fsencode(tmp_path), b"bad-\xff.csv")
    try:
        with open(bad, "wb"):
            pass
    except OSError:  # pragma: no cover - a file system that insists on UTF-8 names
        pytest.skip("file system rejects non-UTF-8 names")

    layout = scan_tree(tmp_path)

    assert [s.name for s in layout.sources] == ["ok"]
    assert len(layout.warnings) == 1 and "not valid UTF-8" in layout.warnings[0]


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_tree(tmp_path / "nope")
    touch(tmp_path, "f.csv")
    with pytest.raises(NotADirectoryError):
        scan_tree(tmp_path / "f.csv")


def test_config_defaults_and_validation(tmp_path: Path) -> None:
    from datawave.datasource.connectors.files import FilesConnector

    cfg = FilesConnector.validate_config({"root": str(tmp_path / "only-on-the-edge")})
    assert isinstance(cfg, FilesConfig)
    assert cfg.database == "only-on-the-edge"
    assert cfg.formats == ["csv", "parquet", "jsonl"]
    named = FilesConfig.model_validate({"root": f"{tmp_path}/", "database_name": "lake"})
    assert named.database == "lake"
    assert FilesConfig.model_validate({"root": f"{tmp_path}/"}).database == tmp_path.name

    bad_values: list[dict[str, Any]] = [
        {"csv_delimiter": ";;"},
        {"csv_delimiter": '"'},
        {"formats": ["xlsx"]},
        {"formats": []},
        {"sample_bytes": 10},
        {"max_files": 0},
        {"colour": "red"},
    ]
    for bad in bad_values:
        with pytest.raises(ValidationFailed) as info:
            FilesConnector.validate_config({"root": "/data", **bad})
        assert info.value.errors[0]["field"].startswith("config.")
