"""Load order never matters: another wrapt-based instrumentation of the same SDK methods, applied before
or after ours, neither hides our spans nor loses its own, and each side's uninstrument removes only its
own layer. The peer here wraps exactly as opentelemetry-instrumentation-openai-v2 and OpenLLMetry do
(``wrapt.wrap_function_wrapper`` on the resource class, ``opentelemetry.instrumentation.utils.unwrap``);
the real packages are exercised in tests/peers/."""

from __future__ import annotations

import wrapt
from _openai_helpers import CASSETTES, Telemetry, client_for
from openai.resources.chat.completions import Completions
from openai.resources.embeddings import Embeddings
from opentelemetry.instrumentation.utils import suppress_instrumentation, unwrap

from payi_otel import track_context
from payi_otel.instrumentation.openai import OpenAIInstrumentor
from payi_otel.testing.replay import Cassette

OTEL = CASSETTES / "open-telemetry__opentelemetry-python-contrib/openai"
CHAT = Cassette.load(OTEL / "test_chat_completion_extra_params.yaml").interactions[0]
EMBED = Cassette.load(OTEL / "test_embeddings_no_content.yaml").interactions[0]
TARGETS = ((Completions, "create"), (Embeddings, "create"))


class Peer:
    """Another instrumentation: counts the calls its wrappers see."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def instrument(self) -> None:
        for owner, method in TARGETS:
            wrapt.wrap_function_wrapper(owner, method, self._wrapper)

    def uninstrument(self) -> None:
        for owner, method in TARGETS:
            unwrap(owner, method)

    def _wrapper(self, wrapped, instance, args, kwargs):
        self.seen.append(type(instance).__name__)
        return wrapped(*args, **kwargs)


def ours() -> tuple[Telemetry, OpenAIInstrumentor]:
    telemetry = Telemetry()
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    return telemetry, instrumentor


def call_both() -> None:
    with track_context(use_case_name="triage", user_id="alice"):
        client_for(CHAT, Cassette([CHAT])).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        client_for(EMBED, Cassette([EMBED])).embeddings.create(model="text-embedding-3-small", input="hi")


def attributed(telemetry: Telemetry) -> list[tuple[str, str, str]]:
    return [
        (
            s.attributes["gen_ai.operation.name"],
            s.attributes.get("payi.use_case.name"),
            s.attributes.get("payi.user_id"),
        )
        for s in telemetry.spans()
    ]


EXPECTED = [("chat", "triage", "alice"), ("embeddings", "triage", "alice")]


def is_pristine() -> bool:
    return not any(isinstance(vars(owner)[method], wrapt.ObjectProxy) for owner, method in TARGETS)


def test_peer_first_then_ours_both_trace_and_our_uninstrument_leaves_the_peer():
    peer = Peer()
    peer.instrument()
    try:
        telemetry, instrumentor = ours()
        call_both()
        assert attributed(telemetry) == EXPECTED
        assert peer.seen == ["Completions", "Embeddings"]
        instrumentor.uninstrument()
        call_both()
        assert len(telemetry.spans()) == 2  # ours is gone
        assert peer.seen == ["Completions", "Embeddings"] * 2  # the peer still works
    finally:
        peer.uninstrument()
    assert is_pristine()


def test_peer_uninstrumenting_after_ours_keeps_ours():
    peer = Peer()
    peer.instrument()
    telemetry, instrumentor = ours()
    try:
        peer.uninstrument()  # unwrap() removes the outermost layer: the peer's
        call_both()
        assert attributed(telemetry) == EXPECTED
        assert peer.seen == []
    finally:
        instrumentor.uninstrument()
    assert is_pristine()


def test_ours_first_then_peer_and_either_uninstrument_order():
    telemetry, instrumentor = ours()
    peer = Peer()
    peer.instrument()
    call_both()
    assert attributed(telemetry) == EXPECTED and len(peer.seen) == 2
    instrumentor.uninstrument()  # ours sits beneath the peer's wrapper: removed from the middle of the chain
    call_both()
    assert len(telemetry.spans()) == 2 and len(peer.seen) == 4
    peer.uninstrument()
    assert is_pristine()


def test_nothing_is_created_inside_suppress_instrumentation():
    telemetry, instrumentor = ours()
    try:
        with suppress_instrumentation():
            call_both()
        assert telemetry.spans() == []
        assert telemetry.metric_points("gen_ai.client.operation.duration") == []
        call_both()
        assert len(telemetry.spans()) == 2
    finally:
        instrumentor.uninstrument()


class _Resource:
    def fetch(self) -> str:
        return "fetched"


def test_deferred_rows_are_wrapped_at_their_first_use_and_only_while_instrumented():
    """A row behind a FirstUse (the SDK hooks only some calls need) is left alone until needed, then wrapped in
    every live instrumentor that has it, at once in one instrumented later, and never after uninstrument."""
    from payi_otel.instrumentation._wrapping import FirstUse, Target, WrapSet

    seen: list[str] = []

    def hook(wrapped, instance, args, kwargs):
        seen.append("hook")
        return wrapped(*args, **kwargs)

    first = FirstUse()
    row = [Target(__name__, "_Resource", "fetch", hook, raw=True, on_first_use=first)]
    early, gone = WrapSet(), WrapSet()
    early.wrap(row)
    gone.wrap(row)
    gone.unwrap()  # uninstrumented before the first use: nothing of it may appear later
    assert _Resource().fetch() == "fetched" and seen == []
    assert not isinstance(vars(_Resource)["fetch"], wrapt.FunctionWrapper)
    first.need()
    assert isinstance(vars(_Resource)["fetch"], wrapt.FunctionWrapper)
    assert _Resource().fetch() == "fetched" and seen == ["hook"]
    late = WrapSet()
    late.wrap(row)  # already needed: wrapped at once (beneath ours, which stays the only active layer)
    assert early.wrapped and not late.wrapped  # one layer of ours per method, as with eager rows
    early.unwrap()
    assert not isinstance(vars(_Resource)["fetch"], wrapt.FunctionWrapper)
    late.wrap(row)
    assert _Resource().fetch() == "fetched" and seen == ["hook", "hook"]
    late.unwrap()
    assert _Resource().fetch() == "fetched" and seen == ["hook", "hook"]
