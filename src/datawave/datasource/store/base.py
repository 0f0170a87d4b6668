"""Engine set-up, migrations and small helpers shared by the store mixins."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from datawave.datasource.errors import StoreError
from datawave.datasource.store.sealing import Sealer

__all__ = ["StoreBase", "chunked", "utcnow"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


#: Ids per ``IN (...)`` list: well under SQLite's 32,766 bound variables and cheap to plan.
CHUNK = 500


def chunked(items: Sequence[Any], n: int = CHUNK) -> Iterable[Sequence[Any]]:
    """``items`` in slices of at most ``n``, for statements with an ``IN`` list each."""
    for i in range(0, len(items), n):
        yield items[i : i + n]


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(value: Any) -> Any:
    if value is None or not isinstance(value, str | bytes):
        return value
    return json.loads(value)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class StoreBase:
    """Owns the SQLAlchemy engine. All methods are synchronous; async callers use a thread."""

    def __init__(self, url: str, *, sealer: Sealer | None = None, echo: bool = False) -> None:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        self.url = url
        self.sealer = sealer
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            kwargs["poolclass"] = NullPool if ":memory:" not in url else None
            if kwargs["poolclass"] is None:
                del kwargs["poolclass"]
        else:
            kwargs.update(pool_size=8, max_overflow=8, pool_pre_ping=True, pool_recycle=1800)
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ValueError) as exc:
            raise StoreError(f"cannot open store: {type(exc).__name__}") from exc
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(
                f"store write failed: {type(exc).__name__}: {getattr(exc, 'orig', None) or exc}"
            ) from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"store read failed: {type(exc).__name__}") from exc

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        self.engine.dispose()
