"""Overhead of the Bedrock instrumentation, against the official OpenTelemetry botocore one and OpenLLMetry's.

    .venv/bin/python tests/benchmarks/bench_bedrock_overhead.py [--calls 2000] [--rounds 5]

A real boto3 ``bedrock-runtime`` client whose requests are answered through botocore's ``before-send``
event with a fixed Converse response (no network; signing, serialization and parsing are real). Modes:

* ``bare``        the uninstrumented client
* ``floor``       one plain OpenTelemetry span around each call (the least any tracing can cost)
* ``ours``        payi_otel's BedrockInstrumentor, with the durable call journal (a Pay-i exporter in offline mode)
* ``official``    opentelemetry-instrumentation-botocore (its Bedrock extension)
* ``openllmetry`` opentelemetry-instrumentation-bedrock (Traceloop)

Method as in ``bench_openai_overhead.py``: each (mode, round) is a fresh process, modes interleaved in
random order; inside a process timed batches of the mode alternate with batches of the bare client and
the added cost is the median of the paired differences in thread CPU time. ``ours`` and ``official``
patch every client, so they are switched on and off between batches; OpenLLMetry patches clients when
they are created, so its process keeps a client made before and one made after it was instrumented.
The two other instrumentations are installed into a throwaway venv (``/tmp/payi-otel-bench-venv-bedrock-<digest>``,
one per project environment), never into the project's environment; a mode that cannot be installed is
skipped with a message.

Targets (as for OpenAI): our added cost per call <= 0.5 x the official one's; <= 1 us per streamed event
(measured in isolation: recorded ConverseStream events and InvokeModelWithResponseStream chunks through
the stream proxy and our handlers, span end amortized); RSS flat over 100k calls (``--memory-calls``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import sys
from pathlib import Path

from measure import BATCH, paired_overhead, payi_journal, print_rss, rss_over, spread, timed
from workers import run_worker, throwaway_venv

VENV = Path("/tmp/payi-otel-bench-venv-bedrock")
OTHERS = {
    "official": (("opentelemetry-instrumentation-botocore==0.66b2",), "opentelemetry.instrumentation.botocore"),
    "openllmetry": (("opentelemetry-instrumentation-bedrock==0.62.4",), "opentelemetry.instrumentation.bedrock"),
}
MODES = ("bare", "floor", "ours", "official", "openllmetry")
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
EVENTS = 500  # events per stream in the per-event measurement
CONVERSE = {
    "metrics": {"latencyMs": 489},
    "output": {"message": {"content": [{"text": "This is a test"}], "role": "assistant"}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 37, "outputTokens": 8, "totalTokens": 45},
}
MESSAGES = [{"role": "user", "content": [{"text": "Say this is a test"}]}]


class _Setup:
    def __init__(self, mode: str) -> None:
        import boto3
        from botocore.awsrequest import AWSResponse
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

        setup = self

        class Discard(SpanExporter):
            def export(self, spans):  # type: ignore[no-untyped-def]
                setup.spans += len(spans)
                return SpanExportResult.SUCCESS

        self.spans = 0
        self.tp = TracerProvider()
        self.tp.add_span_processor(SimpleSpanProcessor(Discard()))
        body = json.dumps(CONVERSE).encode()
        headers = {"Content-Type": "application/json", "x-amzn-RequestId": "bench-request"}

        class Raw:
            def stream(self, **_):  # type: ignore[no-untyped-def]
                yield body

        def answer(request, **_):  # type: ignore[no-untyped-def]
            return AWSResponse(request.url, 200, headers, Raw())

        def client():  # type: ignore[no-untyped-def]
            c = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDTEST",
                             aws_secret_access_key="secret")  # fmt: skip
            c.meta.events.register("before-send", answer)
            return c

        self.mode = mode
        self.on = False
        self.instrumentor = None
        self.bare_client = client()
        self.client = self.bare_client
        if mode == "ours":
            from payi_otel.instrumentation.bedrock import BedrockInstrumentor

            self.instrumentor = BedrockInstrumentor()
            self.payi = payi_journal()  # the durable call journal, as in every real setup
        elif mode == "official":
            from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

            self.instrumentor = BotocoreInstrumentor()
        elif mode == "openllmetry":
            from opentelemetry.instrumentation.bedrock import BedrockInstrumentor as Traceloop

            Traceloop().instrument(tracer_provider=self.tp)
            self.client = client()  # patched at creation; bare_client stays as it was

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
            return lambda: client.converse(modelId=MODEL, messages=MESSAGES)

        bare = call(self.bare_client)
        if self.mode == "floor":
            tracer = self.tp.get_tracer("bench")

            def spanned() -> None:
                with tracer.start_as_current_span(f"chat {MODEL}", kind=SpanKind.CLIENT):
                    bare()

            return spanned, bare
        return call(self.client), bare


def worker(mode: str, calls: int) -> dict:
    return measure_calls(_Setup(mode), mode, calls)


def memory_worker(calls: int) -> dict:
    """RSS of ours over ``calls`` converse calls, after a warm-up."""
    setup = _Setup("ours")
    instrumented, _ = setup.calls()
    setup.switch(True)
    for _ in range(min(calls // 5, 1000)):
        instrumented()
    return rss_over(instrumented, calls)


def measure_calls(setup: _Setup, mode: str, calls: int) -> dict:
    """Thread CPU per call of ``setup``'s instrumented and bare calls, in alternating batches, and the
    median of their paired differences; checks that the instrumented batches made a span per call."""
    instrumented, bare = setup.calls()
    setup.switch(True)
    for _ in range(min(calls // 5, 500)):
        instrumented()
    return paired_overhead(setup, instrumented, bare, calls, mode, exact=False)


def event_cost(streams: int) -> dict:
    """Our per-event cost in isolation over recorded events (already decoded by botocore, as a caller
    iterating ``response["stream"]`` receives them), span end amortized."""
    from opentelemetry.sdk.trace import TracerProvider

    from payi_otel.core import CallRecord, SpanCore
    from payi_otel.instrumentation.bedrock._streams import ConverseStream, InvokeStream
    from payi_otel.stream import StreamProxy

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _bedrock_helpers import CASSETTES
    from botocore.eventstream import EventStreamBuffer

    from payi_otel.testing.replay import Cassette

    def events(path: Path, converse: bool) -> list[dict]:
        """The recorded stream as boto3 yields it (invoke chunks keep the model's own bytes), its content
        events repeated to about ``EVENTS`` (as a long answer would be), so that the span's start and end,
        once per stream, do not dominate the per-event figure."""
        buffer = EventStreamBuffer()
        buffer.add_data(Cassette.load(path).interactions[0].body)
        items = []
        for message in buffer:
            payload = json.loads(message.payload)
            if converse:
                items.append({message.headers[":event-type"]: payload})
            else:
                items.append({"chunk": {"bytes": base64.b64decode(payload["bytes"])}})
        head, body, tail = items[:3], items[3:-3], items[-3:]
        return head + body * max(EVENTS // max(len(body), 1), 1) + tail

    recorded = CASSETTES / "traceloop__openllmetry/bedrock"
    sources = {
        "converse_stream": (events(recorded / "test_meta_converse_stream.yaml", True), ConverseStream),
        "invoke_stream_nova": (events(recorded / "test_nova_invoke_stream.yaml", False), InvokeStream),
        "invoke_stream_anthropic": (events(recorded / "test_anthropic_3_completion_streaming.yaml", False),
                                    InvokeStream),
    }  # fmt: skip
    core = SpanCore(tracer_provider=TracerProvider())
    out = {}
    for name, (items, handler_cls) in sources.items():

        def bare(items=items) -> None:  # type: ignore[no-untyped-def]
            for _ in iter(items):
                pass

        def ours(items=items, handler_cls=handler_cls) -> None:  # type: ignore[no-untyped-def]
            call = core.start(CallRecord(provider="aws.bedrock", operation="chat", category="system.aws.bedrock"))
            for _ in StreamProxy(iter(items), call, handler_cls(call, "meta")):
                pass

        diffs = []
        for i in range(streams):
            t = {}
            for label, fn in (("bare", bare), ("ours", ours)) if i % 2 == 0 else (("ours", ours), ("bare", bare)):
                t[label] = timed(fn, 5)[0] / len(items)
            diffs.append(t["ours"] - t["bare"])
        out[name] = {"events": len(items), "added_us_per_event": statistics.median(diffs) * 1e6}
    return out


# --- driver ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help="internal: run one mode in this process")
    ap.add_argument("--calls", type=int, default=2000, help="calls per process (half instrumented, half bare)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of fresh processes")
    ap.add_argument("--events", action="store_true", help="internal: per-event cost in isolation")
    ap.add_argument("--memory-calls", type=int, default=100_000, help="calls of the RSS check (0: skip it)")
    ap.add_argument("--memory", action="store_true", help="internal: the RSS check in this process")
    args = ap.parse_args()
    if args.events:
        print(json.dumps(event_cost(200)))
        return
    if args.memory:
        print(json.dumps(memory_worker(args.memory_calls)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.calls)))
        return

    python, available = throwaway_venv(VENV, OTHERS)

    def run(run_args: list[str]) -> dict:
        return run_worker(python, __file__, run_args)

    modes = [m for m in MODES if m not in OTHERS or m in available]
    print(f"interpreter: {python}; modes: {', '.join(modes)}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; traces only, "
          "SimpleSpanProcessor + discarding exporter in every mode, content capture off")  # fmt: skip
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in random.sample(modes, len(modes)):
            results[mode].append(run(["--worker", mode, "--calls", str(args.calls)]))
    n = results[modes[0]][0]["calls"]
    print(
        f"\nnon-streaming converse: {args.rounds} rounds x {len(modes)} fresh processes, {n} calls each in"
        f" alternating {BATCH}-call batches (mode / bare client); thread CPU, medians [min .. max] over processes:"
    )
    med = {}
    for m in modes:
        added = [r["added_cpu_us"] for r in results[m]]
        med[m] = statistics.median(added)
        cpu = statistics.median(r["cpu_us"] for r in results[m])
        print(f"  {m:12s} {cpu:9.1f} us/call   added {med[m]:+8.1f} us {spread(added):>20s}")
    for other in ("official", "openllmetry"):
        if other in med and med[other] > 0:
            ratio = med["ours"] / med[other]
            if other == "official":  # the target is against OpenTelemetry's own instrumentation
                verdict = f"target <= 0.50: {'OK' if ratio <= 0.5 else 'ABOVE TARGET'}"
            else:
                verdict = "for comparison, no target"
            print(f"  ours/{other} added CPU: {med['ours']:.1f} / {med[other]:.1f} = {ratio:.2f} ({verdict})")
    print(f"  ours above the bare-span floor: {med['ours'] - med['floor']:+.1f} us;"
          f" bare-vs-bare noise: {med['bare']:+.1f} us")  # fmt: skip

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
    if args.memory_calls:
        print_rss(run(["--memory", "--memory-calls", str(args.memory_calls)]), args.memory_calls)


if __name__ == "__main__":
    main()
