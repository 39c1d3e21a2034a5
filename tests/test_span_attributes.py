"""The response-side attribute writer stores exactly what the SDK's own ``Span.set_attributes`` would: each case
writes the same attributes on two real SDK spans, one through ``payi_otel.span_attributes.set_attributes`` and one
through the SDK, and compares what a span exporter receives (attributes in order, dropped count)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanLimits, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind

from payi_otel import span_attributes
from payi_otel.span_attributes import SpanStarter, set_attributes

START = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "server.port": 443}
RESPONSE = {
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.response.finish_reasons": ["stop", "length"],
    "gen_ai.usage.input_tokens": 12,
    "payi.usage.complete": False,
    "payi.time_to_first_token_ms": 0,
    "gen_ai.request.temperature": 0.5,
}


def _pair(limits: SpanLimits | None = None, start: dict[str, Any] | None = None) -> tuple[Any, ...]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=limits) if limits is not None else TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    ours = tracer.start_span("ours", attributes=START if start is None else start)
    sdk = tracer.start_span("sdk", attributes=START if start is None else start)
    return exporter, ours, sdk


def _exported(exporter: InMemorySpanExporter) -> dict[str, tuple[list[tuple[str, Any]], int]]:
    return {s.name: (list((s.attributes or {}).items()), s.dropped_attributes) for s in exporter.get_finished_spans()}


def _compare(exporter: InMemorySpanExporter, ours: Any, sdk: Any, attributes: dict[str, Any]) -> None:
    set_attributes(ours, attributes)
    sdk.set_attributes(attributes)
    ours.end()
    sdk.end()
    got = _exported(exporter)
    assert got["ours"] == got["sdk"]


@pytest.mark.parametrize(
    "attributes",
    [
        RESPONSE,
        {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.output_tokens": 5},  # a key again: moves to the end
        {"gen_ai.response.finish_reasons": []},
        {"payi.function_calls": [1, "a"]},  # not a list of str: the SDK cleans it
        {"payi.thing": ("a", "b")},  # a tuple of str: stored as it is (the SDK stores an equal tuple)
        {"payi.thing": ("a", 1)},  # not a tuple of str: the SDK's own path
        {"payi.thing": ()},
        {"payi.thing": None},
        {},
    ],
)
def test_same_attributes_as_the_sdk(attributes: dict[str, Any]) -> None:
    exporter, ours, sdk = _pair()
    _compare(exporter, ours, sdk, attributes)


def test_a_list_is_stored_as_the_sdk_stores_it() -> None:
    exporter, ours, sdk = _pair()
    _compare(exporter, ours, sdk, RESPONSE)
    attrs = dict(_exported(exporter)["ours"][0])
    assert attrs["gen_ai.response.finish_reasons"] == ("stop", "length")


@pytest.mark.parametrize(
    "limits",
    [
        SpanLimits(max_span_attributes=5),  # room for two of the six: the SDK drops the oldest
        SpanLimits(max_span_attributes=9),  # exactly room for all
        SpanLimits(max_span_attribute_length=4),  # strings truncated
        SpanLimits(max_span_attributes=0),
    ],
)
def test_limits_apply_as_in_the_sdk(limits: SpanLimits) -> None:
    exporter, ours, sdk = _pair(limits)
    _compare(exporter, ours, sdk, RESPONSE)


def test_an_ended_span_is_left_alone_with_the_sdk_warning(caplog: pytest.LogCaptureFixture) -> None:
    exporter, ours, sdk = _pair()
    ours.end()
    sdk.end()
    with caplog.at_level(logging.WARNING):
        set_attributes(ours, RESPONSE)
        sdk.set_attributes(RESPONSE)
    assert [r.getMessage() for r in caplog.records] == ["Setting attribute on ended span."] * 2
    got = _exported(exporter)
    assert got["ours"] == got["sdk"] == (list(START.items()), 0)


def test_a_span_class_with_its_own_set_attributes_is_called() -> None:
    seen: list[dict[str, Any]] = []

    class Recording(Span):
        def set_attributes(self, attributes: Any) -> None:
            seen.append(dict(attributes))
            super().set_attributes(attributes)

    _, ours, _ = _pair()
    ours.__class__ = Recording
    set_attributes(ours, RESPONSE)
    assert seen == [RESPONSE]


def test_a_non_sdk_span_gets_the_api_call() -> None:
    seen: list[dict[str, Any]] = []

    class Other:
        def set_attributes(self, attributes: Any) -> None:
            seen.append(dict(attributes))

    set_attributes(Other(), RESPONSE)  # type: ignore[arg-type]
    assert seen == [RESPONSE]


def test_other_sdk_internals_fall_back_to_the_public_method(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter, ours, sdk = _pair()
    monkeypatch.setattr(span_attributes, "_direct_types", {})
    monkeypatch.delattr(ours, "_attributes")  # as if a release renamed it
    monkeypatch.setattr(ours, "set_attributes", lambda attributes: sdk.set_attributes(attributes))
    set_attributes(ours, RESPONSE)
    assert span_attributes._direct_types[type(ours)] is False
    sdk.end()
    assert dict(_exported(exporter)["sdk"][0])["gen_ai.usage.input_tokens"] == 12


@pytest.mark.parametrize(
    ("limits", "attributes", "direct"),
    [
        (None, RESPONSE, True),
        (SpanLimits(max_span_attributes=9), RESPONSE, True),
        (SpanLimits(max_span_attributes=8), RESPONSE, False),
        (SpanLimits(max_span_attribute_length=4), RESPONSE, False),
        (None, {"payi.thing": ("a", "b")}, True),  # a tuple of str: what the SDK stores
        (None, {"payi.thing": ("a", 1)}, False),
        (None, {"payi.thing": ()}, False),
    ],
)
def test_the_direct_store_is_used_only_where_the_outcome_is_the_sdks(
    limits: SpanLimits | None, attributes: dict[str, Any], direct: bool
) -> None:
    _, ours, _ = _pair(limits)
    before = dict(ours.attributes)
    assert span_attributes.store_attributes(ours, attributes) is direct
    if not direct:
        assert dict(ours.attributes) == before  # nothing written: the SDK's path decides


# --- start attributes --------------------------------------------------------------------------------------------
START_ATTRS = {**START, "payi.use_case_name": "u", "payi.request_tags": ["a", "b"], "gen_ai.request.temperature": 0.5}


class _SeeingSampler(Sampler):
    """A sampler that decides on attributes (keeps spans whose model is gpt-4o-mini) and remembers what it saw."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
        attributes: Any = None, links: Any = None, trace_state: Any = None,
    ) -> SamplingResult:  # fmt: skip
        self.seen.append(dict(attributes or {}))
        keep = (attributes or {}).get("gen_ai.request.model") == "gpt-4o-mini"
        return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP, attributes)

    def get_description(self) -> str:
        return "seeing"


