"""Settings and profiles."""

from datawave.datasource.config.settings import (
    ALERT_METRICS,
    AlertRule,
    ApiSettings,
    AuthSettings,
    DatawaveSettings,
    DiscoverySettings,
    EdgeSettings,
    HealthSettings,
    NatsSettings,
    OidcSettings,
    OwnerSettings,
    RaySettings,
    SecretsSettings,
    TlsSettings,
    load_settings,
)

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
