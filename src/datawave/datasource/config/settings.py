"""Settings: one pydantic-settings class, read at entry points only and passed down.

Profiles:
- ``dev`` (default): embedded SQLite store in the data dir, everything on loopback.
- ``prod``: a PostgreSQL store is required, and the API and dashboard stay on explicit hosts.
- ``edge``: an edge node; needs an ``edge.site`` and keeps its state in the LMDB cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from datawave.datasource.errors import ConfigError

__all__ = [
    "ApiSettings",
    "DatawaveSettings",
    "DiscoverySettings",
    "EdgeSettings",
    "NatsSettings",
    "OwnerSettings",
    "RaySettings",
    "load_settings",
]

Profile = Literal["dev", "prod", "edge"]


class _Section(BaseModel):
    model_config = {"extra": "forbid"}


class RaySettings(_Section):
    address: str | None = Field(None, description="Existing cluster ('auto' or host:port); None starts one")
    namespace: str = "datawave"
    num_cpus: int | None = Field(None, ge=1)
    port: int = Field(0, ge=0, le=65535, description="GCS port for `datawave up`; 0 picks a free one")
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(0, ge=0, le=65535)
    include_dashboard: bool = True


class OwnerSettings(_Section):
    """Topology of the SourceOwner shards (see actors/topology.yaml)."""

    shards: int = Field(4, ge=1, le=4096)
    num_cpus: float = Field(0.0, ge=0)
    memory_mb: int | None = Field(None, ge=64)
    max_concurrency: int = Field(256, ge=1)
    per_source_concurrency: int = Field(2, ge=1)
    per_shard_discoveries: int = Field(4, ge=1)
    max_restarts: int = Field(-1, ge=-1)
    max_task_retries: int = Field(3, ge=-1)
    job_concurrency: int = Field(16, ge=1, description="Discoveries in flight per bulk job")


class DiscoverySettings(_Section):
    step_timeout_s: float = Field(10.0, gt=0, le=3600)
    run_timeout_s: float = Field(900.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0, le=600)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(1_048_576, ge=1024)


class NatsSettings(_Section):
    url: str | None = Field(None, description="Existing NATS deployment; None starts the embedded hub")
    host: str = "127.0.0.1"
    client_port: int = Field(0, ge=0, le=65535)
    leaf_port: int = Field(0, ge=0, le=65535)
    domain: str = "core"


class EdgeSettings(_Section):
    site: str | None = None
    node: str | None = None
    cache_dir: Path | None = None


class DatawaveSettings(BaseSettings):
    """Everything datawave reads from the environment (``DATAWAVE_*``, ``__`` nests sections)."""

    model_config = SettingsConfigDict(
        env_prefix="DATAWAVE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    profile: Profile = "dev"
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".datawave")
    store_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in data_dir")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    topology_file: Path | None = None
    key_file: Path | None = Field(None, description="Key-encryption key; default data_dir/kek")
    ray: RaySettings = Field(default_factory=RaySettings)
    owners: OwnerSettings = Field(default_factory=OwnerSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    edge: EdgeSettings = Field(default_factory=EdgeSettings)

    @field_validator("store_url")
    @classmethod
    def _known_store(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        if v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://") :]
        return v

    @model_validator(mode="after")
    def _profile_rules(self) -> DatawaveSettings:
        if self.profile == "prod":
            if not self.store_url or not self.store_url.startswith("postgresql"):
                raise ValueError(
                    "store_url: profile 'prod' requires a PostgreSQL store "
                    "(set DATAWAVE_STORE_URL=postgresql://...)"
                )
        if self.profile == "edge" and not self.edge.site:
            raise ValueError("edge.site: profile 'edge' requires DATAWAVE_EDGE__SITE")
        return self

    # Derived values -----------------------------------------------------------------------
    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir / 'datawave.db'}"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "kek"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "core.json"


def _yaml_topology(path: Path) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"topology_file: cannot read {path}: {exc}", field="topology_file") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"topology_file: {path} must hold a mapping", field="topology_file")
    return doc


def load_settings(**overrides: Any) -> DatawaveSettings:
    """Read settings from the environment plus ``overrides``; errors name field and profile.

    A topology file (``DATAWAVE_TOPOLOGY_FILE``) supplies the ``owners`` section unless the
    environment or ``overrides`` set it.
    """
    try:
        settings = DatawaveSettings(**overrides)
        if settings.topology_file is not None and "owners" not in overrides:
            topo = _yaml_topology(settings.topology_file)
            owners = topo.get("owners", {})
            merged = {**owners, **settings.owners.model_dump(exclude_unset=True)}
            settings = settings.model_copy(update={"owners": OwnerSettings(**merged)})
    except ValidationError as exc:
        profile = overrides.get("profile") or _env_profile()
        parts = []
        fields = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or _field_from_msg(err["msg"])
            fields.append(loc)
            parts.append(f"{loc}: {err['msg']}")
        raise ConfigError(
            f"invalid settings for profile '{profile}': " + "; ".join(parts),
            profile=profile,
            fields=fields,
        ) from None
    return settings


def _env_profile() -> str:
    import os

    return os.environ.get("DATAWAVE_PROFILE", "dev")


def _field_from_msg(msg: str) -> str:
    head = msg.removeprefix("Value error, ").split(":", 1)[0]
    return head if " " not in head else ""
