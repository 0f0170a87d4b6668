"""Request and response bodies of the REST API (the records themselves come from ``models``)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from datawave.datasource.models import SourceSelector

__all__ = ["DiscoveryRequest", "Page", "SearchHit", "SourcePatch"]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page")


class SourcePatch(BaseModel):
    """JSON merge patch of a source; ``config`` is merged with the stored config and secrets."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    labels: dict[str, str] | None = None
    collection: str | None = None
    edge_site: str | None = None
    description: str | None = None
    config: dict[str, Any] | None = None


class DiscoveryRequest(BaseModel):
    """Either a selector or a list of source names/ids (not both)."""

    model_config = ConfigDict(extra="forbid")

    selector: SourceSelector | None = None
    sources: list[str] | None = Field(None, min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _one_of(self) -> DiscoveryRequest:
        if (self.selector is None) == (self.sources is None):
            raise ValueError("give exactly one of 'selector' or 'sources'")
        return self


class SearchHit(BaseModel):
    type: str
    source_id: str
    database: str
    schema_: str = Field(alias="schema")
    table: str
    column: str | None = None
    kind: str | None = None
    data_type: str | None = None
    comment: str | None = None

    model_config = ConfigDict(populate_by_name=True)
