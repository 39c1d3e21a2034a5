"""Delivery of ingest events by PayiSpanExporter to a real HTTP server on 127.0.0.1 that fails on purpose."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from exporter_fault_server import REJECT_RESOURCE, FaultServer
from payi_otel import attributes as A
from payi_otel.exporters import ConfigError, PayiSpanExporter
from payi_otel.exporters.sender import parse_retry_after

FAST = dict(retry_initial_backoff=0.02, retry_max_backoff=0.2, timeout=2.0, shutdown_timeout=5.0)


def span_attrs(event_id: str, resource: str = "gpt-4o-mini", **extra) -> dict:
    return {
        A.GEN_AI_OPERATION_NAME: "chat",
        A.PAYI_CATEGORY: "system.openai",
        A.PAYI_RESOURCE: resource,
        A.PAYI_HTTP_STATUS_CODE: 200,
        A.PAYI_PROVIDER_RESPONSE_ID: event_id,
        "payi.units.text.input": 10,
        "payi.units.text.output": 5,
        A.PAYI_USE_CASE_NAME: "delivery-test",
        A.PAYI_USER_ID: "alice",
        A.PAYI_RESOURCE_SCOPE: "global",
        **extra,
    }


@pytest.fixture()
def spans():
    """Finished SDK spans carrying the contract attributes."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")

    def make(ids, **kwargs):
        before = len(memory.get_finished_spans())
        for event_id in ids:
            tracer.start_span("chat", attributes=span_attrs(event_id, **kwargs)).end()
        return list(memory.get_finished_spans()[before:])

    yield make
    provider.shutdown()


@pytest.fixture()
def server():
    srv = FaultServer().start()
    yield srv
    srv.stop()


@pytest.fixture()
def make_exporter(tmp_path):
    made = []

    def make(**settings):
        settings.setdefault("spool_dir", tmp_path / "spool")
        settings.setdefault("api_key", "test-key")
        exporter = PayiSpanExporter(**{**FAST, **settings})
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.shutdown()


def timed_export(exporter, batch) -> float:
    start = time.perf_counter()
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    return time.perf_counter() - start


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


# --- the happy paths -------------------------------------------------------------------------


def test_single_mode_sends_attribution_as_headers_and_id_as_query(server, spans, make_exporter):
    exporter = make_exporter(base_url=server.url, ingest_mode="single")
    exporter.export(spans(ids("s", 3)))
    assert exporter.force_flush(5000)
    assert server.ids() == set(ids("s", 3))
    headers = {k.lower(): v for k, v in server.headers["s-0"].items()}
    assert headers["xproxy-api-key"] == "test-key"
    assert headers["xproxy-usecase-name"] == "delivery-test"
    assert headers["xproxy-user-id"] == "alice"
    assert headers["xproxy-resource-scope"] == "global"
    body = server.events["s-0"]
    assert body["units"] == {"text": {"input": 10, "output": 5}}
    assert "user_id" not in body and "resource_scope" not in body
    assert exporter.spool.pending_batches() == 0
    assert exporter.delivered_events == 3


def test_bulk_mode_sends_attribution_in_the_body(server, spans, make_exporter):
    exporter = make_exporter(base_url=server.url, ingest_mode="bulk", batch_size=4)
    exporter.export(spans(ids("b", 10)))
    assert exporter.force_flush(5000)
    assert server.ids() == set(ids("b", 10))
    assert server.requests == 3  # 4 + 4 + 2
    item = server.events["b-0"]
    assert item["user_id"] == "alice" and item["scope"] == "global" and item["use_case_name"] == "delivery-test"
    assert "resource_scope" not in item


