"""Shared pieces for the OpenAI tests: telemetry fixtures, replayed clients, expectations from recordings."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import openai._base_client
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from payi_otel.instrumentation.openai import OpenAIInstrumentor
from payi_otel.testing.replay import Cassette, Interaction

CASSETTES = Path(__file__).parent / "cassettes"

# The HTTP library the installed openai is built on: httpx2 from openai 3.x on, httpx before. Tests build
# transports and clients from ``http`` so the same tests run on every supported openai major.
HTTP_LIBRARY = "httpx2" if hasattr(openai._base_client, "httpx2") else "httpx"
http = importlib.import_module(HTTP_LIBRARY)

SUPPORTED_PATH = re.compile(
    r"^(/v1/(?P<v1>chat/completions|responses|embeddings|completions|images/generations)"
    r"|/openai/deployments/(?P<dep>[^/]+)/(?P<az>chat/completions|embeddings)"
    r"|/openai/v1/(?P<azv1>responses))$"
)


class Telemetry:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])

    def spans(self) -> list[Any]:
        return [s for s in self.exporter.get_finished_spans() if s.instrumentation_scope.name == "payi_otel"]

    def one_span(self) -> Any:
        spans = self.spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def metric_points(self, name: str) -> list[Any]:
        data = self.metric_reader.get_metrics_data()
        points = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points


def payi_event(span: Any) -> dict[str, Any]:
    """The ingest event the exporter makes of ``span``: what Pay-i receives for the call."""
    from payi_otel.exporters.mapping import event_from_span

    event = event_from_span(span)
    assert event is not None, f"{span.name} is not a provider-call span"
    return event


def usage_complete(event: dict[str, Any]) -> bool:
    """False when the event is flagged ``system.usage_incomplete``."""
    return (event.get("properties") or {}).get("system.usage_incomplete") != "true"


@pytest.fixture
def telemetry():
    return Telemetry()


@pytest.fixture
def instrumented(telemetry):
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider, skip_dep_check=True
    )
    yield telemetry
    instrumentor.uninstrument()


def cassette_files() -> list[Path]:
    return sorted(p for p in CASSETTES.rglob("*.yaml"))


def client_for(interaction: Interaction, cassette: Cassette, *, is_async: bool = False) -> Any:
    """A real OpenAI / Azure OpenAI client whose HTTP transport replays ``cassette``."""
    m = SUPPORTED_PATH.match(interaction.path)
    assert m, interaction.path
    parts = urlsplit(interaction.uri)
    origin = f"{parts.scheme}://{parts.netloc}"
    transport = cassette.transport(HTTP_LIBRARY)
    http_client = (http.AsyncClient if is_async else http.Client)(transport=transport)
    if m.group("dep"):
        cls = openai.AsyncAzureOpenAI if is_async else openai.AzureOpenAI
        client = cls(
            api_key="test", api_version="2024-10-21", azure_endpoint=origin,
            azure_deployment=m.group("dep"), http_client=http_client, max_retries=0,
        )  # fmt: skip
    elif m.group("azv1"):
        cls = openai.AsyncAzureOpenAI if is_async else openai.AzureOpenAI
        client = cls(
            api_key="test",
            api_version="preview",
            base_url=f"{origin}/openai/v1/",
            http_client=http_client,
            max_retries=0,
        )
    else:
        cls = openai.AsyncOpenAI if is_async else openai.OpenAI
        client = cls(api_key="test", base_url=f"{origin}/v1", http_client=http_client, max_retries=0)
    client.payi_transport = transport  # type: ignore[attr-defined]
    return client


def surface(client: Any, path: str) -> Any:
    """``client.<path>`` (e.g. ``"responses.create"``), or skip the test: the installed openai predates it."""
    obj = client
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            pytest.skip(f"openai {openai.__version__} has no client.{path}")
    return obj


def endpoint(interaction: Interaction) -> str:
    m = SUPPORTED_PATH.match(interaction.path)
    assert m
    return m.group("v1") or m.group("az") or m.group("azv1")


def method_for(client: Any, interaction: Interaction) -> Any:
    return surface(client, {
        "chat/completions": "chat.completions.create",
        "responses": "responses.create",
        "embeddings": "embeddings.create",
        "completions": "completions.create",
        "images/generations": "images.generate",
    }[endpoint(interaction)])  # fmt: skip


def call_kwargs(method: Any, body: Any) -> dict[str, Any]:
    """The recorded request body as SDK keyword arguments (unknown keys go through ``extra_body``)."""
    body = dict(body or {})
    params = inspect.signature(method).parameters
    kwargs = {k: v for k, v in body.items() if k in params and k not in ("extra_body", "extra_headers")}
    extra = {k: v for k, v in body.items() if k not in kwargs}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs
