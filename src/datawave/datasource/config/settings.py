"""Settings: one pydantic-settings class, read at entry points only and passed down.

Profiles:
- ``dev`` (default): embedded SQLite store in the data dir, everything on loopback.
- ``prod``: a PostgreSQL store is required, and the API and dashboard stay on explicit hosts.
- ``edge``: an edge node; needs an ``edge.site`` and keeps its state in the LMDB cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from datawave.datasource.errors import ConfigError

__all__ = [
    "ALERT_METRICS",
    "AlertRule",
    "ApiSettings",
    "AuthSettings",
    "DatawaveSettings",
    "DiscoverySettings",
    "EdgeSettings",
    "HealthSettings",
    "NatsSettings",
    "OidcSettings",
    "OwnerSettings",
    "RaySettings",
    "SecretsSettings",
    "TlsSettings",
    "load_settings",
]

Profile = Literal["dev", "prod", "edge"]


class _Section(BaseModel):
    model_config = {"extra": "forbid"}


class RaySettings(_Section):
    address: str | None = Field(
        None, description="Existing cluster ('auto' or host:port); None starts one"
    )
    namespace: str = "datawave"
    num_cpus: int | None = Field(None, ge=1)
    port: int = Field(
        0, ge=0, le=65535, description="GCS port for `datawave up`; 0 picks a free one"
    )
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(0, ge=0, le=65535)
    include_dashboard: bool = True
    client_server: bool = Field(
        False,
        description="Keep the Ray Client server (ray://, port 10001) `ray start` always starts; "
        "datawave never uses it, so `datawave up` stops it",
    )
    malloc_arena_max: int | None = Field(
        2,
        ge=1,
        le=64,
        description="MALLOC_ARENA_MAX for every process of the head `datawave up` starts: "
        "2 keeps each worker's heap small; None leaves glibc's default (8 per core)",
    )
    bind_host: str = Field(
        "127.0.0.1",
        description="Address `datawave up` binds Ray's GCS, raylet, workers and agents to; "
        "loopback keeps the whole head local (see cluster/NETWORK.md)",
    )


class OwnerSettings(_Section):
    """Topology of the SourceOwner shards (see actors/topology.yaml)."""

    shards: int = Field(4, ge=1, le=4096)
    processes: int = Field(
        0,
        ge=0,
        le=4096,
        description="Owner processes (Ray actors) the shards are spread over: 0 = none, the "
        "core-services process hosts every shard (one machine); P >= 1 = P processes of their "
        "own, shard s in process s % P, never more than shards (a cluster: one per shard)",
    )
    num_cpus: float = Field(0.0, ge=0)
    memory_mb: int | None = Field(None, ge=64)
    max_concurrency: int = Field(256, ge=1)
    per_source_concurrency: int = Field(2, ge=1)
    per_shard_discoveries: int = Field(4, ge=1)
    max_restarts: int = Field(-1, ge=-1)
    max_task_retries: int = Field(3, ge=-1)
    job_concurrency: int = Field(16, ge=1, description="Discoveries in flight per bulk job")

    @property
    def process_count(self) -> int:
        """Owner processes of their own: ``processes``, but never more than ``shards``."""
        return min(self.processes, self.shards)


class DiscoverySettings(_Section):
    step_timeout_s: float = Field(10.0, gt=0, le=3600)
    run_timeout_s: float = Field(900.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0, le=600)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(1_048_576, ge=1024)


class OidcSettings(_Section):
    """OAuth 2 / OIDC bearer JWTs: checked against the issuer's JWKS (cached, refreshed)."""

    issuer: str | None = Field(None, description="Expected `iss`; None turns JWT login off")
    audience: str | None = Field(None, description="Expected `aud` (required when issuer is set)")
    jwks_url: str | None = Field(
        None, description="JWKS document; default <issuer>/.well-known/jwks.json"
    )
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    jwks_cache_s: float = Field(300.0, gt=0, description="How long a fetched JWKS is trusted")
    jwks_min_refresh_s: float = Field(
        10.0, ge=0, description="Least time between refetches on an unknown `kid`"
    )
    leeway_s: float = Field(30.0, ge=0, le=300)
    roles_claim: str = "roles"
    collections_claim: str = "collections"
    subject_claim: str = "sub"

    @field_validator("algorithms")
    @classmethod
    def _pinned(cls, v: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                   "ES512", "EdDSA"}  # fmt: skip
        bad = [a for a in v if a not in allowed]
        if bad or not v:
            raise ValueError(
                f"only asymmetric algorithms may be pinned ({', '.join(sorted(allowed))}); "
                f"got {', '.join(bad) or 'none'}"
            )
        return v

    @model_validator(mode="after")
    def _audience_required(self) -> OidcSettings:
        if self.issuer and not self.audience:
            raise ValueError("audience: required when auth.oidc.issuer is set")
        return self


