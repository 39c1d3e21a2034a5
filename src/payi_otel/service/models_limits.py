"""Request and response models of the limits API (Pay-i's shapes; they also make /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from payi_otel.service import schedules
from payi_otel.service.models import Properties

LimitType = Literal["allow", "block"]
LIMIT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_SCHEDULE_DOC = (
    "Beyond Pay-i: reset the limit on a schedule (each reset keeps a history snapshot, as a manual reset does): "
    "`daily`, `weekly` (Mondays), `monthly` (the 1st), at midnight UTC, or an ISO 8601 duration such as `PT6H` "
    "counted from when the schedule is set. Pass it with the official client's `extra_body`."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # 1e999, Infinity, NaN: refused


class LimitCreate(_Strict):
    limit_name: Annotated[str, Field(min_length=1, max_length=256)]
    max: Annotated[float, Field(strict=True, gt=0, description="USD")]
    limit_id: Annotated[
        str | None, Field(pattern=LIMIT_ID_PATTERN, description="Caller-chosen id (default: generated)")
    ] = None
    limit_type: LimitType = "allow"
    threshold: Annotated[
        float | None, Field(strict=True, gt=0, le=1, description="Risk threshold as a fraction of max (default 1.0)")
    ] = None
    properties: Properties | None = None
    reset_schedule: Annotated[str | None, Field(description=_SCHEDULE_DOC, examples=list(schedules.CALENDAR))] = None


class LimitUpdate(_Strict):
    """Only the name and max can change (and, beyond Pay-i, the reset schedule; null removes it)."""

    limit_name: Annotated[str | None, Field(min_length=1, max_length=256)] = None
    max: Annotated[float | None, Field(strict=True, gt=0, description="USD; never below the current spend")] = None
    reset_schedule: Annotated[str | None, Field(description=_SCHEDULE_DOC)] = None


class LimitPropertiesUpdate(_Strict):
    properties: Properties


class CostDetailsBase(BaseModel):
    base: float


class CostDetails(BaseModel):
    base: float
    overrun_base: float


class CostData(BaseModel):
    input: CostDetailsBase
    output: CostDetailsBase
    total: CostDetails


class RequestsData(BaseModel):
    ok: int
    exceeded: int
    overrun: int
    blocked: int
    blocked_external: int
    failed: int
    total: int


class TotalCostData(BaseModel):
    cost: CostData
    requests: RequestsData


class Limit(BaseModel):
    limit_id: str
    limit_name: str
    limit_type: LimitType
    max: float
    threshold: float
    limit_creation_timestamp: datetime
    limit_update_timestamp: datetime
    totals: TotalCostData
    properties: dict[str, str] = {}
    state: Literal["ok", "exceeded", "overrun"] = Field(description="Beyond Pay-i: the state of the spend so far")
    reset_schedule: str | None = Field(None, description=_SCHEDULE_DOC)
    next_reset_timestamp: datetime | None = Field(None, description="When the next scheduled reset is due")


class LimitResponse(BaseModel):
    request_id: str
    message: str | None = None
    limit: Limit


class LimitPage(BaseModel):
    request_id: str
    items: list[Limit]
    cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last page")
    has_more: bool


class LimitHistory(BaseModel):
    limit_id: str
    limit_name: str
    limit_type: LimitType
    max: float
    limit_reset_timestamp: datetime
    limit_tags: list[str] = []
    totals: TotalCostData
    trigger: Literal["manual", "schedule"] = Field(description="Beyond Pay-i: what reset the limit")


class LimitHistoryResponse(BaseModel):
    request_id: str
    message: str | None = None
    limit_history: LimitHistory


class LimitHistoryList(BaseModel):
    request_id: str
    items: list[LimitHistory]


class DefaultResponse(BaseModel):
    request_id: str
    message: str | None = None
