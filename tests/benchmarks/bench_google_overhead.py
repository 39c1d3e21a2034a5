"""Overhead of the Google GenAI instrumentation, against the official OpenTelemetry one.

    .venv/bin/python tests/benchmarks/bench_google_overhead.py [--calls 1000] [--rounds 5]

The google-genai SDK talks to an ``httpx.MockTransport`` returning a fixed ``generateContent`` response
(no network). Modes, method and targets are those of ``bench_openai_overhead.py`` (fresh process per
mode and round, modes interleaved, instrumented batches paired with bare ones, thread CPU time):

* ``bare`` the uninstrumented SDK; ``floor`` one plain span around each call; ``ours`` payi_otel's
  GoogleGenAIInstrumentor; ``official`` opentelemetry-instrumentation-google-genai (default mode).

The official package is installed into a throwaway venv (``/tmp/payi-otel-bench-google-venv``) that
sees the project's packages through a ``.pth``; it declares ``google-genai < 3``, so it is loaded with
``skip_dep_check`` against the installed google-genai. If it cannot be installed the official mode is
skipped with a message.

Targets: our added cost per non-streaming call <= 0.5 x the official one's; <= 1 us per streamed chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
from pathlib import Path
from typing import Any

from bench_openai_overhead import worker_args
from measure import paired_overhead, paired_per_chunk, python_calls, spread, timed
from workers import run_worker, throwaway_venv

VENV = Path("/tmp/payi-otel-bench-google-venv")
OFFICIAL_REQ = ("opentelemetry-instrumentation-google-genai==1.3b0",)
MODES = ("bare", "floor", "ours", "official")
MODEL = "gemini-2.5-flash"

RESPONSE = {
    "candidates": [{"content": {"parts": [{"text": "This is a test."}], "role": "model"}, "finishReason": "STOP",
                    "index": 0}],
    "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5, "thoughtsTokenCount": 20,
                      "totalTokenCount": 37, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]},
    "modelVersion": MODEL,
    "responseId": "bench-response",
}  # fmt: skip


def _events(chunks: int) -> list[dict[str, Any]]:
    events = []
    for i in range(chunks):
        usage = {"promptTokenCount": 12, "candidatesTokenCount": i + 1, "totalTokenCount": 13 + i}
        events.append({"candidates": [{"content": {"parts": [{"text": " tok"}], "role": "model"}, "index": 0}],
                       "usageMetadata": usage, "modelVersion": MODEL, "responseId": "bench-stream"})  # fmt: skip
    if events:
        events[-1]["candidates"][0]["finishReason"] = "STOP"
    return events


def _sse(chunks: int) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in _events(chunks))


class _Setup:
    """Telemetry, client and instrumentation switch of one worker process (identical for every mode)."""

    def __init__(self, mode: str, chunks: int, telemetry: str) -> None:
        import httpx
        from google import genai
        from google.genai import types
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

        setup = self

        class Discard(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                setup.spans += len(spans)
                return SpanExportResult.SUCCESS

        self.spans = 0
        self.tp = TracerProvider()
        self.tp.add_span_processor(SimpleSpanProcessor(Discard()))
        self.mp = MeterProvider(metric_readers=[InMemoryMetricReader()]) if telemetry == "traces+metrics" else None
        body, stream_body = json.dumps(RESPONSE).encode(), _sse(chunks)

        def handler(request: Any) -> Any:
            if "streamGenerateContent" in request.url.path:
                return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream_body)
            return httpx.Response(200, headers={"content-type": "application/json"}, content=body)

        options = types.HttpOptions(client_args={"transport": httpx.MockTransport(handler)})
        self.client = genai.Client(api_key="k", http_options=options)
        self.mode = mode
        self.on = False
        self.instrumentor: Any = None
        if mode == "ours":
            from payi_otel.instrumentation.google_genai import GoogleGenAIInstrumentor

            self.instrumentor = GoogleGenAIInstrumentor()
        elif mode == "official":
            from opentelemetry.instrumentation.google_genai import GoogleGenAiSdkInstrumentor

            self.instrumentor = GoogleGenAiSdkInstrumentor()

    def switch(self, on: bool) -> None:
        if self.instrumentor is None or self.on == on:
            return
        self.on = on
        if not on:
            self.instrumentor.uninstrument()
            return
        from opentelemetry.metrics import NoOpMeterProvider

        meter_provider = self.mp if self.mp is not None else NoOpMeterProvider()
        self.instrumentor.instrument(tracer_provider=self.tp, meter_provider=meter_provider, skip_dep_check=True)

    def calls(self, stream: bool) -> tuple[Any, Any]:
        from opentelemetry.trace import SpanKind

        models = self.client.models
        if stream:

            def plain() -> None:
                for _ in models.generate_content_stream(model=MODEL, contents="Say this is a test"):
                    pass
        else:

            def plain() -> None:
                models.generate_content(model=MODEL, contents="Say this is a test")

        if self.mode == "floor":
            tracer = self.tp.get_tracer("bench")

            def spanned() -> None:
                with tracer.start_as_current_span(f"generate_content {MODEL}", kind=SpanKind.CLIENT):
                    plain()

            return spanned, plain
        return plain, plain


def chunk_cost(streams: int, chunks: int) -> dict[str, float]:
    """Our per-chunk cost in isolation: real GenerateContentResponse chunks (parsed once, up front)
    iterated bare and through the stream proxy and the Gemini stream handler (span ended at exhaustion,
    so finalization is included, amortized)."""
    from google.genai import types
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from payi_otel.core import CallRecord, SpanCore
    from payi_otel.instrumentation.google_genai._read import GenerateStream
    from payi_otel.stream import StreamProxy

    items = [types.GenerateContentResponse.model_validate(e) for e in _events(chunks)]

    def source() -> Any:
        yield from items

    readers = [InMemoryMetricReader()]
    core = SpanCore(tracer_provider=TracerProvider(), meter_provider=MeterProvider(metric_readers=readers))

    def bare() -> None:
        for _ in source():
            pass

    def ours() -> None:
        record = CallRecord(provider="gcp.gemini", operation="generate_content", category="system.google.vertex",
                            request_model=MODEL, stream=True)  # fmt: skip
        call = core.start(record)
        for _ in StreamProxy(source(), call, GenerateStream(call)):
            pass

    diffs = []
    for i in range(streams):
        t = {}
        for name, fn in (("bare", bare), ("ours", ours)) if i % 2 == 0 else (("ours", ours), ("bare", bare)):
            t[name] = timed(fn, 5)[0] / len(items)
        diffs.append(t["ours"] - t["bare"])
    return {"added_us_per_chunk": statistics.median(diffs) * 1e6}


def stream_pair(setup: _Setup, streams: int, chunks: int) -> dict[str, float]:
    one, _ = setup.calls(stream=True)
    return paired_per_chunk(setup, one, streams, chunks)


def worker(mode: str, calls: int, scenario: str, chunks: int, telemetry: str) -> dict[str, Any]:
    if scenario == "chunkcost":
        return chunk_cost(calls, chunks)
    setup = _Setup(mode, chunks, telemetry)
    if scenario == "streampair":
        return stream_pair(setup, calls, chunks)
    instrumented, bare = setup.calls(stream=False)
    if scenario == "pycalls":
        return python_calls(setup, instrumented, bare)
    setup.switch(True)
    for _ in range(min(calls // 5, 200)):
        instrumented()
    return paired_overhead(setup, instrumented, bare, calls, mode)


# --- driver ---------------------------------------------------------------------------------------
def run(python: str, mode: str, calls: int, scenario: str, chunks: int, telemetry: str) -> dict[str, Any]:
    return run_worker(python, __file__, worker_args(mode, calls, scenario, chunks, telemetry))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help="internal: run one mode in this process")
    ap.add_argument("--calls", type=int, default=1000, help="calls per process (half instrumented, half bare)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of fresh processes")
    ap.add_argument("--scenario", default="call", help="internal: call, pycalls, streampair, chunkcost")
    ap.add_argument("--chunks", type=int, default=200, help="chunks per streamed response")
    ap.add_argument("--telemetry", default="traces+metrics", help="traces+metrics or traces")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.calls, args.scenario, args.chunks, args.telemetry)))
        return
    python, available = throwaway_venv(VENV, {"official": (OFFICIAL_REQ, "opentelemetry.instrumentation.google_genai")})
    modes = [m for m in MODES if m != "official" or m in available]
    print(f"interpreter: {python}; machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in random.sample(modes, len(modes)):
            results[mode].append(run(python, mode, args.calls, "call", 0, args.telemetry))
    print(
        f"\nnon-streaming generate_content [{args.telemetry}]: {args.rounds} rounds x {len(modes)} fresh processes;"
        " thread CPU time, medians with [min .. max] over processes:"
    )
    med = {}
    for m in modes:
        added = [r["added_cpu_us"] for r in results[m]]
        med[m] = statistics.median(added)
        cpu = statistics.median(r["cpu_us"] for r in results[m])
        print(f"  {m:9s} CPU {cpu:8.1f} us/call, added {med[m]:+8.1f} us {spread(added):>21s}")
    if "official" in med and med["official"] > 0:
        ratio = med["ours"] / med["official"]
        print(f"  ours/official added CPU: {ratio:.2f} (target <= 0.50: {'OK' if ratio <= 0.5 else 'ABOVE TARGET'})")
    print("\nPython function calls added per call (deterministic):")
    for m in modes:
        if m != "bare":
            r = run(python, m, 0, "pycalls", 0, args.telemetry)
            parts = ", ".join(f"{k} {v:+d}" for k, v in r.get("by", {}).items())
            print(f"  {m:9s} {r['total']:+5d}  {parts and f'({parts})'}")
    sdk = [run(python, "ours", 20, "streampair", args.chunks, args.telemetry) for _ in range(args.rounds)]
    iso = [run(python, "bare", 200, "chunkcost", args.chunks, args.telemetry) for _ in range(args.rounds)]
    sdk_added = [r["added_us_per_chunk"] for r in sdk]
    iso_added = [r["added_us_per_chunk"] for r in iso]
    bare_chunk = statistics.median(r["bare_us_per_chunk"] for r in sdk)
    print(f"\nstreamed generate_content, {args.chunks} chunks per stream (CPU time, median of paired differences):")
    print(
        f"  through the SDK (bare {bare_chunk:.1f} us/chunk): ours adds {statistics.median(sdk_added):+.2f} us/chunk"
        f" {spread(sdk_added, 2)}"
    )
    iso_med = statistics.median(iso_added)
    print(
        f"  in isolation (proxy + handler + amortized span end): {iso_med:.3f} us/chunk {spread(iso_added, 3)}"
        f" (target <= 1: {'OK' if iso_med <= 1.0 else 'ABOVE TARGET'})"
    )


if __name__ == "__main__":
    main()
