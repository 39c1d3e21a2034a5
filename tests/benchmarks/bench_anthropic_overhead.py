"""Overhead of the Anthropic instrumentation, against the anthropic SDK's own tracing, OpenLLMetry's and
OpenInference's anthropic instrumentations.

    .venv/bin/python tests/benchmarks/bench_anthropic_overhead.py [--calls 2000] [--rounds 5]

A real ``anthropic.Anthropic`` client whose transport answers every request with a fixed recorded Message
(no network; request building, validation and parsing are real). Modes:

* ``bare``          the uninstrumented client (the SDK's own tracing off, as in every other mode)
* ``floor``         one plain OpenTelemetry span around each call (the least any tracing can cost)
* ``ours``          payi_otel's AnthropicInstrumentor, with the durable call journal (a Pay-i exporter in offline mode)
* ``native``        the anthropic 2.x SDK's own spans (``open_telemetry`` client option)
* ``openllmetry``   opentelemetry-instrumentation-anthropic (Traceloop)
* ``openinference`` openinference-instrumentation-anthropic (Arize)

The official OpenTelemetry anthropic instrumentation (opentelemetry-python-contrib) is not on PyPI under
its own name (``opentelemetry-instrumentation-anthropic`` is OpenLLMetry's), so it cannot be installed
here; the SDK's own tracing is the nearest official reference.

Method as in ``bench_openai_overhead.py``: each (mode, round) is a fresh process, modes interleaved in
random order; inside a process timed batches of the mode alternate with batches of the bare client and
the added cost is the median of the paired differences in thread CPU time. The other instrumentations
are installed into a throwaway venv (``/tmp/payi-otel-bench-venv-anthropic-<digest>``, one per project
environment), never into the project's environment; a mode that cannot be installed is skipped with a message.

Targets (as for OpenAI): our added cost per call <= 0.5 x the reference's; <= 1 us per streamed event
(measured in isolation: recorded stream events through the stream proxy and our handler, span end
amortized).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from pathlib import Path

from bench_bedrock_overhead import measure_calls
from measure import BATCH, payi_journal, spread, timed
from workers import run_worker, throwaway_venv

VENV = Path("/tmp/payi-otel-bench-venv-anthropic")
OTHERS = {
    "openllmetry": (("opentelemetry-instrumentation-anthropic==0.62.4",), "opentelemetry.instrumentation.anthropic"),
    "openinference": (("openinference-instrumentation-anthropic==3.1.0",), "openinference.instrumentation.anthropic"),
}
MODES = ("bare", "floor", "ours", "native", "openllmetry", "openinference")
EVENTS = 500  # events per stream in the per-event measurement
TESTS = Path(__file__).resolve().parents[1]
REQUEST = {"model": "claude-3-5-sonnet-20240620", "max_tokens": 1024,
           "messages": [{"role": "user", "content": "What is the weather in New York?"}]}  # fmt: skip


class _Setup:
    def __init__(self, mode: str) -> None:
        import anthropic
        import anthropic._base_client
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

        sys.path.insert(0, str(TESTS))
        from _anthropic_helpers import load

        setup = self

        class Discard(SpanExporter):
            def export(self, spans):  # type: ignore[no-untyped-def]
                setup.spans += len(spans)
                return SpanExportResult.SUCCESS

        self.spans = 0
        self.tp = TracerProvider()
        self.tp.add_span_processor(SimpleSpanProcessor(Discard()))
        library = __import__("httpx2" if hasattr(anthropic._base_client, "httpx2") else "httpx")
        body = load("test_anthropic_tools_legacy")[1].json()
        raw = json.dumps(body).encode()

        def answer(request):  # type: ignore[no-untyped-def]
            return library.Response(200, headers={"content-type": "application/json", "request-id": "req_1"},
                                    content=raw)  # fmt: skip

        def client(native: bool = False):  # type: ignore[no-untyped-def]
            extra = {}
            if "open_telemetry" in anthropic.Anthropic.__init__.__code__.co_varnames:
                extra["open_telemetry"] = {"tracer_provider": self.tp} if native else False
            return anthropic.Anthropic(api_key="k", http_client=library.Client(transport=library.MockTransport(answer)),
                                       max_retries=0, **extra)  # fmt: skip

        self.mode = mode
        self.on = False
        self.instrumentor = None
        self.bare_client = client()
        self.client = client(native=True) if mode == "native" else self.bare_client
        if mode == "ours":
            from payi_otel.instrumentation.anthropic import AnthropicInstrumentor

            self.instrumentor = AnthropicInstrumentor()
            self.payi = payi_journal()  # the durable call journal, as in every real setup
        elif mode == "openllmetry":
            from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor as Traceloop

            self.instrumentor = Traceloop()
        elif mode == "openinference":
            from openinference.instrumentation.anthropic import AnthropicInstrumentor as Arize

            self.instrumentor = Arize()

    def switch(self, on: bool) -> None:
        if self.instrumentor is None or self.on == on:
            return
        self.on = on
        if on:
            from opentelemetry.metrics import NoOpMeterProvider

            self.instrumentor.instrument(tracer_provider=self.tp, meter_provider=NoOpMeterProvider())
        else:
            self.instrumentor.uninstrument()

    def calls(self):  # type: ignore[no-untyped-def]
        from opentelemetry.trace import SpanKind

        def call(client):  # type: ignore[no-untyped-def]
            return lambda: client.messages.create(**REQUEST)

        bare = call(self.bare_client)
        if self.mode == "floor":
            tracer = self.tp.get_tracer("bench")

            def spanned() -> None:
                with tracer.start_as_current_span(f"chat {REQUEST['model']}", kind=SpanKind.CLIENT):
                    bare()

            return spanned, bare
        return call(self.client), bare


def worker(mode: str, calls: int) -> dict:
    return measure_calls(_Setup(mode), mode, calls)


def event_cost(streams: int) -> dict:
    """Our per-event cost in isolation over recorded stream events (already parsed by the SDK, as a caller
    iterating the stream receives them), span end amortized."""
    from opentelemetry.sdk.trace import TracerProvider

    sys.path.insert(0, str(TESTS))
    from _anthropic_helpers import client_for, load

    from payi_otel.core import CallRecord, SpanCore
    from payi_otel.instrumentation.anthropic._streams import MessageEvents
    from payi_otel.stream import StreamProxy
    from payi_otel.testing.replay import Cassette

    _, recorded = load("test_anthropic_tools_streaming_legacy")
    request = {k: v for k, v in recorded.request_body.items() if k != "stream"}
    events = list(client_for(recorded, Cassette([recorded])).messages.create(stream=True, **request))
    head, body, tail = events[:2], events[2:-2], events[-2:]
    items = head + body * max(EVENTS // max(len(body), 1), 1) + tail  # a long answer: many deltas
    core = SpanCore(tracer_provider=TracerProvider())

    def end(call, error):  # type: ignore[no-untyped-def]
        call.end()

    def bare() -> None:
        for _ in iter(items):
            pass

    def ours() -> None:
        call = core.start(CallRecord(provider="anthropic", operation="chat", category="system.anthropic"))
        for _ in StreamProxy(iter(items), call, MessageEvents(call, end)):
            pass

    diffs = []
    for i in range(streams):
        t = {}
        for label, fn in (("bare", bare), ("ours", ours)) if i % 2 == 0 else (("ours", ours), ("bare", bare)):
            t[label] = timed(fn, 5)[0] / len(items)
        diffs.append(t["ours"] - t["bare"])
    return {"messages_stream": {"events": len(items), "added_us_per_event": statistics.median(diffs) * 1e6}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help="internal: run one mode in this process")
    ap.add_argument("--calls", type=int, default=2000, help="calls per process (half instrumented, half bare)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of fresh processes")
    ap.add_argument("--events", action="store_true", help="internal: per-event cost in isolation")
    args = ap.parse_args()
    if args.events:
        print(json.dumps(event_cost(200)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.calls)))
        return

    python, available = throwaway_venv(VENV, OTHERS)
    modes = [m for m in MODES if m not in OTHERS or m in available]

    def run(run_args: list[str]) -> dict:
        # the SDK's own tracing off unless a mode turns it on for its client
        return run_worker(python, __file__, run_args, ANTHROPIC_OPEN_TELEMETRY="false")

    print(f"interpreter: {python}; modes: {', '.join(modes)}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; traces only, "
          "SimpleSpanProcessor + discarding exporter in every mode, content capture off")  # fmt: skip
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in random.sample(modes, len(modes)):
            try:
                results[mode].append(run(["--worker", mode, "--calls", str(args.calls)]))
            except RuntimeError as exc:
                print(f"{mode}: FAILED in this round: {str(exc)[-400:]}")
    modes = [m for m in modes if results[m]]
    n = results[modes[0]][0]["calls"]
    print(
        f"\nnon-streaming messages.create: {args.rounds} rounds x {len(modes)} fresh processes, {n} calls each"
        f" in alternating {BATCH}-call batches (mode / bare client); thread CPU, medians [min .. max]:"
    )
    med = {}
    for m in modes:
        added = [r["added_cpu_us"] for r in results[m]]
        med[m] = statistics.median(added)
        cpu = statistics.median(r["cpu_us"] for r in results[m])
        print(f"  {m:14s} {cpu:9.1f} us/call   added {med[m]:+8.1f} us {spread(added):>20s}")
    for other in ("native", "openllmetry", "openinference"):
        if other in med and med[other] > 0:
            ratio = med["ours"] / med[other]
            verdict = "OK" if ratio <= 0.5 else "ABOVE TARGET"
            print(
                f"  ours/{other} added CPU: {med['ours']:.1f} / {med[other]:.1f} = {ratio:.2f}"
                f" (target <= 0.50: {verdict})"
            )
    print(
        f"  ours above the bare-span floor: {med['ours'] - med['floor']:+.1f} us;"
        f" bare-vs-bare noise: {med['bare']:+.1f} us"
    )

    per_event = [run(["--events"]) for _ in range(args.rounds)]
    print("\nstreamed events in isolation (stream proxy + our handler, span end amortized; CPU time):")
    for name in per_event[0]:
        values = [r[name]["added_us_per_event"] for r in per_event]
        value = statistics.median(values)
        verdict = "OK" if value <= 1.0 else "ABOVE TARGET"
        print(
            f"  {name:15s} ({per_event[0][name]['events']} events): {value:.3f} us/event {spread(values, 3)}"
            f" (target <= 1: {verdict})"
        )


if __name__ == "__main__":
    main()
