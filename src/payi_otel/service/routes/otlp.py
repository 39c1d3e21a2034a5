"""``POST /v1/traces``: the OTLP/HTTP trace receiver (of the local service and of the relay).

Answers follow the OTLP/HTTP specification: the response has the request's encoding (protobuf or
JSON); success is 200 with an ``ExportTraceServiceResponse`` whose ``partial_success`` counts the
spans that were refused and says why; failures carry a ``google.rpc.Status`` body. 400, 401, 413 and
415 tell the sender not to retry; 503 (with ``Retry-After``) asks it to.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]  # googleapis-common-protos has no stubs
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from payi_otel import protocol as P
from payi_otel.exporters.otlp import JSON, PROTOBUF, media_type
from payi_otel.exporters.views import OtlpDecodeError

__all__ = ["DEFAULT_MAX_BODY_BYTES", "OtlpSink", "otlp_router", "read_body"]

log = logging.getLogger("payi_otel.service")

TRACES_PATH = "/v1/traces"
DEFAULT_MAX_BODY_BYTES = P.DEFAULT_MAX_BODY_BYTES  # also after decompression; OTLP exporters send a few MiB at most
RETRY_AFTER_S = 5


class ExportResult(Protocol):
    rejected_spans: int

    @property
    def error_message(self) -> str: ...


class OtlpSink(Protocol):
    """Where received spans go: the service's store, or the relay's spool."""

    def authenticate(self, key: str | None) -> Any | None:
        """The principal ``key`` authenticates (None: refused)."""

    async def export(self, principal: Any, body: bytes, content_type: str | None) -> ExportResult:
        """Take the request's spans; raises OtlpDecodeError for a body that does not decode."""


class OtlpHttpError(Exception):
    def __init__(self, status: int, code: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def _answer(media: str, rejected: int = 0, message: str = "") -> Response:
    if media == PROTOBUF:
        response = ExportTraceServiceResponse()
        if rejected or message:
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = message
        return Response(response.SerializeToString(), media_type=PROTOBUF)
    body: dict[str, Any] = {}
    if rejected or message:  # int64 is a decimal string in OTLP/JSON
        body["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
    return Response(orjson.dumps(body), media_type=JSON)


def _error(media: str, exc: OtlpHttpError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    if media == PROTOBUF:
        status = status_pb2.Status(code=exc.code, message=exc.message)
        return Response(status.SerializeToString(), exc.status, headers=headers, media_type=PROTOBUF)
    return Response(
        orjson.dumps({"code": exc.code, "message": exc.message}), exc.status, headers=headers, media_type=JSON
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, gunzipped when ``Content-Encoding: gzip``; at most ``limit`` bytes either way."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise OtlpHttpError(413, code_pb2.RESOURCE_EXHAUSTED, f"request body: larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()  # present but empty: refused
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise OtlpHttpError(415, code_pb2.INVALID_ARGUMENT, f"Content-Encoding {encoding!r}: must be gzip or identity")
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, limit)
    except zlib.error as exc:
        raise OtlpHttpError(400, code_pb2.INVALID_ARGUMENT, f"request body: not valid gzip ({exc})") from None
    if inflater.unconsumed_tail:
        raise OtlpHttpError(413, code_pb2.RESOURCE_EXHAUSTED, f"request body: larger than {limit} bytes once gunzipped")
    if not inflater.eof:
        raise OtlpHttpError(400, code_pb2.INVALID_ARGUMENT, "request body: truncated gzip stream")
    return data


_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An OTLP ExportTraceServiceRequest; `Content-Encoding: gzip` is accepted",
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {"schema": {"type": "object", "description": "OTLP/JSON ExportTraceServiceRequest"}},
        },
    },
    "parameters": [
        {"name": P.API_KEY, "in": "header", "required": True, "schema": {"type": "string"}},
        {
            "name": "Content-Encoding",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": ["gzip", "identity"]},
        },
    ],
    "responses": {
        "200": {
            "description": "ExportTraceServiceResponse (partial_success counts refused spans)",
            "content": {
                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                JSON: {"schema": {"type": "object"}},
            },
        },
        **{
            str(status): {
                "description": f"{why}: a google.rpc.Status in the request's encoding",
                "content": {
                    PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                    JSON: {"schema": {"type": "object"}},
                },
            }
            for status, why in (
                (400, "The body does not decode"),
                (401, f"Missing or unknown {P.API_KEY}"),
                (413, "The body is too large"),
                (415, "Unsupported Content-Type or Content-Encoding"),
                (503, "Not stored now; retry after Retry-After seconds"),
            )
        },
    },
}


def otlp_router(sink: OtlpSink, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> APIRouter:
    """The ``POST /v1/traces`` route over ``sink``."""
    router = APIRouter()

    @router.post(
        TRACES_PATH,
        summary="Receive OTLP traces (protobuf or JSON, gzip); each GenAI provider call becomes one request",
        openapi_extra=_OPENAPI,
        response_class=Response,
    )
    async def receive_traces(request: Request) -> Response:
        content_type = request.headers.get("content-type")
        try:
            media = media_type(content_type)
        except OtlpDecodeError as exc:
            return _error(JSON, OtlpHttpError(415, code_pb2.INVALID_ARGUMENT, str(exc)))
        try:
            principal = sink.authenticate(request.headers.get(P.API_KEY))
            if principal is None:
                raise OtlpHttpError(
                    401, code_pb2.UNAUTHENTICATED, f"the {P.API_KEY} header is missing or not a valid key"
                )
            body = await read_body(request, max_body_bytes)
            try:
                result = await sink.export(principal, body, media)
            except OtlpDecodeError as exc:
                raise OtlpHttpError(400, code_pb2.INVALID_ARGUMENT, str(exc)) from None
            except Exception as exc:
                log.exception("OTLP export request not stored")
                raise OtlpHttpError(
                    503,
                    code_pb2.UNAVAILABLE,
                    f"not stored, retry later ({type(exc).__name__})",
                    retry_after=RETRY_AFTER_S,
                ) from None
        except OtlpHttpError as exc:
            return _error(media, exc)
        return _answer(media, result.rejected_spans, result.error_message)

    return router
