"""No event blocks the others, end to end: the real span exporter delivering to the real local
service on 127.0.0.1, in both ingest modes."""

from __future__ import annotations

import json
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from service_support import running_service, stored_requests

from payi_otel import attributes as A
from payi_otel import protocol as P
from payi_otel.exporters import PayiSpanExporter
from payi_otel.exporters.spool import Spool

FAST = dict(retry_initial_backoff=0.02, retry_max_backoff=0.2, timeout=5.0, shutdown_timeout=5.0)


def make_spans(ids: list[str], **extra) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for event_id in ids:
        attributes = {
            A.GEN_AI_OPERATION_NAME: "chat",
            A.GEN_AI_PROVIDER_NAME: "openai",
            A.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            A.GEN_AI_RESPONSE_ID: event_id,
            A.GEN_AI_USAGE_INPUT_TOKENS: 10,
            A.GEN_AI_USAGE_OUTPUT_TOKENS: 5,
            A.PAYI_USE_CASE_NAME: "poison-test",
            **extra,
        }
        tracer.start_span("chat gpt-4o-mini", attributes=attributes).end()
    provider.shutdown()
    return list(memory.get_finished_spans())


def dead_letters(exporter) -> list[dict]:
    path = exporter.spool.dead_letter_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("mode", ["single", "bulk"])
def test_a_poison_event_never_holds_up_the_good_ones(tmp_path, mode):
    spool_dir = tmp_path / "spool"
    # What an earlier version left in the spool: an event whose use case version does not fit in
    # 64 bits (the service used to answer it with 500, and the exporter retried it forever).
    poison = {
        "category": "system.openai",
        "resource": "gpt-4o-mini",
        "units": {"text": {"input": 1, "output": 1}},
        "provider_response_id": "poison-1",
        "use_case_name": "poison-test",
        "use_case_version": 2**63,
    }
    Spool(spool_dir, 10**8).append([poison], 100)
    with running_service(tmp_path / "data") as svc:
        exporter = PayiSpanExporter(
            base_url=svc.base_url, api_key=svc.api_key, ingest_mode=mode, spool_dir=spool_dir, **FAST
        )
        try:
            good = [f"good-{i}" for i in range(5)]
            exporter.export(make_spans(good))
            # a span from another instrumentation with an out-of-range version: mapped without it
            exporter.export(make_spans(["odd-version"], **{A.PAYI_USE_CASE_VERSION: 2**64}))
            assert exporter.force_flush(20_000)
        finally:
            exporter.shutdown()
        rows = {r["provider_response_id"]: r for r in stored_requests(svc.data_dir)}
    assert set(rows) == {*good, "odd-version"}
    assert rows["odd-version"]["use_case_version"] == 1  # the definition's version, not the bad value
    (record,) = dead_letters(exporter)
    assert record["event"]["provider_response_id"] == "poison-1" and record["status"] == 400
    assert str(P.MAX_USE_CASE_VERSION) in record["reason"]
    assert exporter.spool.pending_batches() == 0


def test_a_bulk_over_the_services_body_limit_is_split_and_delivered(tmp_path, monkeypatch):
    monkeypatch.setenv("PAYI_OTEL_MAX_BODY_BYTES", "16384")
    with running_service(tmp_path / "data") as svc:
        exporter = PayiSpanExporter(
            base_url=svc.base_url,
            api_key=svc.api_key,
            ingest_mode="bulk",
            batch_size=40,
            spool_dir=tmp_path / "spool",
            **FAST,
        )
        try:
            ids = [f"big-{i}" for i in range(40)]
            content = json.dumps([{"role": "user", "content": "x" * 1500}])
            start = time.monotonic()
            exporter.export(make_spans(ids, **{A.GEN_AI_INPUT_MESSAGES: content}))
            assert exporter.force_flush(30_000)
            assert time.monotonic() - start < 30
        finally:
            exporter.shutdown()
        stored = stored_requests(svc.data_dir)
    assert {r["provider_response_id"] for r in stored} == set(ids)
    assert dead_letters(exporter) == []
