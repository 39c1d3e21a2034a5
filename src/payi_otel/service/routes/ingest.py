"""``/api/v1/ingest`` (one event, attribution in ``xProxy-*`` headers) and ``/api/v1/ingest/bulk``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response

from payi_otel import protocol as P
from payi_otel.service import models
from payi_otel.service.attribution import attribution_from_headers
from payi_otel.service.ingest_bodies import parse_bulk, parse_single, require_json
from payi_otel.service.routes.common import Service, errors, json_response

_HEADER_PREFIX = P.HEADER_PREFIX.lower()  # header names arrive lower-cased
T = TypeVar("T")
# Bodies up to this size are parsed on the event loop; larger ones on a worker thread, so that
# parsing them never holds up other requests.
_INLINE_PARSE_BYTES = 64 * 1024


async def _parse(parse: Callable[[bytes], T], body: bytes) -> T:
    if len(body) <= _INLINE_PARSE_BYTES:
        return parse(body)
    return await asyncio.to_thread(parse, body)


def body_schema(model: type, *, array: bool = False) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    schema = {"type": "array", "items": ref} if array else ref
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def router(svc: Service) -> APIRouter:
    api = APIRouter(prefix="/api/v1/ingest", tags=["ingest"])
    ingestor, committer = svc.ingestor, svc.committer

    @api.post(
        "",
        response_model=models.IngestResponse,
        responses=errors(400, 413, 415),
        openapi_extra={
            **body_schema(models.IngestRequest),
            "parameters": [
                {
                    "name": "id",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Deduplication id (the SDK sends the provider response id): a repeat is not stored "
                    "again and answers with the first request_id and duplicate_request=true",
                },
                *(
                    {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
                    for h in P.SINGLE_INGEST_HEADERS
                ),
            ],
        },
        summary="Ingest one event (attribution in xProxy-* headers; ?id= deduplicates)",
    )
    async def ingest(request: Request) -> Response:
        application = svc.authenticate(request)
        require_json(request.headers.get("content-type"))
        event = await _parse(parse_single, await request.body())
        # one pass over the headers (names arrive lower-cased) instead of one scan per header
        headers = {k: v for k, v in request.headers.items() if k.startswith(_HEADER_PREFIX)}
        attr = attribution_from_headers(headers, request.query_params.get("id"))
        return json_response(await committer.run(lambda: ingestor.ingest(application, event, attr)))

    @api.post(
        "/bulk",
        response_model=models.BulkIngestResponse,
        responses=errors(400, 413, 415),
        openapi_extra=body_schema(models.BulkIngestRequest, array=True),
        summary="Ingest a bare JSON array of events (attribution in each item); "
        "bad items are reported, good ones stored",
    )
    async def ingest_bulk(request: Request) -> Response:
        application = svc.authenticate(request)
        require_json(request.headers.get("content-type"))
        items = await _parse(parse_bulk, await request.body())
        return json_response(await committer.run(lambda: ingestor.ingest_bulk(application, items)))

    return api
