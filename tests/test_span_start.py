"""Spans started by ``payi_otel.span_start`` (through ``SpanStarter``) are the spans ``Tracer.start_span`` makes.

Each case starts one span through the span core's starter and one through the SDK's ``Tracer.start_span``, on two
identical providers, with the random generator seeded alike (so the SDK's id generator draws the same ids), under
the same parent, with a child span (as the HTTP client's) under each; the exporters must receive the same spans:
ids, flags, trace state, parent, attributes, limits, times, kind, scope, resource."""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import SpanLimits, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState, set_span_in_context

from payi_otel import span_start
from payi_otel.span_attributes import SpanStarter

ATTRS = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "server.port": 443}
T0 = 1_700_000_000_000_000_000

checked = pytest.mark.skipif(
    not span_start._AVAILABLE, reason="the installed OpenTelemetry SDK is not a release span_start was checked against"
)

SAMPLERS = {
    "default": sampling.DEFAULT_ON,
    "always_on": sampling.ALWAYS_ON,
    "always_off": sampling.ALWAYS_OFF,
    "parent_based_off": sampling.ParentBased(sampling.ALWAYS_OFF),
    "remote_unsampled_on": sampling.ParentBased(sampling.ALWAYS_ON, remote_parent_not_sampled=sampling.ALWAYS_ON),
}

_STATE = TraceState([("vendor", "x1")])
PARENTS = {
    "root": None,
    "remote_sampled": SpanContext(0xABC, 0x123, True, TraceFlags(TraceFlags.SAMPLED), _STATE),
    "remote_unsampled": SpanContext(0xABC, 0x123, True, TraceFlags(TraceFlags.DEFAULT), _STATE),
    "remote_random": SpanContext(0xABC, 0x123, True, TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)),
    "local_unsampled": SpanContext(0xDEF, 0x456, False, TraceFlags(TraceFlags.DEFAULT)),
    "local_sampled": "a span of the same tracer",
    "invalid": SpanContext(0, 0, False),
}


def _provider(sampler: Any, limits: SpanLimits | None = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, span_limits=limits or SpanLimits())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _context(tracer: Any, parent: Any) -> tuple[Context, Any]:
    if parent is None:
        return Context(), None
    if isinstance(parent, str):  # a local span of this tracer, recording or not as the sampler decides
        span = tracer.start_span("parent", start_time=T0 - 10)
        return set_span_in_context(span), span
    return set_span_in_context(NonRecordingSpan(parent)), None


def _exported(exporter: InMemorySpanExporter) -> list[tuple[Any, ...]]:
    def ctx(c: Any) -> Any:
        if c is None:
            return None
        return c.trace_id, c.span_id, int(c.trace_flags), c.trace_state.to_header(), c.is_remote

    return [
        (s.name, ctx(s.context), ctx(s.parent), list((s.attributes or {}).items()), s.dropped_attributes, s.kind,
         s.start_time, s.end_time, s.instrumentation_scope, dict(s.resource.attributes), s.status.status_code)
        for s in exporter.get_finished_spans()
    ]  # fmt: skip


def _run(sampler: Any, parent: Any, ours: bool, limits: SpanLimits | None = None) -> tuple[Any, ...]:
    provider, exporter = _provider(sampler, limits)
    tracer = provider.get_tracer("payi_otel", "1.0")
    random.seed(20261201)
    context, parent_span = _context(tracer, parent)
    if ours:
        starter = SpanStarter(tracer)
        span = starter.start("chat gpt-4o-mini", context, SpanKind.CLIENT, dict(ATTRS), T0)
        assert starter._decided is not None, "the direct start was not used for an SDK static sampler"
    else:
        span = tracer.start_span("chat gpt-4o-mini", context, SpanKind.CLIENT, dict(ATTRS), start_time=T0)
    child = tracer.start_span("POST", set_span_in_context(span), SpanKind.CLIENT, start_time=T0 + 1)
    child.end(end_time=T0 + 2)
    span.end(end_time=T0 + 3)
    if parent_span is not None:
        parent_span.end(end_time=T0 + 4)
    described = (type(span).__name__, span.is_recording(), span.get_span_context(), child.get_span_context())
    return described, _exported(exporter)


