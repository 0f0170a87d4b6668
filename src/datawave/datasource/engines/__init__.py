"""Engines: plain classes that do the work; actors and edge agents only host them."""

from datawave.datasource.engines.discovery import DiscoveryEngine, plan_changes
from datawave.datasource.engines.drift import diff_tables
from datawave.datasource.engines.fingerprint import fingerprint, snapshot_fingerprint
from datawave.datasource.engines.sources import SourceService, jump_hash, shard_for

__all__ = [
    "DiscoveryEngine",
    "SourceService",
    "diff_tables",
    "fingerprint",
    "jump_hash",
    "plan_changes",
    "shard_for",
    "snapshot_fingerprint",
]
