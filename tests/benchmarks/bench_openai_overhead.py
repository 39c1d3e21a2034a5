"""Overhead of the OpenAI instrumentation, against the official OpenTelemetry one.

    .venv/bin/python tests/benchmarks/bench_openai_overhead.py [--calls 2000] [--rounds 5]

The openai SDK talks to an ``httpx2.MockTransport`` returning a fixed response (no network). Modes:

* ``bare``      the uninstrumented SDK
* ``floor``     one plain OpenTelemetry span around each call (the least any tracing can cost)
* ``ours``      payi_otel's OpenAIInstrumentor
* ``official``  opentelemetry-instrumentation-openai-v2 (its default, non-experimental semconv mode)

How the figures are made, so that a noisy machine cannot fake them:

* every (mode, round) runs in a fresh subprocess; modes are interleaved round by round in random order;
* inside a process, timed batches of the mode alternate with timed batches of the bare SDK (the
  instrumentation is switched on and off between batches, a few untimed calls after each switch), and
  the *added* cost of the mode is the median over the pairs of (mode batch - bare batch): a slow spell
  hits both halves of a pair, so it cancels;
* time is the CPU time of the measuring thread (``time.thread_time``), which other processes on the
  machine cannot inflate by descheduling us; wall time is reported beside it;
* ``ours`` includes the durable call journal (a Pay-i exporter in offline mode is created, so each call
  is appended to its journal before it returns; mapping and encoding run on the journal's thread);
* every mode has the identical telemetry setup: one ``TracerProvider`` with a ``SimpleSpanProcessor``
  and an exporter that discards (spans are fully ended and handed to the exporter, never serialized),
  and, with ``traces+metrics``, one ``MeterProvider`` with an ``InMemoryMetricReader`` (never
  collected); with ``traces`` no meter provider is configured (the API's no-op), as with
  ``OTEL_METRICS_EXPORTER=none``. Each process checks that its mode produced exactly one span per call.

The official package registers the entry point ``openai`` and must not leak into the project's
environment, so it is installed into a throwaway venv (``/tmp/payi-otel-bench-venv-<digest>``, see
:mod:`workers`); all four modes then run under that venv's interpreter so they share one set of packages.
If it cannot be installed the official mode is skipped with a message and the other figures are still printed.

Targets: our added cost per non-streaming call <= 0.5 x the official one's; <= 1 us per streamed
chunk; RSS flat over 100k calls.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
from pathlib import Path

import instructions
from measure import (
    BATCH,
    paired_overhead,
    paired_per_chunk,
    payi_journal,
    print_rss,
    python_calls,
    rss_over,
    spread,
    timed,
)
from workers import run_worker, throwaway_venv, worker_env

VENV = Path("/tmp/payi-otel-bench-venv")  # suffixed per project environment (see measure.own_venv)
# 2.4b0 imports opentelemetry.util.genai.instruments, which util-genai removed in 1.2b0.
OFFICIAL_REQ = ("opentelemetry-instrumentation-openai-v2==2.4b0", "opentelemetry-util-genai==1.1b0")
MODES = ("bare", "floor", "ours", "official")

COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1733467125,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "This is a test.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
}

CONFIG = (
    "TracerProvider + SimpleSpanProcessor(discarding exporter) in every mode; metrics: "
    "MeterProvider + InMemoryMetricReader (traces+metrics) or none configured (traces); "
    "content capture off; PYTHONHASHSEED=0"
)


def _sse(chunks: int) -> bytes:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": " tok"}}]} for _ in range(chunks)]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append(
        {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks},
        }
    )
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


# --- worker (one mode, one process) ---------------------------------------------------------------
class _Setup:
    """The telemetry, client and instrumentation switch of one worker process (identical for every mode)."""

    def __init__(self, mode: str, scenario: str, chunks: int, telemetry: str) -> None:
        import httpx2
        import openai
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

        setup = self

        class Discard(SpanExporter):
            def export(self, spans):
                setup.spans += len(spans)
                return SpanExportResult.SUCCESS

        self.spans = 0
        self.tp = TracerProvider()
        self.tp.add_span_processor(SimpleSpanProcessor(Discard()))
        self.mp = MeterProvider(metric_readers=[InMemoryMetricReader()]) if telemetry == "traces+metrics" else None
        body = json.dumps(COMPLETION).encode()
        stream_body = _sse(chunks)

        def handler(request):
            if scenario in ("stream", "streampair"):
                return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=stream_body)
            return httpx2.Response(200, headers={"content-type": "application/json"}, content=body)

        self.client = openai.OpenAI(
            api_key="k", max_retries=0, http_client=httpx2.Client(transport=httpx2.MockTransport(handler))
        )
        self.mode = mode
        self.instrumentor = None
        self.on = False
        if mode == "ours":
            from payi_otel.instrumentation.openai import OpenAIInstrumentor

            self.instrumentor = OpenAIInstrumentor()
            self.payi = payi_journal()
        elif mode == "official":
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as Official

            self.instrumentor = Official()

    def switch(self, on: bool) -> None:
        if self.instrumentor is None or self.on == on:
            return
        self.on = on
        if on:
            if self.mp is None:
                from opentelemetry.metrics import NoOpMeterProvider

                self.instrumentor.instrument(tracer_provider=self.tp, meter_provider=NoOpMeterProvider())
            else:
                self.instrumentor.instrument(tracer_provider=self.tp, meter_provider=self.mp)
        else:
            self.instrumentor.uninstrument()

    def calls(self, scenario: str):
        """(instrumented call, bare call) for this mode; both look the method up per call."""
        from opentelemetry.trace import SpanKind

        client = self.client
        messages = [{"role": "user", "content": "Say this is a test"}]
        if scenario in ("stream", "streampair"):
            # Identical request for every mode (include_usage set explicitly), so only per-chunk work differs.
            def plain():
                stream = client.chat.completions.create(
                    model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
                )
                for _ in stream:
                    pass
        else:

            def plain():
                client.chat.completions.create(model="gpt-4o-mini", messages=messages)

        if self.mode == "floor":
            tracer = self.tp.get_tracer("bench")

            def spanned():
                with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT):
                    plain()

            return spanned, plain
        return plain, plain


def worker(mode: str, calls: int, scenario: str, chunks: int, telemetry: str = "traces+metrics") -> dict:
    setup = _Setup(mode, scenario, chunks, telemetry)
    if scenario == "streampair":
        return stream_pair(setup, calls, chunks)
    if scenario == "chunkcost":
        return chunk_cost(calls, chunks)
    instrumented, bare = setup.calls(scenario)
    if scenario == "pycalls":
        return python_calls(setup, instrumented, bare)
    if scenario == "instructions":
        return instructions.marked_rounds(setup, instrumented, bare, calls, instructions.ROUNDS)
    setup.switch(True)
    for _ in range(min(calls // 5, 1000)):
        instrumented()
    if scenario == "memory":
        return {"mode": mode, **rss_over(instrumented, calls)}
    return paired_overhead(setup, instrumented, bare, calls, mode)


def stream_pair(setup: _Setup, streams: int, chunks: int) -> dict:
    """Per-chunk cost through the SDK, in one process: bare and instrumented streams alternate
    (instrument / uninstrument between batches); median of the paired differences, CPU time."""
    one, _ = setup.calls("streampair")
    return paired_per_chunk(setup, one, streams, chunks + 3)


def chunk_cost(streams: int, chunks: int) -> dict:
    """Our per-chunk cost in isolation: real ChatCompletionChunk objects (parsed once, up front) are
    iterated bare and through the instrumentation's stream proxy and chat handler (span ended at
    exhaustion, so finalization is included, amortized). Removes the SDK's SSE parsing from the
    figure, which otherwise hides a sub-microsecond difference in noise."""
    from openai.types.chat import ChatCompletionChunk
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from payi_otel.core import CallRecord, SpanCore
    from payi_otel.instrumentation.openai._streams import ChatStream
    from payi_otel.stream import StreamProxy

    events = [json.loads(line[6:]) for line in _sse(chunks).decode().split("\n\n") if line.startswith("data: {")]
    items = [ChatCompletionChunk.model_validate(e) for e in events]

    class Source:  # the shape of openai.Stream: __next__ over already-parsed chunks
        def __init__(self):
            self._it = iter(items)

        def __next__(self):
            return self._it.__next__()

        def __iter__(self):
            return self

    core = SpanCore(
        tracer_provider=TracerProvider(), meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()])
    )

    def bare():
        for _ in Source():
            pass

    def ours():
        call = core.start(CallRecord(provider="openai", operation="chat", category="system.openai", stream=True))
        for _ in StreamProxy(Source(), call, ChatStream(call, False)):
            pass

    diffs = []
    for i in range(streams):
        t = {}
        for name, fn in (("bare", bare), ("ours", ours)) if i % 2 == 0 else (("ours", ours), ("bare", bare)):
            t[name] = timed(fn, 5)[0] / len(items)
        diffs.append(t["ours"] - t["bare"])
    return {"added_us_per_chunk": statistics.median(diffs) * 1e6}


# --- driver ---------------------------------------------------------------------------------------
def worker_args(mode: str, calls: int, scenario: str, chunks: int, telemetry: str) -> list[str]:
    return ["--worker", mode, "--calls", str(calls), "--scenario", scenario, "--chunks", str(chunks),
            "--telemetry", telemetry]  # fmt: skip


def run(
    python: str,
    mode: str,
    calls: int,
    scenario: str,
    chunks: int,
    telemetry: str = "traces+metrics",
) -> dict:
    """Run this script's ``--worker mode ...`` in a fresh process; its last output line is the JSON result."""
    return run_worker(python, __file__, worker_args(mode, calls, scenario, chunks, telemetry))


