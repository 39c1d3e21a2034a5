"""Test helper: applications that export their spans with the OpenTelemetry SDK's real OTLP exporters.

with otlp_app(endpoint, key, protocol="http/protobuf", resource={"service.name": "bot"}) as app:
    ...  # instrument with app.provider, make calls
# leaving the block flushes and shuts the exporter down: every span was sent
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from payi_otel import protocol as P

# What each app's resource carries, and the request properties they become.
RESOURCE = {"service.name": "support-bot", "service.namespace": "support", "deployment.environment.name": "staging"}


@dataclass
class OtlpApp:
    provider: TracerProvider
    exporter: Any


@contextmanager
def otlp_app(
    endpoint: str, key: str | None, protocol: str = "http/protobuf", resource: dict[str, str] | None = None
) -> Iterator[OtlpApp]:
    """A TracerProvider exporting through the SDK's OTLP exporter: ``http/protobuf`` (gzip) to
    ``<endpoint>/v1/traces``, or ``grpc`` (gzip, plaintext) to ``endpoint`` (``host:port``)."""
    headers = {P.API_KEY: key} if key else {}
    if protocol == "grpc":
        from grpc import Compression as GrpcCompression

        metadata = {name.lower(): value for name, value in headers.items()}  # gRPC metadata keys are lower-case
        exporter: Any = GrpcSpanExporter(
            endpoint=endpoint, insecure=True, headers=metadata, compression=GrpcCompression.Gzip, timeout=10
        )
    else:
        exporter = HttpSpanExporter(
            endpoint=f"{endpoint}/v1/traces", headers=headers, compression=HttpCompression.Gzip, timeout=10
        )
    provider = TracerProvider(resource=Resource.create(RESOURCE if resource is None else resource))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    try:
        yield OtlpApp(provider, exporter)
    finally:
        provider.shutdown()  # exports what is left, then shuts the exporter down
