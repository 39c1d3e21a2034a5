"""Request and response models of the use cases API (Pay-i's shapes; they also make /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat

from payi_otel import protocol as P
from payi_otel.service.models import Properties
from payi_otel.service.models_limits import LimitType

KpiType = Literal["boolean", "number", "percentage", "likert5", "likert7", "likert10"]
Name = Annotated[str, Field(pattern=f"^{P.USE_CASE_NAME_RULE.pattern}$", description=P.USE_CASE_NAME_RULE_TEXT)]
Text = Annotated[str, Field(min_length=1, max_length=1024)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # 1e999, Infinity, NaN: refused


class LimitConfig(_Strict):
    """A limit created for every new instance of the use case (its id is the instance's ``limit_id``)."""

    max: Annotated[float, Field(strict=True, gt=0, description="USD")]
    limit_type: LimitType = "allow"
    threshold: Annotated[float | None, Field(strict=True, gt=0, le=1)] = None
    properties: Properties | None = None


class DefinitionCreate(_Strict):
    name: Name
    description: Text
    limit_config: LimitConfig | None = None
    logging_enabled: StrictBool | None = None


class DefinitionUpdate(_Strict):
    description: Text | None = None
    logging_enabled: StrictBool | None = None


class Definition(BaseModel):
    request_id: str
    name: str
    description: str = Field(description='"" for a use case first seen on ingest, until one is set')
    type_version: int = Field(description="The newest version; instances get it unless they pin one")
    limit_config: LimitConfig | None = None
    logging_enabled: bool | None = None
    created_timestamp: datetime | None = None
    updated_timestamp: datetime | None = None


class DefinitionPage(BaseModel):
    request_id: str
    items: list[Definition]
    cursor: str | None
    has_more: bool


class KpiCreate(_Strict):
    name: Name
    description: Text
    kpi_type: KpiType
    goal: StrictFloat


class KpiUpdate(_Strict):
    description: Text | None = None
    goal: StrictFloat | None = None


class Kpi(BaseModel):
    request_id: str
    name: str
    description: str
    kpi_type: KpiType
    goal: float
    created_timestamp: datetime
    updated_timestamp: datetime


class KpiPage(BaseModel):
    request_id: str
    items: list[Kpi]
    cursor: str | None
    has_more: bool


class Instance(BaseModel):
    request_id: str
    use_case_id: str
    use_case_name: str
    type_version: int
    limit_id: str | None = Field(None, description="The instance's own limit (from the use case's limit_config)")
    properties: dict[str, str] = {}


class InstancePropertiesUpdate(_Strict):
    properties: Properties


class ScoreUpdate(_Strict):
    score: StrictBool | StrictFloat | None = Field(
        description="boolean: true/false; number: any; percentage: 0-100; likertN: an integer 1-N; null clears it"
    )


class InstanceKpi(BaseModel):
    kpi_name: str
    kpi_type: KpiType
    score: float
    create_timestamp: datetime
    update_timestamp: datetime


class InstanceKpiPage(BaseModel):
    request_id: str
    items: list[InstanceKpi]
    cursor: str | None
    has_more: bool