def call_overhead(python: str, modes: list[str], calls: int, rounds: int, telemetry: str) -> None:
    results: dict[str, list[dict]] = {m: [] for m in modes}
    ratios: list[float] = []
    for _ in range(rounds):
        got = {}
        for mode in random.sample(modes, len(modes)):
            got[mode] = run(python, mode, calls, "call", 0, telemetry)
            results[mode].append(got[mode])
        if "official" in got and got["official"]["added_cpu_us"] > 0:
            ratios.append(got["ours"]["added_cpu_us"] / got["official"]["added_cpu_us"])
    n = results[modes[0]][0]["calls"]
    print(
        f"\nnon-streaming chat call [{telemetry}]: {rounds} rounds x {len(modes)} fresh processes, {n} calls each"
        f" in alternating {BATCH}-call batches (mode / bare SDK); thread CPU time, medians with [min .. max]"
        " over processes:"
    )
    print(f"  {'mode':9s} {'CPU us/call':>12s} {'added CPU us/call':>30s} {'added wall us/call':>30s}")
    med = {}
    for m in modes:
        cpu = [r["cpu_us"] for r in results[m]]
        added = [r["added_cpu_us"] for r in results[m]]
        wall = [r["added_wall_us"] for r in results[m]]
        med[m] = statistics.median(added)
        print(
            f"  {m:9s} {statistics.median(cpu):12.1f} {med[m]:+8.1f} {spread(added):>21s}"
            f" {statistics.median(wall):+8.1f} {spread(wall):>21s}"
        )
    if "official" in med:
        ratio = med["ours"] / med["official"] if med["official"] > 0 else float("nan")
        verdict = "OK" if ratio <= 0.5 else "ABOVE TARGET"
        print(
            f"  ours/official added CPU: {med['ours']:.1f} / {med['official']:.1f} = {ratio:.2f}"
            f" (per-round ratios {spread(ratios, 2)}; target <= 0.50: {verdict})"
        )
    print(
        f"  ours above the bare-span floor: {med['ours'] - med['floor']:+.1f} us;"
        f" bare-vs-bare pairing noise: {med['bare']:+.1f} us"
    )


