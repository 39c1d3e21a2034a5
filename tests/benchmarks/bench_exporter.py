"""Exporter figures: spans converted to ingest events per second, events delivered per second.

Run: .venv/bin/python tests/benchmarks/bench_exporter.py [--spans N] [--events M]
Target: >= 50,000 spans converted per second per core (ReadableSpan and OTLP).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the fault-injecting ingest server

from google.protobuf import json_format  # noqa: E402
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from exporter_fault_server import FaultServer  # noqa: E402
from payi_otel import attributes as A  # noqa: E402
from payi_otel.exporters import PayiSpanExporter, event_from_span, event_from_view, spans_from_otlp_request  # noqa: E402

TARGET = 50_000


def typical_attributes(i: int) -> dict:
    """What the span core writes on a streamed chat call with business context (no content)."""
    return {
        A.GEN_AI_OPERATION_NAME: "chat",
        A.GEN_AI_PROVIDER_NAME: "openai",
        A.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        A.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
        A.GEN_AI_RESPONSE_ID: f"chatcmpl-{i}",
        A.GEN_AI_REQUEST_STREAM: True,
        A.GEN_AI_USAGE_INPUT_TOKENS: 100,
        A.GEN_AI_USAGE_OUTPUT_TOKENS: 50,
        A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 30,
        A.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
        A.SERVER_ADDRESS: "api.openai.com",
        A.SERVER_PORT: 443,
        A.PAYI_CATEGORY: "system.openai",
        A.PAYI_RESOURCE: "gpt-4o-mini",
        "payi.units.text.input": 70,
        "payi.units.text.output": 50,
        "payi.units.text_cache_read.input": 30,
        A.PAYI_USAGE_COMPLETE: True,
        A.PAYI_HTTP_STATUS_CODE: 200,
        A.PAYI_PROVIDER_RESPONSE_ID: f"chatcmpl-{i}",
        A.PAYI_PROVIDER_URI: "https://api.openai.com/v1/",
        A.PAYI_LATENCY_MS: 812,
        A.PAYI_TIME_TO_FIRST_TOKEN_MS: 143,
        A.PAYI_INSTRUMENTED_MODULE: "openai/3.54.0",
        A.PAYI_USE_CASE_NAME: "support-bot",
        A.PAYI_USE_CASE_ID: "2c7d8a3e-6d55-4a8b-9d8e-7a1f4c2b9e10",
        A.PAYI_USER_ID: f"user-{i % 100}",
        A.PAYI_LIMIT_IDS: ("team-budget",),
        "payi.request_properties.ticket": str(i),
    }


def make_spans(n: int):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for i in range(n):
        tracer.start_span("chat gpt-4o-mini", attributes=typical_attributes(i)).end()
    return list(memory.get_finished_spans())


def rate(label: str, count: int, seconds: float, target: int | None = None) -> None:
    per_s = count / seconds
    verdict = "" if target is None else ("  (target >= %d: %s)" % (target, "met" if per_s >= target else "MISSED"))
    print(f"{label:<58} {per_s:>12,.0f} /s{verdict}")


def bench_mapping(n: int) -> None:
    spans = make_spans(n)
    proto_body = encode_spans(spans).SerializeToString()
    message = json_format.MessageToDict(encode_spans(spans))
    json_body = json.dumps(message).encode()  # ids stay base64 here: not read by the mapping
    for rs in message["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                s.pop("traceId", None), s.pop("spanId", None), s.pop("parentSpanId", None)
    json_body = json.dumps(message).encode()

    clock = time.thread_time  # CPU time of this thread: figures per core, whatever else runs on the machine
    best = {}
    for _ in range(3):
        t = clock()
        events = [event_from_span(s) for s in spans]
        best["sdk"] = min(best.get("sdk", 1e9), clock() - t)
        t = clock()
        views = spans_from_otlp_request(proto_body, "application/x-protobuf")
        t_decoded = clock()
        proto_events = [event_from_view(v) for v in views]
        best["proto"] = min(best.get("proto", 1e9), clock() - t)
        best["proto_map"] = min(best.get("proto_map", 1e9), clock() - t_decoded)
        t = clock()
        json_events = [event_from_view(v) for v in spans_from_otlp_request(json_body, "application/json")]
        best["json"] = min(best.get("json", 1e9), clock() - t)
    assert all(events) and len(proto_events) == len(json_events) == n
    print(f"span -> event conversion, {n:,} spans of {len(typical_attributes(0))} attributes, one core (thread CPU time), best of 3:")
    rate("  SDK ReadableSpan -> event", n, best["sdk"], TARGET)
    rate("  OTLP protobuf request -> views -> events (decode included)", n, best["proto"], TARGET)
    rate("  OTLP protobuf views -> events (mapping only)", n, best["proto_map"])
    rate("  OTLP/JSON request -> views -> events (decode included)", n, best["json"], TARGET)


def bench_delivery(m: int) -> None:
    spans = make_spans(m)
    print(f"delivery to a local ingest server over loopback, {m:,} events, batches of 512 spans from export():")
    for mode in ("single", "bulk"):
        server = FaultServer().start()
        with tempfile.TemporaryDirectory() as spool:
            exporter = PayiSpanExporter(base_url=server.url, api_key="k", ingest_mode=mode, spool_dir=spool, batch_size=100)
            t = time.perf_counter()
            slowest = 0.0
            for start in range(0, m, 512):
                t0 = time.perf_counter()
                exporter.export(spans[start : start + 512])
                slowest = max(slowest, time.perf_counter() - t0)
            assert exporter.force_flush(120_000)
            elapsed = time.perf_counter() - t
            exporter.shutdown()
        assert len(server.ids()) == m, len(server.ids())
        server.stop()
        rate(f"  {mode} mode, export() to server acknowledged", m, elapsed)
        print(f"  {mode} mode, slowest export() call of 512 spans (map + fsync'd spool)  {slowest * 1000:9.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=3_000)
    args = parser.parse_args()
    bench_mapping(args.spans)
    bench_delivery(args.events)


if __name__ == "__main__":
    main()
