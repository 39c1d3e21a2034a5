"""Request and response models of the local Pay-i-compatible API (they also make /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from payi_otel import protocol as P

# Integers are JSON numbers without a fraction: "10", 10.5 and true are refused (strict).
Int32 = Annotated[int, Field(strict=True, ge=0, le=P.MAX_COUNT)]
OptInt32 = Annotated[int | None, Field(default=None, strict=True, ge=0, le=P.MAX_COUNT)]
# Ids and names: bounded, no control characters.
Text = Annotated[str, Field(max_length=P.MAX_TEXT_LENGTH, pattern=P.TEXT_PATTERN)]
NonEmptyText = Annotated[str, Field(min_length=1, max_length=P.MAX_TEXT_LENGTH, pattern=P.TEXT_PATTERN)]
PropertyValue = Annotated[str, Field(max_length=P.MAX_PROPERTY_VALUE_LENGTH)]
Properties = Annotated[dict[NonEmptyText, PropertyValue | None], Field(max_length=P.MAX_PROPERTIES)]
TextList = Annotated[list[NonEmptyText], Field(max_length=P.MAX_LIST_ITEMS)]


def _sane_year(value: datetime) -> datetime:
    if value.year < P.MIN_EVENT_YEAR:
        raise ValueError(f"year {value.year} is before {P.MIN_EVENT_YEAR}")
    return value


# ISO-8601 with a time zone (offset or Z), not before MIN_EVENT_YEAR.
EventTimestamp = Annotated[AwareDatetime, AfterValidator(_sane_year)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # 1e999, Infinity, NaN: refused


class IngestUnits(_Strict):
    input: Int32 = 0
    output: Int32 = 0


class Header(_Strict):
    name: NonEmptyText
    value: str | None = None


class FunctionCall(_Strict):
    name: Text
    arguments: str | None = None


class IngestRequest(_Strict):
    """One event for ``POST /api/v1/ingest``; attribution travels in ``xProxy-*`` headers."""

    category: NonEmptyText
    units: Annotated[dict[NonEmptyText, IngestUnits], Field(max_length=P.MAX_UNIT_TYPES)]
    resource: Text | None = None
    event_timestamp: EventTimestamp | None = None
    end_to_end_latency_ms: OptInt32 = None
    time_to_first_token_ms: OptInt32 = None
    time_to_first_completion_token_ms: OptInt32 = None
    http_status_code: Annotated[int | None, Field(default=None, strict=True, ge=100, le=999)] = None
    provider_uri: Annotated[str, Field(max_length=P.MAX_PROPERTY_VALUE_LENGTH)] | None = None
    provider_request_json: str | None = None
    provider_request_reasoning_json: str | None = None
    provider_request_headers: Annotated[list[Header], Field(max_length=P.MAX_EVENT_LIST_ITEMS)] | None = None
    provider_response_json: str | Annotated[list[str], Field(max_length=P.MAX_EVENT_LIST_ITEMS)] | None = None
    provider_response_headers: Annotated[list[Header], Field(max_length=P.MAX_EVENT_LIST_ITEMS)] | None = None
    provider_response_function_calls: Annotated[list[FunctionCall], Field(max_length=P.MAX_EVENT_LIST_ITEMS)] | None = (
        None
    )
    provider_response_id: Text | None = None
    properties: Properties | None = None
    use_case_properties: Properties | None = None


class BulkIngestRequest(IngestRequest):
    """One item of the bare JSON array of ``POST /api/v1/ingest/bulk``; attribution in the body."""

    limit_ids: TextList | None = None
    request_tags: TextList | None = None
    user_id: Text | None = None
    use_case_id: Text | None = None
    use_case_name: Text | None = None
    use_case_version: Annotated[int | None, Field(strict=True, ge=0, le=P.MAX_USE_CASE_VERSION)] = None
    use_case_step: Text | None = None
    account_name: Text | None = None
    scope: Text | None = None
    # Beyond Pay-i: what ``?id=`` is to a single ingest. An item whose id this application already
    # stored is answered as a duplicate and not stored again (used by `payi-otel ingest` for reruns).
    dedupe_id: Text | None = None
    # Beyond Pay-i: the reservation the call held against its block limits (POST /api/v1/reservations),
    # released when the item is stored; what ``xProxy-Reservation-ID`` is to a single ingest.
    reservation_id: Text | None = None


class CostBase(BaseModel):
    base: float


class TotalCost(BaseModel):
    base: float
    overrun_base: float = 0.0


class Cost(BaseModel):
    currency: str = "usd"
    input: CostBase
    output: CostBase
    total: TotalCost


class LimitState(BaseModel):
    state: str


class XproxyResult(BaseModel):
    request_id: str
    use_case_name: str | None = None
    use_case_id: str | None = None
    use_case_version: int | None = None
    use_case_step: str | None = None
    user_id: str | None = None
    account_name: str | None = None
    request_tags: list[str] | None = None
    resource_id: str | None = Field(None, description="Price snapshot used; null when the event is unpriced")
    cost: Cost | None = Field(None, description="null when the service could not price the event (never $0)")
    unknown_units: dict[str, dict[str, int]] = {}
    limits: dict[str, LimitState] = {}
    duplicate_request: bool = False
    warnings: list[str] | None = None


class IngestResponse(BaseModel):
    request_id: str
    event_timestamp: datetime
    ingest_timestamp: datetime
    xproxy_result: XproxyResult


class XproxyError(BaseModel):
    code: str
    message: str


class ApiError(BaseModel):
    statusCode: int
    message: str
    xproxy_error: XproxyError


class BulkItemError(BaseModel):
    item_index: int
    xproxy_result: ApiError


class BulkIngestResponse(BaseModel):
    request_id: str
    ingest_timestamp: datetime
    ingest_count: int
    duplicate_count: int
    error_count: int
    item_error_count: int
    total_count: int
    errors: list[BulkItemError]


class RequestResult(BaseModel):
    xproxy_result: XproxyResult


class PropertiesUpdate(_Strict):
    properties: Properties


class PropertiesResponse(BaseModel):
    request_id: str
