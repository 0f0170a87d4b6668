"""A folder of CSV, Parquet and JSON-lines files, read as one database.

Mapping (``root`` is the configured folder)::

    database   database_name, else the name of the root folder
    schema     "default" for files directly under root, else the folder path ("raw/2024")
    table      one per data file, named after its stem ("clicks" for clicks.parquet), or one per
               hive-partitioned folder (children are ``key=value/`` folders), named after the
               folder, its partition keys appended as columns

Schemas come from pyarrow: a Parquet footer is exact (and gives the row count); CSV and JSON
lines are inferred from their first ``sample_bytes`` and their row count is extrapolated from the
sampled bytes per row. Names starting with ``.`` or ``_`` (``_SUCCESS``, ``.crc``) are ignored,
as pyarrow's dataset discovery does.

For this connector a "query" is one file read (a Parquet footer or a CSV / JSON-lines sample);
listing folders is not counted. ``step_timeout_s`` bounds the whole walk and, separately, the
reads of each table.

Deletion stays safe: a folder (schema) is reported complete only when its listing and every file
parse in it succeeded, and the database only when every folder was listed and ``max_files`` was
not reached. An unparseable file is a failure naming its relative path, never a crash.
"""

from __future__ import annotations

import asyncio
import codecs
import importlib.util
import io
import logging
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain, count
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from datawave.datasource.connectors.base import Connector, ConnectorConfig, run_blocking
from datawave.datasource.connectors.steps import StepRunner
from datawave.datasource.errors import ConnectorError, ConnectorTimeout, PermissionDenied
from datawave.datasource.models import (
    ColumnInfo,
    DatabaseInfo,
    DiscoveryResult,
    HealthReport,
    HealthState,
    SchemaInfo,
    TableInfo,
    TableKind,
    TestReport,
)

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow and its dataset/parquet/csv/json modules (~70 MB resident; ~25 MB in a Ray worker,
# where Ray imports pyarrow's core itself) are imported by the reads that need them, not with
# this module: a process that never reads files does not pay for them. A missing pyarrow still
# disables the plugin at load time, as the registry expects.
if importlib.util.find_spec("pyarrow") is None:
    raise ImportError("No module named 'pyarrow'", name="pyarrow")

__all__ = ["DataFile", "FileLayout", "FilesConfig", "FilesConnector", "TableSource", "scan_tree"]

logger = logging.getLogger(__name__)

FileFormat = Literal["csv", "parquet", "jsonl"]
ALL_FORMATS: tuple[FileFormat, ...] = ("csv", "parquet", "jsonl")

EXTENSIONS: dict[str, FileFormat] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
DEFAULT_SCHEMA = "default"
_IGNORED_PREFIXES = (".", "_")
_HIVE_SEGMENT = re.compile(r"^[^=]+=.*$")
_PARALLEL_READS = 8
_DEGRADED_AFTER_S = 1.0


class FilesConfig(ConnectorConfig):
    """Where the files are and how to read them.

    ``root`` is only checked by ``test_connection``: the folder may exist on an edge node only.
    """

    root: str = Field(min_length=1, description="Folder holding the data files")
    database_name: str | None = Field(
        default=None, min_length=1, description="Default: root's name"
    )
    formats: list[FileFormat] = Field(default_factory=lambda: list(ALL_FORMATS), min_length=1)
    csv_delimiter: str = Field(default=",", min_length=1, max_length=1)
    sample_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=256 * 1_048_576,
        description="Bytes read to infer CSV/JSON lines",
    )
    follow_symlinks: bool = False
    max_files: int = Field(
        default=100_000, ge=1, description="Stop listing after this many data files"
    )

    @field_validator("csv_delimiter")
    @classmethod
    def _usable_delimiter(cls, value: str) -> str:
        if value in ('"', "\n", "\r"):
            raise ValueError("a quote or line break cannot be the delimiter")
        return value

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser()

    @property
    def database(self) -> str:
        return self.database_name or Path(os.path.abspath(self.root_path)).name or "files"


# --------------------------------------------------------------------------- layout (listing)


@dataclass(frozen=True)
class DataFile:
    rel: str
    size: int