class _SeeingProcessor(SpanProcessor):
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.seen.append(dict(span.attributes or {}))


def _started(provider: TracerProvider, exporter: InMemorySpanExporter, attributes: dict[str, Any]) -> tuple[Any, ...]:
    """The same span started by SpanStarter and by the SDK; their exported (attributes, dropped)."""
    tracer = provider.get_tracer("test")
    starter = SpanStarter(tracer)
    ctx = Context()
    starter.start("ours", ctx, SpanKind.CLIENT, dict(attributes), 1).end()
    tracer.start_span("sdk", ctx, SpanKind.CLIENT, dict(attributes), start_time=1).end()
    return starter, _exported(exporter)


@pytest.mark.parametrize(
    ("sampler", "limits"),
    [
        (None, None),
        (sampling.ParentBasedTraceIdRatio(1.0), None),
        (sampling.ALWAYS_ON, SpanLimits(max_span_attributes=3)),  # too many: the SDK's own path drops the oldest
        (sampling.ALWAYS_ON, SpanLimits(max_span_attribute_length=2)),  # truncated by the SDK's own path
    ],
)
def test_start_attributes_are_stored_as_the_sdk_stores_them(sampler: Any, limits: SpanLimits | None) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, span_limits=limits or SpanLimits())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    starter, got = _started(provider, exporter, START_ATTRS)
    assert starter._direct  # the SDK's sampler and processors: the attributes are stored after the start
    assert got["ours"] == got["sdk"]
    if limits is None:
        assert got["ours"] == (list({**START_ATTRS, "payi.request_tags": ("a", "b")}.items()), 0)


def test_a_sampler_of_its_own_sees_the_start_attributes() -> None:
    exporter = InMemorySpanExporter()
    sampler = _SeeingSampler()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    starter, got = _started(provider, exporter, START_ATTRS)
    assert not starter._direct
    assert sampler.seen == [START_ATTRS, START_ATTRS]
    assert got["ours"] == got["sdk"]
    _, got = _started(provider, exporter, {**START_ATTRS, "gen_ai.request.model": "other"})
    assert list(got) == ["ours", "sdk"]  # the earlier two only: the sampler dropped both new spans


def test_a_processor_of_its_own_sees_the_start_attributes_even_when_added_later() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    starter = SpanStarter(tracer)
    starter.start("first", Context(), SpanKind.CLIENT, dict(START_ATTRS), 1).end()
    assert starter._direct
    seeing = _SeeingProcessor()
    provider.add_span_processor(seeing)
    starter.start("second", Context(), SpanKind.CLIENT, dict(START_ATTRS), 1).end()
    assert not starter._direct
    assert seeing.seen == [{**START_ATTRS, "payi.request_tags": ("a", "b")}]  # as the SDK stores them
    got = _exported(exporter)
    assert got["first"] == got["second"]


def test_a_tracer_without_the_sdk_starts_its_own_spans() -> None:
    from opentelemetry.trace import NonRecordingSpan, NoOpTracer

    starter = SpanStarter(NoOpTracer())
    for _ in range(2):  # decided once: no SDK behind a no-op tracer, ever
        span = starter.start("ours", Context(), SpanKind.CLIENT, dict(START_ATTRS), 1)
        assert isinstance(span, NonRecordingSpan)
    assert starter._sdk is None
