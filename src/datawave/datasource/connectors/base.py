"""The connector plugin contract.

A connector is a subclass of :class:`Connector` with a pydantic config model. It turns one data
source into typed records (:mod:`datawave.datasource.models`) and reports; it knows nothing of
the store, Ray, NATS or metrics. Blocking drivers run through :func:`run_blocking` so the event
loop of an owner actor or edge agent never stalls.
"""

from __future__ import annotations

import asyncio
import fnmatch
import gc
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from datawave.datasource.errors import ValidationFailed
from datawave.datasource.models import DiscoveryResult, HealthReport, TestReport
from datawave.datasource.security.secrets import SecretResolver

__all__ = [
    "Connector",
    "ConnectorConfig",
    "ConnectorReport",
    "DiscoveryFilters",
    "gc_paused",
    "merge_secrets",
    "run_blocking",
    "split_secrets",
    "validation_errors",
]

T = TypeVar("T")


async def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """The one way connectors call a blocking driver."""
    return await asyncio.to_thread(fn, *args)


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = False
#: Young objects above which leaving :func:`gc_paused` promotes them instead of letting the
#: next allocation traverse them (the collector's own threshold is 700).
_PROMOTE_AT = 10_000


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while records are built.

    Building 5,000 tables allocates ~250,000 containers that all survive, so CPython runs
    several full collections over the whole heap on the way: measured, they cost more than the
    building itself. None of these objects form cycles, so pausing loses nothing; the window is
    bounded by one build, and nesting or concurrent builds re-enable collection only when the
    last one ends (and only if it was enabled before).

    On the way out, when the window left many young objects (a build, not a health probe's
    ``SELECT 1``), they are moved to the oldest generation (``gc.freeze()`` +
    ``gc.unfreeze()``, a constant-time list splice) before collection is re-enabled.
    Otherwise the first allocation afterwards runs a young-generation collection that
    traverses every one of them (~0.13 s after a 5,000-table build). Cycles made in the window
    are still collected, by the next full collection. Skipped when something else keeps
    objects frozen (a pre-fork server): unfreezing would release them.
    """
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                if gc.get_count()[0] > _PROMOTE_AT and gc.get_freeze_count() == 0:
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()


class DiscoveryFilters(BaseModel):
    """Include / exclude glob patterns (``fnmatch``, case-sensitive).

    Table patterns match ``table`` or ``schema.table``. An empty include list includes all.
    """

    model_config = ConfigDict(extra="forbid")

    include_databases: list[str] = Field(default_factory=list)
    exclude_databases: list[str] = Field(default_factory=list)
    include_schemas: list[str] = Field(default_factory=list)
    exclude_schemas: list[str] = Field(default_factory=list)
    include_tables: list[str] = Field(default_factory=list)
    exclude_tables: list[str] = Field(default_factory=list)

    @staticmethod
    def _ok(value: str, include: list[str], exclude: list[str], alt: str | None = None) -> bool:
        cands = (value,) if alt is None else (value, alt)
        if include and not any(fnmatch.fnmatchcase(c, p) for c in cands for p in include):
            return False
        return not any(fnmatch.fnmatchcase(c, p) for c in cands for p in exclude)

    def database(self, name: str) -> bool:
        return self._ok(name, self.include_databases, self.exclude_databases)

    def schema(self, name: str) -> bool:  # type: ignore[override]  # not BaseModel.schema
        return self._ok(name, self.include_schemas, self.exclude_schemas)

    def table(self, schema: str, name: str) -> bool:
        return self._ok(name, self.include_tables, self.exclude_tables, f"{schema}.{name}")


class ConnectorConfig(BaseModel):
    """Base of every connector config: unknown fields are errors, secrets are ``SecretStr``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout_s: float = Field(5.0, gt=0, le=600, description="Reach + authenticate")
    step_timeout_s: float = Field(30.0, gt=0, le=3600, description="Each test/discovery step")
    filters: DiscoveryFilters = Field(default_factory=DiscoveryFilters)

    def secret_values(self) -> list[str]:
        return [v.get_secret_value() for v in _secret_items(self).values()]


