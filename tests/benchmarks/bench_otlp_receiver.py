"""OTLP receiver figures: spans decoded and filtered per second, GenAI spans converted per second.

Run: .venv/bin/python tests/benchmarks/bench_otlp_receiver.py [--spans N]
Targets, on one core (thread CPU time, so other load on the machine distorts them little):

* realistic traffic, 1 GenAI span in 20 (the rest HTTP, database and framework spans): at least
  200,000 spans/s decoded and filtered (the GenAI spans' views built, the others skipped);
* GenAI spans alone: at least 50,000 spans/s converted to ingest events (decode + map).

Both OTLP encodings are measured; protobuf is what collectors and the SDK exporters send by default.
A last figure times whole requests through the running service (HTTP, gzip, auth, storing), for scale.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from bench_exporter import (
    best_cpu,
    every_payi_attribute,
    foreign_attributes,
    make_spans,
    otlp_json_body,
    rate,
    typical_attributes,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from payi_otel.exporters import events_from_otlp_request, spans_from_otlp_request
from payi_otel.service.server import ServiceThread

FILTER_TARGET = 200_000
CONVERT_TARGET = 50_000
GENAI_EVERY = 20


def other_attributes(i: int) -> dict:
    """A non-GenAI span of a web application: HTTP server/client or database, 8-14 attributes."""
    kind = i % 3
    if kind == 0:
        return {
            "http.request.method": "POST",
            "http.route": "/api/tickets/{id}",
            "url.path": f"/api/tickets/{i}",
            "url.scheme": "https",
            "http.response.status_code": 200,
            "server.address": "support.example.com",
            "server.port": 443,
            "client.address": f"10.0.{i % 250}.{i % 200}",
            "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            "network.protocol.version": "1.1",
            "http.request.body.size": 512 + i % 4096,
        }
    if kind == 1:
        return {
            "db.system.name": "postgresql",
            "db.namespace": "support",
            "db.operation.name": "SELECT",
            "db.collection.name": "tickets",
            "db.query.text": "SELECT id, title, body FROM tickets WHERE id = $1",
            "server.address": "db.internal",
            "server.port": 5432,
            "db.response.returned_rows": i % 17,
        }
    return {
        "http.request.method": "GET",
        "url.full": f"https://cache.internal/v1/items/{i}",
        "server.address": "cache.internal",
        "server.port": 8080,
        "http.response.status_code": 200 if i % 50 else 404,
        "network.peer.address": "10.1.0.7",
        "thread.id": 140000000 + i % 8,
        "code.function.name": "fetch_item",
        "code.file.path": "/srv/app/cache.py",
        "code.line.number": 42,
    }


def realistic_attributes(i: int) -> dict:
    """1 span in GENAI_EVERY is a GenAI call (ours and another instrumentation's alternate)."""
    if i % GENAI_EVERY == 0:
        return (typical_attributes if (i // GENAI_EVERY) % 2 else foreign_attributes)(i)
    return other_attributes(i)


def bench_filter(n: int) -> None:
    spans = make_spans(n, realistic_attributes)
    proto = encode_spans(spans).SerializeToString()
    json_body = otlp_json_body(spans)
    genai = -(-n // GENAI_EVERY)
    print(
        f"Realistic traffic: {n:,} spans, 1 GenAI span in {GENAI_EVERY} ({genai:,}); bodies: protobuf "
        f"{len(proto) // n:,} B/span, JSON {len(json_body) // n:,} B/span; one core (thread CPU time), best of 3:"
    )
    proto_s, proto_views = best_cpu(lambda: spans_from_otlp_request(proto, "application/x-protobuf"))
    json_s, json_views = best_cpu(lambda: spans_from_otlp_request(json_body, "application/json"))
    assert len(proto_views) == len(json_views) == genai, (len(proto_views), len(json_views), genai)
    rate("  OTLP protobuf: decoded and filtered", n, proto_s, FILTER_TARGET)
    rate("  OTLP/JSON: decoded and filtered", n, json_s, FILTER_TARGET)
    events_s, events = best_cpu(lambda: events_from_otlp_request(proto, "application/x-protobuf"))
    assert len(events) == genai
    rate("  OTLP protobuf: decoded, filtered and GenAI spans converted", n, events_s)


def bench_convert(n: int) -> None:
    sources = (
        ("the span core's chat spans", typical_attributes),
        ("another instrumentation's chat spans", foreign_attributes),
        ("chat spans with every payi.* attribute", every_payi_attribute),
    )
    for title, attributes in sources:
        spans = make_spans(n, attributes)
        proto = encode_spans(spans).SerializeToString()
        json_body = otlp_json_body(spans)
        print(f"GenAI spans alone ({title}, {len(attributes(0))} attributes), {n:,} spans:")
        proto_s, proto_events = best_cpu(lambda p=proto: events_from_otlp_request(p, "application/x-protobuf"))
        json_s, json_events = best_cpu(lambda j=json_body: events_from_otlp_request(j, "application/json"))
        assert proto_events == json_events and len(proto_events) == n
        rate("  OTLP protobuf -> events (decode + map)", n, proto_s, CONVERT_TARGET)
        rate("  OTLP/JSON -> events (decode + map)", n, json_s, CONVERT_TARGET)


def bench_service(n: int) -> None:
    """Wall-clock figure through the real service: HTTP, gzip, auth, mapping and storing."""
    spans = make_spans(n, realistic_attributes)
    bodies = [gzip.compress(encode_spans(spans[i : i + 512]).SerializeToString()) for i in range(0, n, 512)]
    with tempfile.TemporaryDirectory() as data, ServiceThread(data) as service:
        headers = {
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "gzip",
            "xProxy-api-key": service.api_key,
        }
        with httpx.Client(base_url=service.base_url, headers=headers) as client:
            t = time.perf_counter()
            for body in bodies:
                client.post("/v1/traces", content=body).raise_for_status()
            elapsed = time.perf_counter() - t
    print(f"Through the service (one client, requests of 512 spans, gzip, 1 GenAI span in {GENAI_EVERY}, wall clock):")
    rate("  spans received, GenAI ones stored", n, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=100_000)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    bench_filter(args.spans)
    bench_convert(args.spans // 5)
    bench_service(args.spans // 5)
    print(f"load average (1 min) before and after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores: figures taken under load are noisy, repeat them")


if __name__ == "__main__":
    main()
