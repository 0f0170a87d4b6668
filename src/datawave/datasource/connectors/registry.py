"""Connector plugins, loaded lazily and tolerantly from the ``datawave.connectors`` group.

A plugin whose driver is missing is listed as disabled with the extra to install; it never
breaks start-up (DataHub's ``api/registry.py`` does the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from datawave.datasource.connectors.base import Connector, ConnectorConfig
from datawave.datasource.errors import ConnectorDisabled, NotFound

__all__ = ["ENTRY_POINT_GROUP", "ConnectorRegistry", "PluginInfo"]

ENTRY_POINT_GROUP = "datawave.connectors"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    enabled: bool
    reason: str | None = None
    extra: str | None = None
    description: str = ""
    cls: type[Connector] | None = None


class ConnectorRegistry:
    def __init__(self, group: str = ENTRY_POINT_GROUP) -> None:
        self._group = group
        self._plugins: dict[str, PluginInfo] | None = None
        self._manual: dict[str, type[Connector]] = {}

    def register(self, cls: type[Connector]) -> None:
        """Add a connector class directly (tests, embedded plugins)."""
        self._manual[cls.type_name] = cls
        if self._plugins is not None:
            self._plugins[cls.type_name] = _info(cls)

    def _load(self) -> dict[str, PluginInfo]:
        if self._plugins is None:
            plugins: dict[str, PluginInfo] = {}
            for ep in entry_points(group=self._group):
                try:
                    cls = ep.load()
                except ImportError as exc:
                    missing = getattr(exc, "name", None) or str(exc)
                    plugins[ep.name] = PluginInfo(
                        name=ep.name,
                        enabled=False,
                        extra=ep.name,
                        reason=(
                            f"disabled: {missing} is not installed, "
                            f"pip install 'datawave-datasource[{ep.name}]'"
                        ),
                    )
                    continue
                if not (isinstance(cls, type) and issubclass(cls, Connector)):
                    plugins[ep.name] = PluginInfo(
                        name=ep.name,
                        enabled=False,
                        reason=f"disabled: {ep.value} is not a Connector",
                    )
                    continue
                plugins[ep.name] = _info(cls)
            for cls in self._manual.values():
                plugins[cls.type_name] = _info(cls)
            self._plugins = plugins
        return self._plugins

    def list(self) -> list[PluginInfo]:
        return sorted(self._load().values(), key=lambda p: p.name)

    def get(self, type_name: str) -> type[Connector]:
        info = self._load().get(type_name)
        if info is None:
            known = ", ".join(sorted(self._load()))
            raise NotFound(f"unknown connector type {type_name!r} (known: {known})", field="type")
        if not info.enabled or info.cls is None:
            raise ConnectorDisabled(info.reason or f"{type_name} is disabled", type=type_name)
        return info.cls

    def validate(self, type_name: str, config: Mapping[str, Any]) -> ConnectorConfig:
        return self.get(type_name).validate_config(config)

    def create(self, type_name: str, config: Mapping[str, Any] | ConnectorConfig) -> Connector:
        return self.get(type_name).create(config)


def _info(cls: type[Connector]) -> PluginInfo:
    return PluginInfo(
        name=cls.type_name, enabled=True, extra=cls.extra, description=cls.description, cls=cls
    )