@dataclass(frozen=True)
class TableSource:
    """One table to describe: a single data file, or a hive-partitioned folder of them."""

    schema: str
    name: str
    rel: str
    format: FileFormat
    files: tuple[DataFile, ...]
    partitioned: bool = False

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass
class FileLayout:
    """What a walk of the root saw, before any file is opened.

    ``folders`` maps every listed folder's schema name to whether its listing succeeded;
    ``schemas`` holds the schema names that have at least one table (parsed or not);
    ``unlisted`` the folders that could not be read, with their ``OSError``.
    """

    sources: list[TableSource] = field(default_factory=list)
    folders: dict[str, bool] = field(default_factory=dict)
    schemas: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    complete: bool = True
    truncated: bool = False
    skipped_symlinks: int = 0
    unlisted: list[tuple[str, OSError]] = field(default_factory=list)

    def mark(self, schema: str, ok: bool) -> None:
        self.folders[schema] = self.folders.get(schema, True) and ok


def schema_name(rel_dir: str) -> str:
    return rel_dir or DEFAULT_SCHEMA


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _parent(rel: str) -> str:
    return rel.rpartition("/")[0]


@dataclass(frozen=True)
class _Entry:
    name: str
    is_dir: bool
    size: int = 0
    ident: tuple[int, int] | None = None


