"""``/api/v1/ingest`` (one event, attribution in ``xProxy-*`` headers) and ``/api/v1/ingest/bulk``.

Both are the service's hot paths: :class:`IngestFastPath` serves them straight from ASGI, ahead of
the framework's routing and dependency machinery (which cost as much CPU as ingesting the event
itself). The routes below describe them in the OpenAPI document and answer the same way when the
app runs without the fast path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payi_otel import protocol as P
from payi_otel.service import models
from payi_otel.service.attribution import attribution_from_headers
from payi_otel.service.errors import PayiApiError
from payi_otel.service.ingest_bodies import parse_bulk, parse_single, require_json
from payi_otel.service.routes.common import Service, errors, json_response

PREFIX = "/api/v1/ingest"
BULK_PATH = PREFIX + "/bulk"
_HEADER_PREFIX = P.HEADER_PREFIX.lower()  # header names arrive lower-cased
_HEADER_PREFIX_BYTES = _HEADER_PREFIX.encode()
_API_KEY = P.API_KEY.lower()
_API_KEY_BYTES = _API_KEY.encode()
T = TypeVar("T")
# Bodies up to this size are parsed on the event loop; larger ones on a worker thread, so that
# parsing them never holds up other requests.
_INLINE_PARSE_BYTES = 64 * 1024


async def _parse(parse: Callable[[bytes], T], body: bytes) -> T:
    if len(body) <= _INLINE_PARSE_BYTES:
        return parse(body)
    return await asyncio.to_thread(parse, body)


async def ingest_single(
    svc: Service, headers: Mapping[str, str], content_type: str | None, query_id: str | None, body: bytes
) -> dict[str, Any]:
    """The answer to ``POST /api/v1/ingest``; ``headers``: the ``xproxy-*`` headers, names lower-cased."""
    key = headers.get(_API_KEY)
    application, unconfirmed_key = svc.authenticate_for_write(key)
    try:
        require_json(content_type)
        event = await _parse(parse_single, body)
        attr = attribution_from_headers(headers, query_id)
    except PayiApiError:
        if unconfirmed_key is not None:  # a key no longer in use is refused first, as it is without memory
            svc.authenticate_key(key)
        raise
    answer: dict[str, Any] = await svc.committer.run_batched(
        svc.ingestor.ingest_events, (application, event, attr, unconfirmed_key)
    )
    return answer


async def ingest_bulk(svc: Service, api_key: str | None, content_type: str | None, body: bytes) -> dict[str, Any]:
    """The answer to ``POST /api/v1/ingest/bulk``."""
    application = svc.authenticate_key(api_key)
    require_json(content_type)
    items = await _parse(parse_bulk, body)
    return await svc.committer.run(lambda: svc.ingestor.ingest_bulk(application, items))


class IngestFastPath:
    """ASGI layer that answers ``POST`` on the two ingest paths itself and hands everything else on.

    Errors are Pay-i's bodies, as from the routes; an unexpected exception propagates to the
    app's error middleware (500 ``unexpected_error``), as from any route.
    """

    def __init__(self, app: ASGIApp, svc: Service) -> None:
        self.app = app
        self.svc = svc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" and scope["method"] == "POST" else None
        if path != PREFIX and path != BULK_PATH:
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        api_key = content_type = None
        for name, value in scope["headers"]:
            if name.startswith(_HEADER_PREFIX_BYTES):
                text = value.decode("latin-1")
                headers[name.decode("latin-1")] = text
                if api_key is None and name == _API_KEY_BYTES:
                    api_key = text
            elif content_type is None and name == b"content-type":
                content_type = value.decode("latin-1")
        if api_key is not None:
            headers[_API_KEY] = api_key  # the first one, as every other route reads it
        body = await read_body(receive)
        if body is None:
            return  # the client went away
        try:
            if path == PREFIX:
                answer = await ingest_single(self.svc, headers, content_type, _query_id(scope["query_string"]), body)
            else:
                answer = await ingest_bulk(self.svc, api_key, content_type, body)
            status, payload = 200, orjson.dumps(answer)
        except PayiApiError as exc:
            status, payload = exc.status, orjson.dumps(exc.body())
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _query_id(query: bytes) -> str | None:
    """The ``id`` query parameter (the last one, as the routes read it)."""
    if b"id=" not in query:
        return None
    found = None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name == "id":
            found = value
    return found


def body_schema(model: type, *, array: bool = False) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    schema = {"type": "array", "items": ref} if array else ref
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def router(svc: Service) -> APIRouter:
    api = APIRouter(prefix=PREFIX, tags=["ingest"])

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
        # one pass over the headers (names arrive lower-cased) instead of one scan per header
        headers = {k: v for k, v in request.headers.items() if k.startswith(_HEADER_PREFIX)}
        headers[_API_KEY] = request.headers.get(_API_KEY, "")
        content_type = request.headers.get("content-type")
        body = await request.body()
        return json_response(await ingest_single(svc, headers, content_type, request.query_params.get("id"), body))

    @api.post(
        "/bulk",
        response_model=models.BulkIngestResponse,
        responses=errors(400, 413, 415),
        openapi_extra=body_schema(models.BulkIngestRequest, array=True),
        summary="Ingest a bare JSON array of events (attribution in each item); "
        "bad items are reported, good ones stored",
    )
    async def bulk(request: Request) -> Response:
        body = await request.body()
        answer = await ingest_bulk(svc, request.headers.get(_API_KEY), request.headers.get("content-type"), body)
        return json_response(answer)

    return api
