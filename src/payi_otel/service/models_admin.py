"""Models of ``/api/v1/admin``: the organization (groups, applications, key slots) and use cases overview."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# The local service's rule for application and group names (Pay-i documents none): safe in URLs,
# reports and shell commands, like use case names.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="1-64 letters, digits, '.', '_' or '-'")]


class KeySlot(BaseModel):
    slot: int = Field(description="1 or 2: every application has two independently rotatable keys")
    prefix: str = Field(description="The start of the key, to tell keys apart (the key itself is never shown again)")
    created: str = Field(description="When this key was issued (ISO 8601)")


class ApplicationUsage(BaseModel):
    name: str
    group: str
    created: str
    keys: list[KeySlot]
    requests: int
    cost_usd: float | None = Field(description="Cost of the priced requests of the window; null when none was priced")
    unpriced_requests: int
    failures: int
    input_tokens: int
    output_tokens: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None


class Group(BaseModel):
    name: str
    applications: list[ApplicationUsage]
    requests: int
    cost_usd: float | None


class Organization(BaseModel):
    request_id: str
    since: str | None
    until: str | None
    groups: list[Group] = Field(description="Groups by name, each with its applications by name")


class CreateApplication(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # 1e999, Infinity, NaN: refused

    name: Name
    group: Name = "default"


class IssuedKey(BaseModel):
    slot: int
    key: str = Field(description="The API key: shown this once, only its digest is stored")
    prefix: str


class CreatedApplication(BaseModel):
    request_id: str
    name: str
    group: str
    keys: list[IssuedKey]


class RotatedKey(BaseModel):
    request_id: str
    name: str
    slot: int
    key: str = Field(description="The new API key: shown this once; the slot's old key stopped working")
    prefix: str


class KpiSummary(BaseModel):
    name: str
    kpi_type: str
    goal: float
    mean_score: float | None
    scored_instances: int


class UseCaseSummary(BaseModel):
    application: str
    use_case_name: str
    version: int
    description: str | None
    instances: int
    kpis: list[KpiSummary]


class UseCaseInstance(BaseModel):
    application: str
    use_case_name: str
    use_case_id: str
    version: int
    created: str
    kpi_scores: dict[str, float]


class UseCasesOverview(BaseModel):
    request_id: str
    use_cases: list[UseCaseSummary]
    recent_instances: list[UseCaseInstance] = Field(description="The newest instances, with their KPI scores")