class _Scanner:
    """A deterministic, iterative walk; the root failing raises, anything below is reported."""

    def __init__(
        self,
        root: Path,
        *,
        formats: Collection[str],
        follow_symlinks: bool,
        max_files: int,
        root_table: str,
    ) -> None:
        self.root = root
        self.formats = frozenset(formats)
        self.follow = follow_symlinks
        self.max_files = max_files
        self.root_table = root_table
        self.layout = FileLayout()
        self._seen: set[tuple[int, int]] = set()
        self._files = 0

    def run(self) -> FileLayout:
        st = os.stat(self.root)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(f"root {str(self.root)!r} is not a directory")
        self._seen.add((st.st_dev, st.st_ino))
        pending = [""]
        while pending and not self.layout.truncated:
            rel = pending.pop()
            entries = self._try_list(rel) if rel else self._list(rel)  # the root's error raises
            if entries is None:
                # It may have been a partitioned table of its parent: the parent is incomplete.
                self.layout.mark(schema_name(_parent(rel)), False)
            else:
                pending.extend(reversed(self._folder(rel, entries)))
        for rel in pending:  # never visited (max_files): same doubt about their parents
            self.layout.mark(schema_name(_parent(rel)), False)
        if self.layout.skipped_symlinks:
            self.layout.warnings.append(
                f"skipped {self.layout.skipped_symlinks} symbolic link(s) (follow_symlinks=false)"
            )
        return self.layout

    def _try_list(self, rel: str) -> list[_Entry] | None:
        """List a folder below the root; a failure is recorded and makes the listing partial."""
        try:
            return self._list(rel)
        except OSError as exc:
            self.layout.failures.append(f"{rel}: cannot list folder: {exc.strerror or exc}")
            self.layout.unlisted.append((rel, exc))
            self.layout.complete = False
            return None

    def _list(self, rel: str) -> list[_Entry]:
        out: list[_Entry] = []
        with os.scandir(self.root / rel if rel else self.root) as it:
            for e in it:
                if e.name.startswith(_IGNORED_PREFIXES):
                    continue
                if e.is_symlink() and not self.follow:
                    self.layout.skipped_symlinks += 1
                    continue
                try:
                    e.name.encode("utf-8")
                except UnicodeEncodeError:
                    self.layout.warnings.append(
                        f"{_join(rel, repr(e.name))}: skipped, name is not valid UTF-8"
                    )
                    continue
                # Any other stat error fails the folder's listing: a data file we cannot size
                # must not silently drop out of a listing that is then taken as complete.
                try:
                    if e.is_dir():
                        ident = None
                        if self.follow:
                            st = e.stat()
                            ident = (st.st_dev, st.st_ino)
                        out.append(_Entry(e.name, True, ident=ident))
                    elif e.is_file() and _format_of(e.name) is not None:
                        out.append(_Entry(e.name, False, size=e.stat().st_size))
                    elif e.is_symlink() and not os.path.exists(e.path):
                        self.layout.warnings.append(f"{_join(rel, e.name)}: broken symbolic link")
                except FileNotFoundError:
                    continue  # removed since the folder was read
        out.sort(key=lambda x: x.name)
        return out

    def _take(self) -> bool:
        """Count one data file; False once ``max_files`` is reached."""
        if self._files >= self.max_files:
            if not self.layout.truncated:
                self.layout.truncated = True
                self.layout.complete = False
                self.layout.failures.append(
                    f"listing stopped after {self.max_files} data files (max_files)"
                )
            return False
        self._files += 1
        return True

    def _wanted(self, name: str) -> FileFormat | None:
        fmt = _format_of(name)
        return fmt if fmt in self.formats else None

    def _is_hive(self, entries: list[_Entry]) -> bool:
        dirs = [e for e in entries if e.is_dir]
        return (
            bool(dirs)
            and len(dirs) == len(entries)
            and all(_HIVE_SEGMENT.match(e.name) for e in dirs)
        )

    def _new_dir(self, entry: _Entry) -> bool:
        if entry.ident is None:
            return True
        if entry.ident in self._seen:
            return False
        self._seen.add(entry.ident)
        return True

    def _folder(self, rel: str, entries: list[_Entry]) -> list[str]:
        """Record one listed folder; return the sub-folders still to walk."""
        if self._is_hive(entries):
            self._dataset(rel, entries)
            return []
        schema = schema_name(rel)
        self.layout.mark(schema, True)
        subdirs: list[str] = []
        for e in entries:
            child = _join(rel, e.name)
            if e.is_dir:
                if self._new_dir(e):
                    subdirs.append(child)
                else:
                    self.layout.warnings.append(f"{child}: skipped, symbolic link loop")
                continue
            fmt = self._wanted(e.name)
            if fmt is None:
                continue
            if not self._take():
                self.layout.mark(schema, False)
                return []
            self.layout.counts[fmt] += 1
            self.layout.schemas.add(schema)
            self.layout.sources.append(
                TableSource(schema, Path(e.name).stem, child, fmt, (DataFile(child, e.size),))
            )
        return subdirs

    def _dataset(self, rel: str, entries: list[_Entry]) -> None:
        """A hive-partitioned folder becomes one table of its parent folder's schema."""
        schema = schema_name(_parent(rel)) if rel else DEFAULT_SCHEMA
        name = rel.rpartition("/")[2] if rel else self.root_table
        if not rel:
            self.layout.mark(DEFAULT_SCHEMA, True)
        files: list[DataFile] = []
        formats: Counter[FileFormat] = Counter()
        pending: list[tuple[str, list[_Entry]]] = [(rel, entries)]
        while pending:
            cur, listing = pending.pop()
            for e in listing:
                child = _join(cur, e.name)
                if e.is_dir:
                    if not self._new_dir(e):
                        continue
                    sub = self._try_list(child)
                    if sub is None:  # one unreadable partition: keep the stored table as is
                        self.layout.schemas.add(schema)
                        self.layout.mark(schema, False)
                        return
                    pending.append((child, sub))
                    continue
                fmt = self._wanted(e.name)
                if fmt is None:
                    continue
                if not self._take():
                    self.layout.schemas.add(schema)
                    self.layout.mark(schema, False)
                    return
                formats[fmt] += 1
                files.append(DataFile(child, e.size))
        if not files:
            return
        self.layout.counts.update(formats)
        self.layout.schemas.add(schema)
        if len(formats) > 1:
            kinds = ", ".join(sorted(formats))
            self.layout.failures.append(f"{rel or '.'}: partitioned folder mixes formats ({kinds})")
            self.layout.mark(schema, False)
            return
        files.sort(key=lambda f: f.rel)
        (fmt,) = formats
        self.layout.sources.append(
            TableSource(schema, name, rel, fmt, tuple(files), partitioned=True)
        )


def _format_of(name: str) -> FileFormat | None:
    return EXTENSIONS.get(os.path.splitext(name)[1].lower())


def scan_tree(
    root: Path,
    *,
    formats: Collection[str] = ("csv", "parquet", "jsonl"),
    follow_symlinks: bool = False,
    max_files: int = 100_000,
    root_table: str | None = None,
) -> FileLayout:
    """Walk ``root`` and group its data files into tables (no file is opened).

    Table names are unique per schema: when two sources claim one name (``a.csv`` and
    ``a.parquet``, or a partitioned folder ``a`` and ``a.csv``), partitioned folders and then
    the first path in sort order keep it, the others fall back to their file name.

    Raises:
        OSError: the root itself cannot be listed.
    """
    scanner = _Scanner(
        root,
        formats=formats,
        follow_symlinks=follow_symlinks,
        max_files=max_files,
        root_table=root_table or root.name or "files",
    )
    layout = scanner.run()
    layout.sources = _unique_names(layout.sources, layout.warnings)
    return layout