class TlsSettings(_Section):
    """TLS for the API; with ``client_ca_file`` set, client certificates (mTLS) are verified."""

    certfile: Path | None = None
    keyfile: Path | None = None
    client_ca_file: Path | None = Field(
        None, description="CA that signs client certificates (see `datawave certs`)"
    )
    front_key_file: Path | None = Field(
        None,
        description="HMAC key of the mTLS front (serve/front.py); the API trusts forwarded "
        "client certificates signed with it. `datawave up` sets data_dir/front.key",
    )
    front_host: str = Field("127.0.0.1", description="Where `datawave up`'s mTLS front listens")
    front_port: int = Field(8443, ge=0, le=65535, description="mTLS front port; 0 picks one")


class AuthSettings(_Section):
    """Who may call the API. On by default: every route but health, metrics and the API
    description needs a credential."""

    enabled: bool = True
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    custom_roles: dict[str, list[str]] = Field(
        default_factory=dict, description="role name -> permissions (see security.policy)"
    )
    max_credential_bytes: int = Field(8192, ge=256, le=65536)
    api_key_ttl_days: int | None = Field(None, ge=1, description="Default API key expiry")


class SecretsSettings(_Section):
    """Where the key-encryption key comes from and how secret references resolve."""

    kek_provider: str = Field(
        "file", description="'file' (key_file), 'env' (kek_env) or a plugin name"
    )
    kek_env: str = "DATAWAVE_KEK"
    previous_kek_env: str = Field(
        "DATAWAVE_KEK_PREVIOUS", description="'env' provider: older KEKs, comma separated"
    )
    previous_kek_files: list[Path] = Field(
        default_factory=list, description="Older KEKs still accepted while rotating"
    )
    keyring_dir: Path | None = Field(
        None,
        description="Where rotation keeps older, still accepted KEKs (default <key_file dir>/keyring)",
    )
    store_password_file: Path | None = Field(
        None, description="Store password for actors without DATAWAVE_STORE_URL (never via Ray)"
    )


class NatsSettings(_Section):
    url: str | None = Field(
        None, description="Existing NATS deployment; None starts the embedded hub"
    )
    host: str = "127.0.0.1"
    client_port: int = Field(0, ge=0, le=65535)
    leaf_port: int = Field(0, ge=0, le=65535)
    domain: str = "core"
    leaf_tls: bool = Field(
        True, description="Leaf listener requires TLS + a client certificate from <data_dir>/ca"
    )
    edge_cert_days: int = Field(90, ge=1, le=825, description="Lifetime of edge certificates")


class EdgeSettings(_Section):
    site: str | None = None
    node: str | None = None
    cache_dir: Path | None = None
    ray_address: str | None = Field(
        None, description="Full agents: attach to this Ray (host:port); None starts a local one"
    )
    job_wait_s: float = Field(
        86400.0, gt=0, description="How long a bulk job waits for an edge discovery's result"
    )


#: What an alert rule can watch, and the unit of its ``threshold``.
ALERT_METRICS: dict[str, str] = {
    "source_down": "minutes a source has been down",
    "latency_p95": "p95 check latency in ms over the rule window",
    "discovery_failing": "consecutive failed discovery runs",
    "edge_offline": "minutes an edge node's link has been down",
    "breaking_drift": "breaking drift events within the rule window",
}


