"""``POST /api/v1/reservations`` (beyond Pay-i): admit a call against its block limits without a proxy.

The plugin's limit enforcement (``instrument(enforce_limits=True)``) reserves a call's worst-case cost
here before calling the provider directly; the call's ingest (``xProxy-Reservation-ID``) settles it.
Only available when the service counts block limits on ingest (``PAYI_OTEL_INGEST_BLOCK_LIMITS=true``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from payi_otel import protocol as P
from payi_otel.service.errors import PayiApiError, bad_request
from payi_otel.service.models import Int32, NonEmptyText, OptInt32, Text, TextList
from payi_otel.service.proxy import admission as A
from payi_otel.service.routes.common import Service, errors, json_response, request_id

PATH = "/api/v1/reservations"
INGEST_BLOCK_LIMITS_ENV = "PAYI_OTEL_INGEST_BLOCK_LIMITS"


class ReservationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # 1e999, Infinity, NaN: refused

    limit_ids: Annotated[TextList, Field(min_length=1, description="The limits in effect for the call")]
    category: NonEmptyText
    resource: NonEmptyText
    input_tokens: Annotated[Int32, Field(description="An upper bound of the call's input tokens")] = 0
    max_output_tokens: Annotated[OptInt32, Field(description="The output the request allows (null: unbounded)")]
    price_as_category: Text | None = None
    price_as_resource: Text | None = None
    resource_scope: Text | None = None


class ReservationResponse(BaseModel):
    request_id: str
    reservation_id: str | None = Field(description="null when the call names no block limit: nothing to settle")
    amount: float = Field(description="The worst-case cost reserved against each block limit, USD")
    limits: dict[str, dict[str, object]]


def router(svc: Service, enabled: bool) -> APIRouter:
    api = APIRouter(tags=["limits"])

    @api.post(
        PATH,
        response_model=ReservationResponse,
        responses=errors(400, 403),
        summary="Beyond Pay-i: reserve a call's worst-case cost against its block limits (400 limit_reached "
        "when one cannot take it); the call's ingest with xProxy-Reservation-ID settles it",
    )
    async def reserve(request: Request, body: ReservationRequest) -> Response:
        app = svc.authenticate(request)
        if not enabled:
            raise PayiApiError(
                403,
                "block_limits_on_ingest_disabled",
                "reservations need the service to count block limits on ingest: start it with "
                f"{INGEST_BLOCK_LIMITS_ENV}=true",
            )
        if len(set(body.limit_ids)) != len(body.limit_ids):
            raise bad_request("duplicate_limit_id", "limit_ids lists the same limit id twice")
        worst = A.WorstCase(
            body.category,
            body.resource,
            body.input_tokens,
            body.max_output_tokens,
            body.price_as_category,
            body.price_as_resource,
            body.resource_scope,
        )

        def work() -> Response:
            unknown, _ = svc.store.check_limit_ids(app.id, body.limit_ids, svc.now_ms())
            if unknown:
                raise bad_request(
                    "invalid_limit_ids", f"limit_ids: {', '.join(P.preview(i) for i in unknown[:5])} do not exist"
                )
            admission = A.reserve(svc, app, body.limit_ids, worst)
            if not admission.admitted:
                return json_response(A.refusal(svc, app, body.limit_ids, admission), 400)
            return json_response(
                {
                    "request_id": request_id(),
                    "reservation_id": admission.reservation_id if admission.held else None,
                    "amount": admission.amount,
                    "limits": A.limit_states(svc, app, body.limit_ids, admission),
                }
            )

        return await svc.committer.run(work)

    return api