def _unique_names(sources: list[TableSource], warnings: list[str]) -> list[TableSource]:
    out: list[TableSource] = []
    taken: set[tuple[str, str]] = set()
    for src in sorted(sources, key=lambda s: (s.schema, not s.partitioned, s.rel)):
        base = src.rel.rpartition("/")[2]
        candidates = chain((src.name, base, src.rel), (f"{base}~{i}" for i in count(2)))
        name = next(c for c in candidates if (src.schema, c) not in taken)
        taken.add((src.schema, name))
        if name != src.name:
            warnings.append(f"{src.rel}: table name {src.name!r} is taken, named {name!r}")
            src = TableSource(src.schema, name, src.rel, src.format, src.files, src.partitioned)
        out.append(src)
    out.sort(key=lambda s: (s.schema, s.name))
    return out


# --------------------------------------------------------------------------- schema inference


@dataclass(frozen=True)
class _Outcome:
    """One table job: its record, or the failure naming the path (never both)."""

    table: TableInfo | None
    reads: int
    warnings: tuple[str, ...] = ()
    failure: str | None = None


class _Reads:
    """Counts file reads of one job; a plain counter the worker thread bumps."""

    def __init__(self) -> None:
        self.count = 0


@dataclass(frozen=True)
class _Sample:
    schema: pa.Schema | None
    rows: int
    used: int
    header: int
    truncated: bool

    def bytes_per_row(self) -> float | None:
        body = self.used - self.header
        return body / self.rows if self.rows > 0 and body > 0 else None


class _Reader:
    """Blocking pyarrow reads, run in worker threads."""

    def __init__(self, root: Path, config: FilesConfig) -> None:
        self.root = root
        self.delimiter = config.csv_delimiter
        self.sample_bytes = config.sample_bytes

    def parquet(self, rel: str, reads: _Reads) -> tuple[pa.Schema, int]:
        import pyarrow.parquet as pa_pq

        reads.count += 1
        meta = pa_pq.read_metadata(self.root / rel)
        return meta.schema.to_arrow_schema(), meta.num_rows

    def sample(self, rel: str, fmt: FileFormat, reads: _Reads) -> _Sample:
        import pyarrow.csv as pa_csv
        import pyarrow.json as pa_json

        reads.count += 1
        with open(self.root / rel, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(self.sample_bytes)
        truncated = size > len(data)
        if truncated:
            cut = data.rfind(b"\n")
            if cut < 0:
                raise ValueError(
                    f"no complete line in the first {len(data)} bytes; raise sample_bytes"
                )
            data = data[: cut + 1]
        if fmt == "jsonl" and data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8) :]
        if not data.strip():
            return _Sample(None, 0, len(data), 0, truncated)
        if fmt == "csv":
            table = pa_csv.read_csv(
                io.BytesIO(data),
                # One block: types are inferred from the whole sample, not its first 1 MiB.
                read_options=pa_csv.ReadOptions(block_size=len(data) + 1, use_threads=False),
                parse_options=pa_csv.ParseOptions(
                    delimiter=self.delimiter, newlines_in_values=True
                ),
            )
            header = data.find(b"\n") + 1 or len(data)
        else:
            table = pa_json.read_json(
                io.BytesIO(data),
                read_options=pa_json.ReadOptions(block_size=len(data) + 1, use_threads=False),
            )
            header = 0
        return _Sample(table.schema, table.num_rows, len(data), header, truncated)

    def partitions(self, src: TableSource) -> list[pa.Field]:
        """Partition columns as pyarrow's hive discovery types them, from the paths alone."""
        import pyarrow.dataset as pa_ds
        import pyarrow.fs as pa_fs

        options = pa_ds.FileSystemFactoryOptions(partition_base_dir=str(self.root / src.rel))
        options.partitioning_factory = pa_ds.HivePartitioning.discover()
        factory = pa_ds.FileSystemDatasetFactory(
            pa_fs.LocalFileSystem(),
            [str(self.root / f.rel) for f in src.files],
            pa_ds.ParquetFileFormat(),  # no fragment is inspected, so the format is moot
            options,
        )
        return list(factory.inspect(fragments=0))

    def describe(
        self, src: TableSource, database: str, reads: _Reads
    ) -> tuple[TableInfo, list[str]]:
        """Read what the table needs (footers or one sample) and build its record."""
        warnings: list[str] = []
        rows: int | None
        if src.format == "parquet":
            schemas, rows = [], 0
            for f in src.files:
                schema, n = self.parquet(f.rel, reads)
                schemas.append(schema)
                rows += n
            columns = _columns(_unify(schemas, src.rel, warnings), inferred=False)
        else:
            file_schema, rows = self._sampled(src, reads, warnings)
            columns = _columns(file_schema or [], inferred=True)
        props = {"format": src.format, "path": src.rel}
        kind, partition_key = TableKind.FILE, None
        if src.partitioned:
            keys = self.partitions(src)
            known = {c.name for c in columns}  # a key the files also hold is listed once
            extra = [f for f in keys if f.name not in known]
            columns += _columns(extra, inferred=True, start=len(columns) + 1)
            kind = TableKind.PARTITIONED_TABLE
            partition_key = ", ".join(f.name for f in keys) or None
            props["files"] = str(len(src.files))
        table = TableInfo(  # type: ignore[call-arg]  # "schema" alias
            database=database,
            schema=src.schema,
            name=src.name,
            kind=kind,
            columns=tuple(columns),
            partition_key=partition_key,
            row_estimate=rows,
            size_bytes=src.size_bytes,
            properties=props,
            parent=None,  # explicit: mypy without the pydantic plugin misses Field(None, ...)
            definition=None,
        )
        return table, warnings

    def _sampled(
        self, src: TableSource, reads: _Reads, warnings: list[str]
    ) -> tuple[pa.Schema | None, int | None]:
        """Schema of the first non-empty file; rows extrapolated to every file."""
        first = next((f for f in src.files if f.size > 0), None)
        sample = self.sample(first.rel, src.format, reads) if first else None
        if sample is None or sample.schema is None:
            warnings.append(f"{src.rel}: no data, the table has no columns")
            return None, 0
        if len(src.files) == 1 and not sample.truncated:
            return sample.schema, sample.rows
        per_row = sample.bytes_per_row()
        if per_row is None:
            return sample.schema, None
        body = sum(max(f.size - sample.header, 0) for f in src.files if f.size > 0)
        return sample.schema, max(sample.rows, round(body / per_row))