class ConnectorReport(BaseModel):
    """Counters a connector keeps across calls; engines turn them into metrics."""

    queries: int = 0
    connections_opened: int = 0
    errors: int = 0
    last_error: str | None = None
    samples: list[str] = Field(default_factory=list)

    def record_error(self, message: str, *, limit: int = 10) -> None:
        self.errors += 1
        self.last_error = message
        if len(self.samples) < limit:
            self.samples.append(message)


C = TypeVar("C", bound=ConnectorConfig)


class Connector(ABC):
    """One source of metadata. Subclasses set ``type_name``, ``config_model`` and ``extra``."""

    type_name: ClassVar[str]
    config_model: ClassVar[type[ConnectorConfig]]
    extra: ClassVar[str | None] = None
    description: ClassVar[str] = ""

    def __init__(self, config: ConnectorConfig) -> None:
        self.config = config
        self.report = ConnectorReport()

    @classmethod
    def validate_config(cls, config: Mapping[str, Any] | ConnectorConfig) -> ConnectorConfig:
        """Validate ``config``; raise :class:`ValidationFailed` naming each bad field."""
        if isinstance(config, cls.config_model):
            return config
        try:
            return cls.config_model.model_validate(dict(config))
        except ValidationError as exc:
            errors = validation_errors(exc, prefix="config")
            fields = ", ".join(e["field"] for e in errors)
            raise ValidationFailed(
                f"invalid {cls.type_name} config: {fields}", errors=errors, type=cls.type_name
            ) from None

    @classmethod
    def create(cls, config: Mapping[str, Any] | ConnectorConfig) -> Self:
        return cls(cls.validate_config(config))

    @abstractmethod
    async def test_connection(self) -> TestReport:
        """Run the named steps discovery depends on; never raises for source problems."""

    @abstractmethod
    async def discover(self, *, known: Mapping[str, str] | None = None) -> DiscoveryResult:
        """Read the whole catalog in a constant number of queries per database.

        Args:
            known: qualified table name -> the signature stored by the previous run. A
                connector that computes signatures (see ``DiscoveryResult.signatures``) may
                report a table whose signature still matches in ``unchanged`` instead of
                building its record; others ignore it and return every table.

        Raises:
            ConnectorError: the source could not be read at all.
        """

    @abstractmethod
    async def check_health(self) -> HealthReport:
        """A cheap, real probe: connect (or reuse) and run a trivial query."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release pools and handles."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def redact(self, message: str) -> str:
        from datawave.datasource.errors import redact

        return redact(message, self.config.secret_values())


def validation_errors(exc: ValidationError, *, prefix: str = "") -> list[dict[str, Any]]:
    """Pydantic errors as ``{"field", "message", "type"}`` without echoing input values."""
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        out.append({"field": field, "message": err["msg"], "type": err["type"]})
    return out


def _secret_items(model: BaseModel, path: str = "") -> dict[str, SecretStr]:
    found: dict[str, SecretStr] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = f"{path}{name}"
        if isinstance(value, SecretStr):
            found[key] = value
        elif isinstance(value, BaseModel):
            found.update(_secret_items(value, key + "."))
    return found


def split_secrets(config: ConnectorConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """Split a validated config into a public JSON dict and ``{dotted.field: secret}``."""
    secrets = {k: v.get_secret_value() for k, v in _secret_items(config).items()}
    public = config.model_dump(mode="json", exclude_defaults=False)
    for dotted in secrets:
        parts = dotted.split(".")
        node = public
        for p in parts[:-1]:
            node = node[p]
        node.pop(parts[-1], None)
    return public, secrets


def merge_secrets(
    public: Mapping[str, Any],
    secrets: Mapping[str, str],
    *,
    resolver: SecretResolver | None = None,
) -> dict[str, Any]:
    """Inverse of :func:`split_secrets`.

    With ``resolver`` (only where the source is about to connect: its owner, its edge agent),
    secret references (``env:``, ``file:``, plugins) are replaced by their values first; without
    it they stay references, which is what a config patch must merge and store again.

    Raises:
        ConnectorError: a reference does not resolve (the field is named, never the value).
    """
    import copy

    if resolver is not None:
        secrets = resolver.resolve_all(secrets)
    full: dict[str, Any] = copy.deepcopy(dict(public))
    for dotted, value in secrets.items():
        parts = dotted.split(".")
        node = full
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return full
