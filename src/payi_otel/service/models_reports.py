"""Models of ``/api/v1/reports``: query parameters and answers (they also make /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from payi_otel.service.store import REPORT_DIMENSIONS, STATUSES

Dimension = Literal[tuple(REPORT_DIMENSIONS)]  # type: ignore[valid-type]
Status = Literal[tuple(STATUSES)]  # type: ignore[valid-type]
# A relative age (30m, 24h, 7d, 2w) or an ISO 8601 date-time (without a zone: UTC).
RelativeAge = Annotated[str, Field(pattern=r"^[0-9]{1,5}[smhdw]$")]


def _iso_only(value: object) -> object:
    """A date-time as ISO 8601 text only (pydantic would also read a number as seconds since the epoch)."""
    if isinstance(value, str) and not (value[:4].isdigit() and value[4:5] == "-"):
        raise ValueError("expected an ISO 8601 date-time (2026-01-31T12:00:00Z) or an age (30m, 24h, 7d, 2w)")
    return value


TimeBound = RelativeAge | Annotated[datetime, BeforeValidator(_iso_only)]
FilterValue = Annotated[str | None, Field(default=None, max_length=1024)]


class ReportWindow(BaseModel):
    """Which requests: a time window and equality filters (all must hold) on report dimensions."""

    since: TimeBound | None = Field(None, description="Start (inclusive): ISO 8601 date-time or age (30m, 24h, 7d, 2w)")
    until: TimeBound | None = Field(None, description="End (exclusive): ISO 8601 date-time or age")
    application: FilterValue = Field(None, description="Only requests of this application")
    group: FilterValue = Field(None, description="Only requests of applications in this group")
    use_case: FilterValue = None
    version: FilterValue = Field(None, description="Use case version")
    step: FilterValue = Field(None, description="Use case step")
    user: FilterValue = None
    account: FilterValue = None
    tag: FilterValue = Field(None, description="Requests carrying this request tag")
    limit_id: FilterValue = Field(None, description="Requests that counted against this limit")
    category: FilterValue = None
    resource: FilterValue = None
    day: FilterValue = Field(None, description="UTC day, YYYY-MM-DD")
    hour: FilterValue = Field(None, description="UTC hour, YYYY-MM-DDTHH:00Z")
    service: FilterValue = Field(None, description="service.name of the OpenTelemetry resource")
    namespace: FilterValue = Field(None, description="service.namespace of the OpenTelemetry resource")
    environment: FilterValue = Field(None, description="deployment.environment.name of the OpenTelemetry resource")
    status: Status | None = Field(  # type: ignore[valid-type]
        None, description="Only failed, succeeded, unpriced or priced requests"
    )

    def filters(self) -> dict[str, str]:
        """Dimension -> value of the filters given (``limit_id`` is the ``limit`` dimension)."""
        out = {
            ("limit" if k == "limit_id" else k): v
            for k, v in self.model_dump(exclude={"since", "until", "status"}).items()
        }
        return {k: v for k, v in out.items() if v is not None}


class UnitsTotal(BaseModel):
    input: int
    output: int


class ReportRow(BaseModel):
    group: dict[str, str | int | None] = Field(description="The group's value of each group_by dimension")
    requests: int
    priced_requests: int
    unpriced_requests: int = Field(description="Requests the service could not price: not counted as $0")
    cost_usd: float | None = Field(description="Cost of the priced requests; null when none was priced")
    input_tokens: int
    output_tokens: int
    failures: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    units: dict[str, UnitsTotal] = Field(description="Tokens by kind (Pay-i units): unit -> input and output")


class LimitSummary(BaseModel):
    application: str
    limit_name: str
    limit_id: str
    limit_type: str
    spend_usd: float = Field(description="Spend since the limit's last reset")
    max_usd: float
    used_percent: float | None
    threshold: float
    state: str
    requests: int
    failed: int
    reset_schedule: str | None
    next_reset: str | None


class Report(BaseModel):
    request_id: str
    group_by: list[str]
    since: str | None
    until: str | None
    filters: dict[str, str]
    rows: list[ReportRow]
    total: ReportRow
    limits: list[LimitSummary] = Field(description="Every limit of the application now: spend against max, state")


class RequestItem(BaseModel):
    request_id: str
    event_timestamp: str
    application: str
    category: str
    resource: str | None
    use_case_name: str | None
    use_case_version: int | None
    user_id: str | None
    account_name: str | None
    cost_usd: float | None
    input_tokens: int
    output_tokens: int
    failed: bool
    http_status_code: int | None
    latency_ms: int | None


class RequestPage(BaseModel):
    request_id: str
    items: list[RequestItem]
    cursor: str | None
    has_more: bool


class RequestDetail(BaseModel):
    request_id: str
    event_timestamp: str
    ingest_timestamp: str
    application: str
    category: str
    resource: str | None
    resource_id: str | None
    resource_scope: str | None
    provider_response_id: str | None
    use_case_name: str | None
    use_case_id: str | None
    use_case_version: int | None
    use_case_step: str | None
    user_id: str | None
    account_name: str | None
    http_status_code: int | None
    failed: bool
    latency_ms: int | None
    ttft_ms: int | None
    input_tokens: int
    output_tokens: int
    cost_input: float | None
    cost_output: float | None
    cost_total: float | None
    unpriced_reason: str | None
    units: dict[str, UnitsTotal]
    unknown_units: dict[str, UnitsTotal] | None
    limit_states: dict[str, str] | None = Field(description="Limit id -> its state after this request")
    request_tags: list[str] | None
    properties: dict[str, str] | None
    provider_data: dict[str, Any] | None = Field(description="Captured provider request/response, when logged")