def instruction_overhead(python: str, modes: list[str], telemetry: str) -> None:
    """The instructions each mode adds per call on the calling thread (callgrind), and ours against the official."""
    calls = instructions.CALLS
    print(
        f"\ninstructions added per non-streaming call [{telemetry}] (callgrind, calling thread; median and"
        f" [min .. max] of {instructions.ROUNDS} rounds of {calls} calls against {calls} bare calls):"
    )
    med = {}
    for mode in modes:
        if mode == "bare":
            continue
        cmd = [python, __file__, *worker_args(mode, calls, "instructions", 0, telemetry)]
        added, bare = instructions.added_per_call(cmd, calls, instructions.ROUNDS, worker_env())
        med[mode] = statistics.median(added)
        print(f"  {mode:9s} {instructions.summary(added)} over a bare call of {bare / 1000:,.0f}k")
    if "official" in med:
        ratio = med["ours"] / med["official"]
        print(
            f"  ours/official: {ratio:.3f} (target <= 0.50: {'OK' if ratio <= 0.5 else 'ABOVE TARGET'});"
            f" floor/official: {med['floor'] / med['official']:.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help="internal: run one mode in this process")
    ap.add_argument("--calls", type=int, default=2000, help="calls per process (half instrumented, half bare)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of fresh processes")
    ap.add_argument("--scenario", default="call", help="internal: call, memory, pycalls, streampair, chunkcost")
    ap.add_argument("--chunks", type=int, default=500, help="content chunks per streamed response")
    ap.add_argument("--memory-calls", type=int, default=100_000, help="calls of the RSS check")
    ap.add_argument("--telemetry", default="both", help="traces+metrics, traces or both")
    ap.add_argument(
        "--instructions", action="store_true", help="also count the instructions added per call (needs valgrind)"
    )
    args = ap.parse_args()
    if args.worker:
        telemetry = "traces+metrics" if args.telemetry == "both" else args.telemetry
        print(json.dumps(worker(args.worker, args.calls, args.scenario, args.chunks, telemetry)))
        return

    python, available = throwaway_venv(VENV, {"official": (OFFICIAL_REQ, "opentelemetry.instrumentation.openai_v2")})
    modes = [m for m in MODES if m != "official" or m in available]
    print(f"interpreter: {python}")
    print(f"configuration: {CONFIG}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")

    telemetries = ("traces+metrics", "traces") if args.telemetry == "both" else (args.telemetry,)
    for telemetry in telemetries:
        call_overhead(python, modes, args.calls, args.rounds, telemetry)

    if args.instructions:
        if instructions.available():
            for telemetry in telemetries:
                instruction_overhead(python, modes, telemetry)
        else:
            print("\ninstructions: SKIPPED, valgrind is not installed")

    for telemetry in telemetries:
        print(
            f"\nPython function calls added per non-streaming call [{telemetry}]"
            " (deterministic; split by switching metrics, then spans, off):"
        )
        counted = {m: run(python, m, 0, "pycalls", 0, telemetry) for m in modes if m != "bare"}
        for m, r in counted.items():
            parts = ", ".join(f"{k} {v:+d}" for k, v in r.get("by", {}).items())
            print(f"  {m:9s} {r['total']:+5d}  {parts and f'({parts})'}")
        if "official" in counted:
            print(
                f"  ours/official: {counted['ours']['total'] / counted['official']['total']:.2f};"
                f" floor/official: {counted['floor']['total'] / counted['official']['total']:.2f}"
            )

    # Streaming: per-chunk cost, end to end through the SDK and in isolation.
    chunks = args.chunks
    sdk = [run(python, "ours", max(args.calls // 100, 20), "streampair", chunks) for _ in range(args.rounds)]
    iso = [run(python, "bare", 200, "chunkcost", chunks) for _ in range(args.rounds)]
    sdk_added = [r["added_us_per_chunk"] for r in sdk]
    iso_added = [r["added_us_per_chunk"] for r in iso]
    bare_chunk = statistics.median(r["bare_us_per_chunk"] for r in sdk)
    print(f"\nstreamed chat, {chunks + 3} chunks per stream (CPU time, median of paired differences per process):")
    print(
        f"  through the SDK (bare {bare_chunk:.1f} us/chunk): ours adds {statistics.median(sdk_added):+.2f} us/chunk"
        f" {spread(sdk_added, 2)} (SSE parsing noise dominates here)"
    )
    iso_med = statistics.median(iso_added)
    verdict = "OK" if iso_med <= 1.0 else "ABOVE TARGET"
    print(
        f"  in isolation (proxy + chat handler + amortized span end over pre-parsed chunks): {iso_med:.3f} us/chunk"
        f" {spread(iso_added, 3)} (target <= 1: {verdict})"
    )

    # Memory.
    print_rss(run(python, "ours", args.memory_calls, "memory", 0), args.memory_calls)


if __name__ == "__main__":
    main()