@checked
@pytest.mark.parametrize("parent", list(PARENTS))
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_the_same_spans_as_tracer_start_span(sampler: str, parent: str) -> None:
    ours = _run(SAMPLERS[sampler], PARENTS[parent], ours=True)
    sdk = _run(SAMPLERS[sampler], PARENTS[parent], ours=False)
    assert ours == sdk
    exported = {s[0]: s for s in sdk[1]}
    if "chat gpt-4o-mini" in exported and "POST" in exported:  # the child HTTP span hangs under the call's span
        assert exported["POST"][2][:2] == exported["chat gpt-4o-mini"][1][:2]


@checked
@pytest.mark.parametrize("limits", [SpanLimits(max_span_attributes=2), SpanLimits(max_span_attribute_length=3)])
def test_span_limits_apply_as_in_the_sdk(limits: SpanLimits) -> None:
    ours = _run(sampling.DEFAULT_ON, None, True, limits)
    assert ours == _run(sampling.DEFAULT_ON, None, False, limits)
    assert dict(ours[1][1][3]) != ATTRS  # the limits did cut something


class _OwnSampler(sampling.Sampler):
    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> Any:
        return sampling.SamplingResult(sampling.Decision.RECORD_AND_SAMPLE, {"sampler.saw": name})

    def get_description(self) -> str:
        return "own"


class _OwnParentBased(sampling.ParentBased):
    pass


@checked
@pytest.mark.parametrize(
    "sampler",
    [sampling.TraceIdRatioBased(0.5), sampling.ParentBasedTraceIdRatio(0.5), _OwnSampler(),
     _OwnParentBased(sampling.ALWAYS_ON), sampling.ParentBased(_OwnSampler())],
    ids=["ratio", "parent_ratio", "own", "own_parent_based", "parent_based_own_root"],
)  # fmt: skip
def test_other_samplers_go_through_tracer_start_span(sampler: Any) -> None:
    provider, _ = _provider(sampler)
    tracer = provider.get_tracer("payi_otel")
    assert span_start.decisions(tracer) is None
    starter = SpanStarter(tracer)
    starter.start("chat", Context(), SpanKind.CLIENT, dict(ATTRS), T0)
    assert starter._decided is None


@checked
def test_a_disabled_tracer_gets_the_sdks_non_recording_span() -> None:
    provider, exporter = _provider(sampling.DEFAULT_ON)
    tracer = provider.get_tracer("payi_otel")
    tracer._tracer_config = type(tracer._tracer_config)(is_enabled=False)
    decided = span_start.decisions(tracer)
    assert decided is not None
    assert span_start.start_span(tracer, decided, "chat", Context(), SpanKind.CLIENT, T0) is None
    span = SpanStarter(tracer).start("chat", Context(), SpanKind.CLIENT, dict(ATTRS), T0)
    span.end()
    assert not span.is_recording() and exporter.get_finished_spans() == ()


def test_an_sdk_release_not_checked_is_never_started_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, _ = _provider(sampling.DEFAULT_ON)
    monkeypatch.setattr(span_start, "_AVAILABLE", False)
    assert span_start.decisions(provider.get_tracer("payi_otel")) is None


@checked
@pytest.mark.parametrize("sampler", ["default", "always_off"])
def test_the_sdks_own_span_metrics_count_the_same(monkeypatch: pytest.MonkeyPatch, sampler: str) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")

    def counted(ours: bool) -> list[tuple[str, Any, Any]]:
        reader = InMemoryMetricReader()
        provider = TracerProvider(sampler=SAMPLERS[sampler], meter_provider=MeterProvider(metric_readers=[reader]))
        tracer = provider.get_tracer("payi_otel")
        for parent in (None, PARENTS["remote_sampled"], PARENTS["local_unsampled"]):
            context, _ = _context(tracer, parent)
            if ours:
                span = SpanStarter(tracer).start("chat", context, SpanKind.CLIENT, dict(ATTRS), T0)
            else:
                span = tracer.start_span("chat", context, SpanKind.CLIENT, dict(ATTRS), start_time=T0)
            if parent is None:
                span.end()  # the others stay live
        data = reader.get_metrics_data()
        assert data is not None
        return sorted(
            (metric.name, sorted(point.attributes.items()), point.value)
            for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
            for point in metric.data.data_points
        )  # fmt: skip

    ours = counted(True)
    assert ours == counted(False)
    assert any(name == "otel.sdk.span.started" for name, _, _ in ours)
