"""OTLP/gRPC trace receiver (``opentelemetry.proto.collector.trace.v1.TraceService/Export``).

The same semantics as ``POST /v1/traces`` over the same :class:`~payi_otel.service.routes.otlp.OtlpSink`:
the key travels in the ``xproxy-api-key`` metadata entry, gzip is handled by gRPC, refused spans are
counted in ``partial_success``. Status codes: ``UNAUTHENTICATED`` for a missing or wrong key,
``INVALID_ARGUMENT`` for a body that does not decode, ``UNAVAILABLE`` (retryable) when the spans could
not be taken now.

gRPC serves requests on its own threads; each request's work runs on the event loop of the HTTP server
(``loop``), so both receivers share one store connection and one group commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from payi_otel import protocol as P
from payi_otel.exporters.otlp import PROTOBUF
from payi_otel.exporters.views import OtlpDecodeError
from payi_otel.service.routes.otlp import DEFAULT_MAX_BODY_BYTES, OtlpSink

if TYPE_CHECKING:
    import grpc

__all__ = ["grpc_receiver", "start_grpc_receiver"]

log = logging.getLogger("payi_otel.service")

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_KEY = P.API_KEY.lower()  # gRPC metadata keys are lower-case


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


async def _export(sink: OtlpSink, key: str | None, body: bytes) -> ExportTraceServiceResponse:
    import grpc

    principal = sink.authenticate(key)
    if principal is None:
        raise _Refused(grpc.StatusCode.UNAUTHENTICATED, f"the {_KEY} metadata is missing or not a valid key")
    try:
        result = await sink.export(principal, body, PROTOBUF)
    except OtlpDecodeError as exc:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
    except Exception as exc:
        log.exception("OTLP/gRPC export request not stored")
        raise _Refused(grpc.StatusCode.UNAVAILABLE, f"not stored, retry later ({type(exc).__name__})") from None
    response = ExportTraceServiceResponse()
    if result.rejected_spans or result.error_message:
        response.partial_success.rejected_spans = result.rejected_spans
        response.partial_success.error_message = result.error_message
    return response


def start_grpc_receiver(
    sink: OtlpSink, loop: asyncio.AbstractEventLoop, host: str, port: int, *, workers: int = 4
) -> tuple[grpc.Server, int]:
    """Start the receiver on ``host:port`` (0: any free port); returns the server and the bound port."""
    import grpc  # only services that receive OTLP/gRPC pay for importing it

    def export(body: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        key = next((value for name, value in context.invocation_metadata() if name == _KEY), None)
        future = asyncio.run_coroutine_threadsafe(_export(sink, key if isinstance(key, str) else None, body), loop)
        try:
            return future.result()
        except _Refused as refused:
            context.abort(refused.code, refused.message)
            raise  # abort raises; this line is never reached

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                export,
                request_deserializer=_raw,  # the receiver decodes the bytes itself (see exporters.otlp_proto)
                response_serializer=ExportTraceServiceResponse.SerializeToString,
            )
        },
    )
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", DEFAULT_MAX_BODY_BYTES)]
    server = grpc.server(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="payi-otel-grpc"), options=options)
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"OTLP/gRPC receiver: cannot listen on {host}:{port}")
    server.start()
    return server, bound


def _raw(body: bytes) -> bytes:
    return body


@asynccontextmanager
async def grpc_receiver(app: Any, sink: OtlpSink, host: str, port: int | None) -> AsyncIterator[None]:
    """For an app's lifespan: the receiver on ``host:port`` while the app runs (none when ``port`` is None);
    the bound port is ``app.state.otlp_grpc_port``. In-flight requests get 5 seconds at the end."""
    if port is None:
        app.state.otlp_grpc_port = None
        yield
        return
    server, app.state.otlp_grpc_port = start_grpc_receiver(sink, asyncio.get_running_loop(), host, port)
    log.info("OTLP/gRPC receiver listening on %s:%d", host, app.state.otlp_grpc_port)
    try:
        yield
    finally:
        await asyncio.to_thread(lambda: server.stop(5).wait())