class AlertRule(_Section):
    """One alert rule; fires per source (or edge node) and resolves when the condition clears."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="Also the NATS subject leaf"
    )
    metric: str = Field(description="One of ALERT_METRICS")
    threshold: float = Field(description="Fires at or above this value (unit: see ALERT_METRICS)")
    window_s: float = Field(
        900.0, gt=0, le=7 * 86400, description="latency_p95 / breaking_drift window"
    )
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: dict[str, str] = Field(
        default_factory=dict, description="Only sources with these labels"
    )
    webhooks: list[str] = Field(
        default_factory=list, description="Extra webhook URLs for this rule"
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in ALERT_METRICS:
            raise ValueError(f"unknown metric {v!r}; known: {', '.join(sorted(ALERT_METRICS))}")
        return v

    @field_validator("threshold")
    @classmethod
    def _threshold_fits(cls, t: float, info: ValidationInfo) -> float:
        metric = info.data.get("metric")  # absent when the metric itself was invalid
        if t != t or t in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        if metric in ("discovery_failing", "breaking_drift") and (t < 1 or t != int(t)):
            raise ValueError(f"{metric} needs a whole count >= 1, got {t:g}")
        if metric in ("source_down", "edge_offline") and t < 0:
            raise ValueError(f"{metric} needs minutes >= 0, got {t:g}")
        if metric == "latency_p95" and t <= 0:
            raise ValueError(f"latency_p95 needs milliseconds > 0, got {t:g}")
        return t


def _default_rules() -> list[AlertRule]:
    return [
        AlertRule(name="source-down", metric="source_down", threshold=5, severity="critical"),
        AlertRule(name="slow-source", metric="latency_p95", threshold=2000, window_s=900),
        AlertRule(name="discovery-failing", metric="discovery_failing", threshold=3),
        AlertRule(name="edge-offline", metric="edge_offline", threshold=10, severity="critical"),
        AlertRule(name="breaking-drift", metric="breaking_drift", threshold=1, window_s=3600),
    ]


class HealthSettings(_Section):
    """Health sweeps, history and alert delivery.

    A source may override ``interval_s`` / ``timeout_s`` with the labels ``health.interval_s`` /
    ``health.timeout_s``, and opt out with ``health.enabled=false``.
    """

    enabled: bool = True
    interval_s: float = Field(60.0, gt=0, le=86400)
    timeout_s: float = Field(10.0, gt=0, le=600)
    jitter: float = Field(0.1, ge=0, le=0.5, description="Spread of the next check, as a fraction")
    backoff_max_s: float = Field(
        900.0, gt=0, description="Longest interval for a source that is down"
    )
    rise: int = Field(
        2, ge=1, le=100, description="Consecutive good results to leave down/degraded"
    )
    fall: int = Field(
        2, ge=1, le=100, description="Consecutive bad results to become down/degraded"
    )
    degraded_latency_ms: float | None = Field(
        None, gt=0, description="Slower checks count as degraded"
    )
    tick_s: float = Field(1.0, gt=0, le=60)
    refresh_s: float = Field(30.0, gt=0, description="How often the source list is re-read")
    evaluate_s: float = Field(15.0, gt=0, description="How often alert rules are evaluated")
    batch_size: int = Field(500, ge=1, le=10000, description="Checks per owner call")
    per_shard_concurrency: int = Field(128, ge=1, description="Checks in flight per owner")
    per_host_concurrency: int = Field(8, ge=1, description="Probes in flight per target host")
    bucket_s: int = Field(300, ge=10, description="Latency history granularity")
    retention_s: int = Field(7 * 86400, ge=3600, description="History older than this is deleted")
    rules: list[AlertRule] = Field(default_factory=_default_rules)
    webhooks: list[str] = Field(default_factory=list, description="Receive every alert event")
    webhook_timeout_s: float = Field(5.0, gt=0, le=120)
    webhook_retries: int = Field(5, ge=0, le=20)
    webhook_backoff_s: float = Field(0.5, gt=0, le=60)
    nats_subject_prefix: str = Field("dw.alerts", pattern=r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")

    @field_validator("rules")
    @classmethod
    def _unique_rules(cls, v: list[AlertRule]) -> list[AlertRule]:
        names = [r.name for r in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate rule names: {', '.join(dup)}")
        return v


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
    health: HealthSettings = Field(default_factory=HealthSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)

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
        if self.profile == "prod" and not (self.store_url or "").startswith("postgresql"):
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
        raise ConfigError(
            f"topology_file: cannot read {path}: {exc}", field="topology_file"
        ) from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"topology_file: {path} must hold a mapping", field="topology_file")
    return doc


def load_settings(**overrides: Any) -> DatawaveSettings:
    """Read settings from the environment plus ``overrides``; errors name field and profile.

    A topology file (``DATAWAVE_TOPOLOGY_FILE``) supplies the ``owners`` section unless the
    environment or ``overrides`` set it.
    """
    profile = overrides.get("profile") or _env_profile()
    prefix, source = "", ""
    try:
        settings = DatawaveSettings(**overrides)
        if settings.topology_file is not None and "owners" not in overrides:
            topo = _yaml_topology(settings.topology_file)
            owners = topo.get("owners") or {}
            if not isinstance(owners, dict):
                raise ConfigError(
                    f"owners: {settings.topology_file} must hold a mapping under 'owners'",
                    field="owners", profile=profile,
                )  # fmt: skip
            prefix, source = "owners.", f" (from {settings.topology_file})"
            merged = {**owners, **settings.owners.model_dump(exclude_unset=True)}
            settings = settings.model_copy(update={"owners": OwnerSettings(**merged)})
    except ValidationError as exc:
        parts = []
        fields = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or _field_from_msg(err["msg"])
            loc = prefix + loc if loc else loc
            msg = str(err["msg"]).removeprefix("Value error, ")
            fields.append(loc)
            parts.append(msg if msg.startswith(f"{loc}:") else f"{loc}: {msg}")
        raise ConfigError(
            f"invalid settings for profile '{profile}'{source}: " + "; ".join(parts),
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
