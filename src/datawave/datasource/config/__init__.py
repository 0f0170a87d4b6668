"""Settings and profiles."""

from datawave.datasource.config.settings import (
    ApiSettings,
    DatawaveSettings,
    DiscoverySettings,
    EdgeSettings,
    NatsSettings,
    OwnerSettings,
    RaySettings,
    load_settings,
)

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
