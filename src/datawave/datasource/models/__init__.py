"""Data shapes shared by every layer."""

from datawave.datasource.models.drift import DriftEvent, DriftKind
from datawave.datasource.models.events import Event, EventSink
from datawave.datasource.models.jobs import JobItem, JobStatus, JobView
from datawave.datasource.models.metadata import (
    ColumnInfo,
    DatabaseInfo,
    DiscoveryResult,
    ForeignKeyInfo,
    IndexInfo,
    KeyInfo,
    SchemaInfo,
    TableInfo,
    TableKind,
    columns_json,
    qualified_name,
)
from datawave.datasource.models.reports import (
    HealthReport,
    HealthState,
    RunStatus,
    RunSummary,
    StepResult,
    StepStatus,
    TestReport,
)
from datawave.datasource.models.source import SourceRecord, SourceSelector, SourceSpec

__all__ = [
    "ColumnInfo",
    "DatabaseInfo",
    "DiscoveryResult",
    "DriftEvent",
    "DriftKind",
    "Event",
    "EventSink",
    "ForeignKeyInfo",
    "HealthReport",
    "HealthState",
    "IndexInfo",
    "JobItem",
    "JobStatus",
    "JobView",
    "KeyInfo",
    "RunStatus",
    "RunSummary",
    "SchemaInfo",
    "SourceRecord",
    "SourceSelector",
    "SourceSpec",
    "StepResult",
    "StepStatus",
    "TableInfo",
    "TableKind",
    "TestReport",
    "columns_json",
    "qualified_name",
]