# --- outages and faults ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["single", "bulk"])
def test_server_down_for_a_while_then_everything_arrives_once(tmp_path, spans, make_exporter, mode):
    server = FaultServer().start()
    port = server.port
    server.stop()  # the port is closed: connection refused
    exporter = make_exporter(base_url=f"http://127.0.0.1:{port}", ingest_mode=mode)
    durations = [timed_export(exporter, spans(ids(f"d{i}", 20))) for i in range(5)]
    assert max(durations) < 0.25, durations  # export() never waits for the network
    assert not exporter.force_flush(300)  # nothing can be delivered yet
    assert exporter.spool.pending_batches() > 0
    server = FaultServer(port).start()
    try:
        assert exporter.force_flush(10_000)
        assert server.ids() == {f"d{i}-{j}" for i in range(5) for j in range(20)}
        assert sum(server.duplicates.values()) == 0
        assert exporter.spool.pending_batches() == 0
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["single", "bulk"])
def test_500s_are_retried(server, spans, make_exporter, mode):
    server.fail_next(3, status=503)
    exporter = make_exporter(base_url=server.url, ingest_mode=mode)
    exporter.export(spans(ids("f", 5)))
    assert exporter.force_flush(10_000)
    assert server.ids() == set(ids("f", 5))
    assert server.requests >= 4


@pytest.mark.parametrize("retry_after", ["1", "date"])
def test_429_honours_retry_after(server, spans, make_exporter, retry_after):
    value = formatdate(time.time() + 2, usegmt=True) if retry_after == "date" else retry_after
    server.fail_next(1, status=429, retry_after=value)
    exporter = make_exporter(base_url=server.url, ingest_mode="bulk")
    exporter.export(spans(ids("r", 2)))
    assert exporter.force_flush(10_000)
    assert server.ids() == set(ids("r", 2))
    first, second = server.request_times[0], server.request_times[1]
    # the backoff alone would retry within 0.02 s; the server asked for >= ~1 s
    assert second - first >= 0.9


def test_parse_retry_after_forms():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(formatdate(1_000_030, usegmt=True), now=1_000_000) == pytest.approx(30, abs=1)
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None


def test_slow_server_longer_than_the_timeout(server, spans, make_exporter):
    server.fail_next(2, status=200, delay=1.0)  # answers (and records) only after the client gave up
    exporter = make_exporter(base_url=server.url, ingest_mode="single", timeout=0.3)
    batch = spans(ids("slow", 4))
    assert timed_export(exporter, batch) < 0.25
    assert exporter.force_flush(10_000)
    assert server.ids() == set(ids("slow", 4))
    # a request the client timed out on may have been recorded: the server dedupes it by id
    assert set(server.duplicates) <= {"slow-0"}


@pytest.mark.parametrize("mode", ["single", "bulk"])
def test_permanent_rejections_go_to_the_dead_letter_file_logged_once(server, spans, make_exporter, mode, caplog, tmp_path):
    caplog.set_level(logging.ERROR, logger="payi_otel.exporters")
    spool_dir = tmp_path / f"spool-{mode}"
    exporter = make_exporter(base_url=server.url, ingest_mode=mode, spool_dir=spool_dir, batch_size=3)
    reject = dict(resource=REJECT_RESOURCE)
    exporter.export(spans(["ok-1"]) + spans(["bad-1"], **reject) + spans(["ok-2"]) + spans(["bad-2"], **reject) + spans(["ok-3"]))
    assert exporter.force_flush(10_000)
    exporter.export(spans(["bad-3"], **reject))
    assert exporter.force_flush(10_000)
    assert server.ids() == {"ok-1", "ok-2", "ok-3"}
    dead = [json.loads(line) for line in (spool_dir / "dead-letter.jsonl").read_text().splitlines()]
    assert sorted(d["event"]["provider_response_id"] for d in dead) == ["bad-1", "bad-2", "bad-3"]
    assert all("invalid_resource" in d["reason"] for d in dead)
    assert all(d["status"] == 400 for d in dead)
    assert exporter.rejected_events == 3
    assert exporter.spool.pending_batches() == 0
    logged = [r for r in caplog.records if "dead-letter.jsonl" in r.getMessage()]
    assert len(logged) == 1 and str(spool_dir / "dead-letter.jsonl") in logged[0].getMessage()
