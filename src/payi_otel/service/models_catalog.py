"""Request and response models of the categories and resources API (Pay-i's shapes; they make /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Price = Annotated[float | None, Field(ge=0, description="USD per unit")]
MaxUnits = Annotated[int | None, Field(ge=0, le=2**63 - 1, description="At most a signed 64-bit integer")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # 1e999, Infinity, NaN: refused


class UnitPrices(_Strict):
    input_price: Price = None
    output_price: Price = None


class ResourceCreate(_Strict):
    units: Annotated[dict[str, UnitPrices], Field(min_length=1, description="Prices per unit type (text, ...)")]
    max_input_units: MaxUnits = None
    max_output_units: MaxUnits = None
    max_total_units: MaxUnits = None
    start_timestamp: datetime | None = Field(None, description="When these prices take effect (default: now)")
    scope: str | None = Field(
        None,
        description="Beyond Pay-i: the resource scope these prices apply to (an event's xProxy-Resource-Scope or "
        "bulk `scope`, e.g. `global`, `datazone`, `region`); unset: every scope without its own version",
    )


class Category(BaseModel):
    category: str
    category_type: Literal["system", "custom"]


class CategoryPage(BaseModel):
    request_id: str
    items: list[Category]
    cursor: str | None
    has_more: bool


class Resource(BaseModel):
    resource_id: str = Field(description="The id of this price version (the resource_id events priced by it carry)")
    category: str
    resource: str
    units: dict[str, UnitPrices]
    start_timestamp: datetime
    end_timestamp: datetime | None = Field(None, description="When the next version took over")
    active: bool = Field(description="In force now")
    proxy_allowed: bool
    max_input_units: int | None = None
    max_output_units: int | None = None
    max_total_units: int | None = None
    scope: str | None = None


class ResourcePage(BaseModel):
    request_id: str
    items: list[Resource]
    cursor: str | None
    has_more: bool