def _unify(schemas: list[pa.Schema], rel: str, warnings: list[str]) -> pa.Schema:
    import pyarrow as pa

    if len(schemas) == 1:
        return schemas[0]
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        warnings.append(f"{rel}: file schemas differ, using the first file's ({exc})")
        return schemas[0]


def _columns(fields: Iterable[pa.Field], *, inferred: bool, start: int = 1) -> list[ColumnInfo]:
    """Arrow fields as columns; an inferred type says nothing about nulls, so it is nullable."""
    return [
        ColumnInfo(
            name=f.name,
            ordinal=i,
            data_type=str(f.type),
            nullable=True if inferred else f.nullable,
            is_array=_is_list(f.type),
            generated=None,
        )
        for i, f in enumerate(fields, start=start)
    ]


def _is_list(t: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    )


# --------------------------------------------------------------------------- the connector


class FilesConnector(Connector):
    """CSV, Parquet and JSON-lines files under one folder; see the module docstring."""

    type_name: ClassVar[str] = "files"
    config_model: ClassVar[type[ConnectorConfig]] = FilesConfig
    extra: ClassVar[str | None] = "files"
    description: ClassVar[str] = "A folder of CSV, Parquet and JSON-lines files"

    config: FilesConfig

    def __init__(self, config: ConnectorConfig) -> None:
        if not isinstance(config, FilesConfig):
            raise TypeError(f"FilesConnector needs a FilesConfig, got {type(config).__name__}")
        super().__init__(config)

    @property
    def database(self) -> str:
        return self.config.database

    def _scan(self) -> FileLayout:
        cfg = self.config
        return scan_tree(
            cfg.root_path,
            formats=cfg.formats,
            follow_symlinks=cfg.follow_symlinks,
            max_files=cfg.max_files,
            root_table=self.database,
        )

    def _translate(self, exc: BaseException) -> ConnectorError:
        root = str(self.config.root_path)
        if isinstance(exc, ConnectorError):
            return exc
        if isinstance(exc, PermissionError):
            return PermissionDenied(f"permission denied on root {root!r}", path=root)
        if isinstance(exc, FileNotFoundError):
            return ConnectorError(f"root {root!r} does not exist", path=root)
        if isinstance(exc, NotADirectoryError):
            return ConnectorError(f"root {root!r} is not a directory", path=root)
        if isinstance(exc, TimeoutError):
            return ConnectorTimeout(f"reading root {root!r} timed out", path=root)
        if isinstance(exc, OSError):
            return ConnectorError(f"cannot read root {root!r}: {exc.strerror or exc}", path=root)
        return ConnectorError(self.redact(f"{type(exc).__name__}: {exc}"), path=root)

    # -- test_connection ------------------------------------------------------------------

    async def test_connection(self) -> TestReport:
        cfg = self.config
        runner = StepRunner(
            timeout_s=cfg.step_timeout_s, secrets=cfg.secret_values(), translate=self._translate
        )
        await runner.run(
            "open_root", self._open_root, timeout_s=cfg.connect_timeout_s, detail=lambda d: d
        )
        layout = await runner.run("list_files", self._list_files, detail=_layout_detail)
        await runner.run(
            "read_sample", lambda: self._read_samples(layout or FileLayout()), detail=lambda d: d
        )
        return runner.report()

    def _open_root(self) -> dict[str, Any]:
        """Exists, is a folder, can be listed (one entry is enough: health runs this often)."""
        root = self.config.root_path
        st = os.stat(root)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(str(root))
        with os.scandir(root) as it:
            empty = next(it, None) is None
        return {"path": str(root), "empty": empty}

    def _list_files(self) -> FileLayout:
        layout = self._scan()
        if layout.unlisted:
            rel, exc = layout.unlisted[0]
            more = len(layout.unlisted) - 1
            msg = f"{rel}: cannot list folder: {exc.strerror or exc}"
            msg += f" (and {more} more)" if more else ""
            if isinstance(exc, PermissionError):
                raise PermissionDenied(msg, path=rel)
            raise ConnectorError(msg, path=rel)
        return layout

    def _read_samples(self, layout: FileLayout) -> dict[str, Any]:
        reader = _Reader(self.config.root_path, self.config)
        filters = self.config.filters
        detail: dict[str, Any] = {}
        for src in layout.sources:
            if src.format in detail or not (
                filters.schema(src.schema) and filters.table(src.schema, src.name)
            ):
                continue
            first = src.files[0]
            single = TableSource(src.schema, src.name, first.rel, src.format, (first,))
            try:
                table, _ = reader.describe(single, self.database, _Reads())
            except Exception as exc:
                reason = self.redact(_clean(exc, self.config.root_path))
                raise ConnectorError(
                    f"{first.rel}: cannot read {src.format}: {reason}", path=first.rel
                ) from exc
            detail[src.format] = {"path": first.rel, "columns": len(table.columns)}
        return {"sampled": len(detail), **detail}

    # -- discover ---------------------------------------------------------------------------

    async def discover(self, *, known: Mapping[str, str] | None = None) -> DiscoveryResult:
        cfg, db = self.config, self.database
        if not cfg.filters.database(db):
            return DiscoveryResult(databases_complete=True)
        try:
            layout = await asyncio.wait_for(run_blocking(self._scan), timeout=cfg.step_timeout_s)
        except TimeoutError as exc:
            self.report.record_error(f"listing timed out after {cfg.step_timeout_s:g}s")
            raise ConnectorTimeout(
                f"listing {str(cfg.root_path)!r} timed out after {cfg.step_timeout_s:g}s",
                path=str(cfg.root_path),
            ) from exc
        except OSError as exc:
            err = self._translate(exc)
            self.report.record_error(err.message)
            raise err from exc

        filters = cfg.filters
        schemas = sorted(s for s in layout.schemas if filters.schema(s))
        wanted = set(schemas)
        jobs = [s for s in layout.sources if s.schema in wanted and filters.table(s.schema, s.name)]
        outcomes = await self._describe_all(jobs)

        tables: list[TableInfo] = []
        warnings, failures = list(layout.warnings), list(layout.failures)
        failed_schemas: set[str] = set()
        reads = 0
        for src, outcome in zip(jobs, outcomes, strict=True):
            reads += outcome.reads
            warnings += outcome.warnings
            if outcome.table is not None:
                tables.append(outcome.table)
            else:
                failures.append(outcome.failure or f"{src.rel}: not read")
                failed_schemas.add(src.schema)
        for msg in failures:
            self.report.record_error(msg)
        self.report.queries += reads

        complete_schemas = {
            (db, s) for s in schemas if layout.folders.get(s, False) and s not in failed_schemas
        }
        logger.info(
            "files discovery of %s: %d tables in %d schemas, %d file reads, %d failures",
            db,
            len(tables),
            len(schemas),
            reads,
            len(failures),
        )
        return DiscoveryResult(
            databases=(
                DatabaseInfo(
                    name=db,
                    size_bytes=sum(t.size_bytes or 0 for t in tables),
                    properties={"root": str(cfg.root_path)},
                ),
            ),
            schemas=tuple(SchemaInfo(database=db, name=s) for s in schemas),
            tables=tuple(tables),
            databases_complete=True,
            complete_databases=frozenset({db}) if layout.complete else frozenset(),
            complete_schemas=frozenset(complete_schemas),
            queries=reads,
            queries_per_database={db: reads},
            warnings=tuple(warnings),
            failures=tuple(failures),
        )

    async def _describe_all(self, jobs: list[TableSource]) -> list[_Outcome]:
        """Describe tables with a few reads in flight; results keep the order of ``jobs``."""
        reader = _Reader(self.config.root_path, self.config)
        results = [_Outcome(None, 0)] * len(jobs)
        todo: Iterator[tuple[int, TableSource]] = iter(enumerate(jobs))

        async def worker() -> None:
            for i, src in todo:  # shared iterator: each worker takes the next job
                results[i] = await self._describe_one(reader, src)

        await asyncio.gather(*(worker() for _ in range(min(_PARALLEL_READS, len(jobs)))))
        return results

    async def _describe_one(self, reader: _Reader, src: TableSource) -> _Outcome:
        limit = self.config.step_timeout_s
        reads = _Reads()
        try:
            table, warnings = await asyncio.wait_for(
                run_blocking(reader.describe, src, self.database, reads), timeout=limit
            )
        except TimeoutError:
            return _Outcome(
                None, reads.count, failure=f"{src.rel}: read timed out after {limit:g}s"
            )
        except Exception as exc:  # a bad file is reported, never fatal to the run
            reason = self.redact(_clean(exc, self.config.root_path))
            return _Outcome(
                None, reads.count, failure=f"{src.rel}: cannot read {src.format}: {reason}"
            )
        return _Outcome(table, reads.count, tuple(warnings))

    # -- health -------------------------------------------------------------------------------

    async def check_health(self) -> HealthReport:
        timeout = self.config.connect_timeout_s
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(run_blocking(self._open_root), timeout=timeout)
        except TimeoutError:
            return HealthReport(
                state=HealthState.DOWN,
                latency_ms=_ms_since(t0),
                error=f"listing the root timed out after {timeout:g}s",
            )
        except Exception as exc:
            return HealthReport(
                state=HealthState.DOWN,
                latency_ms=_ms_since(t0),
                error=self.redact(str(self._translate(exc))),
            )
        latency = _ms_since(t0)
        if latency > _DEGRADED_AFTER_S * 1000:
            return HealthReport(
                state=HealthState.DEGRADED,
                latency_ms=latency,
                error=f"listing the root took {latency:.0f} ms",
            )
        return HealthReport(state=HealthState.HEALTHY, latency_ms=latency)


def _layout_detail(layout: FileLayout) -> dict[str, Any]:
    return {
        "files": {fmt: layout.counts.get(fmt, 0) for fmt in ("csv", "parquet", "jsonl")},
        "tables": len(layout.sources),
        "folders": len(layout.folders),
        "truncated": layout.truncated,
        "warnings": len(layout.warnings),
    }


def _clean(exc: BaseException, root: Path) -> str:
    """The driver's message without the absolute root (failures name relative paths)."""
    msg = str(exc).strip() or type(exc).__name__
    prefix = str(root.absolute()).rstrip(os.sep) + os.sep
    return msg.replace(prefix, "").replace(str(root).rstrip(os.sep) + os.sep, "")


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
