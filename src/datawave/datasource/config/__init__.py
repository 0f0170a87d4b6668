"""Settings and profiles."""

from datawave.datasource.config.settings import (
    ALERT_METRICS,
    AlertRule,
    ApiSettings,
    DatawaveSettings,
    DiscoverySettings,
    EdgeSettings,
    HealthSettings,
    NatsSettings,
    OwnerSettings,
    RaySettings,
    load_settings,
)

__all__ = [
    "ALERT_METRICS",
    "AlertRule",
    "ApiSettings",
    "DatawaveSettings",
    "DiscoverySettings",
    "EdgeSettings",
    "HealthSettings",
    "NatsSettings",
    "OwnerSettings",
    "RaySettings",
    "load_settings",
]
