"""Connector plugins: the ABC, the registry and shared helpers (drivers load lazily)."""

from datawave.datasource.connectors.base import (
    Connector,
    ConnectorConfig,
    ConnectorReport,
    DiscoveryFilters,
    gc_paused,
    merge_secrets,
    run_blocking,
    split_secrets,
)
from datawave.datasource.connectors.registry import ConnectorRegistry, PluginInfo
from datawave.datasource.connectors.steps import StepRunner

__all__ = [
    "Connector",
    "ConnectorConfig",
    "ConnectorRegistry",
    "ConnectorReport",
    "DiscoveryFilters",
    "PluginInfo",
    "StepRunner",
    "gc_paused",
    "merge_secrets",
    "run_blocking",
    "split_secrets",
]
