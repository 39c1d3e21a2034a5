"""payi-otel next to the real peer instrumentations of the openai SDK: the official
``opentelemetry-instrumentation-openai-v2`` (with ``opentelemetry-util-genai`` 1.1b0) and OpenLLMetry's
``opentelemetry-instrumentation-openai``. Installed only in the peers venv (``make test-peers``).

Whatever else traces a call and in whichever order the instrumentations loaded, each provider call
reaches the real local service exactly once, attributed to the business context; the peers' spans
keep everything they had and gain only the business-context attributes; a sampler at ratio 0.1 drops
no cost record; the exporter's deliveries are not traced by an installed httpx instrumentation.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import cost_record_app as app
import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetry
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OpenAIv2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from service_support import running_service
from test_cost_records import app_env, assert_each_call_once, command, wait_rows

from payi_otel import track_context
from payi_otel.exporters import PayiSpanExporter
from payi_otel.instrumentation.openai import OpenAIInstrumentor as Ours

PEERS = {"openai_v2": OpenAIv2, "openllmetry": OpenLLMetry}
ROUNDS = 3
BUSINESS = {"payi.use_case.name": "billing", "payi.user_id": "ursula"}


# --- a real process, the real local service ----------------------------------------------------


@pytest.mark.parametrize("peer", sorted(PEERS))
@pytest.mark.parametrize("peers_first", [True, False], ids=["peer-first", "ours-first"])
def test_in_code_one_event_per_call_in_either_load_order(peer, peers_first, tmp_path):
    with running_service(tmp_path / "data") as service:
        env = app_env(service, tmp_path / "spool", zero_code=False, PAYI_APP_PEERS=peer,
                      PAYI_APP_PEERS_FIRST="1" if peers_first else "0")  # fmt: skip
        out = subprocess.run(command(ROUNDS, zero_code=False), env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert_each_call_once(wait_rows(service.data_dir, 3 * ROUNDS), 3 * ROUNDS)


@pytest.mark.parametrize("sampler", [None, "0.1"], ids=["always", "ratio-0.1"])
def test_zero_code_with_both_peers_loaded_one_event_per_call(sampler, tmp_path):
    # opentelemetry-instrument loads all three (both peers register the entry point name ``openai``) in
    # whatever order their distributions are found.
    with running_service(tmp_path / "data") as service:
        extra = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": sampler} if sampler else {}
        env = app_env(service, tmp_path / "spool", zero_code=True, **extra)
        out = subprocess.run(command(ROUNDS, zero_code=True), env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert_each_call_once(wait_rows(service.data_dir, 3 * ROUNDS), 3 * ROUNDS)


# --- in this process: what the peers' spans look like ------------------------------------------


class Pipeline:
    def __init__(self, tmp_path: Path) -> None:
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.events_file = tmp_path / "events.jsonl"
        self.payi = PayiSpanExporter(offline_file=str(self.events_file), spool_dir=str(tmp_path / "spool"))
        self.provider.add_span_processor(SimpleSpanProcessor(self.payi))
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def calls(self) -> int:
        clients = app.client(app.CHAT), app.client(app.STREAM), app._embeddings_client()
        with track_context(use_case_name="billing", user_id="ursula"):
            clients[0].chat.completions.create(model="gpt-4o-mini", messages=app.MESSAGES)
            # The recording holds a usage chunk; asking for it explicitly makes the answer the one a provider
            # gives with or without us (unasked, we request usage on a copy and hide that extra chunk).
            list(
                clients[1].chat.completions.create(
                    model="gpt-4", messages=app.MESSAGES, stream=True, stream_options={"include_usage": True}
                )
            )
            clients[2].embeddings.create(model="text-embedding-3-small", input="x")
        return 3

    def peer_spans(self) -> list[dict[str, Any]]:
        spans = [s for s in self.memory.get_finished_spans() if s.instrumentation_scope.name != "payi_otel"]
        self.memory.clear()
        return [dict(s.attributes) for s in spans]

    def events(self) -> list[dict[str, Any]]:
        self.payi.force_flush()
        if not self.events_file.exists():
            return []
        return [json.loads(line) for line in self.events_file.read_text().splitlines()]


VARYING = ("gen_ai.response.id",)  # a fresh id per answer


def comparable(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in VARYING}


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_peer_spans_keep_everything_gain_only_the_business_context_and_are_not_billed_twice(peer, tmp_path):
    pipeline = Pipeline(tmp_path)
    instrumentor = PEERS[peer]()
    instrumentor.instrument(tracer_provider=pipeline.provider, meter_provider=pipeline.meter_provider)
    ours = Ours()
    try:
        pipeline.calls()
        alone = pipeline.peer_spans()
        assert len(alone) >= 3
        peer_events = pipeline.events()
        assert len(peer_events) == 3  # the peer alone: its spans are the calls' records
        pipeline.events_file.unlink()

        ours.instrument(tracer_provider=pipeline.provider, meter_provider=pipeline.meter_provider)
        calls = pipeline.calls()
        beside_ours = pipeline.peer_spans()
        assert len(beside_ours) == len(alone)
        for before, after in zip(alone, beside_ours, strict=True):
            added = {k: v for k, v in after.items() if k not in before}
            assert {k: v for k, v in added.items() if not k.startswith("payi.")} == {}
            assert {k: added[k] for k in BUSINESS} == BUSINESS
            assert comparable({k: v for k, v in after.items() if k in before}) == comparable(before)
        events = pipeline.events()
        assert len(events) == calls
        assert {(e.get("use_case_name"), e.get("user_id")) for e in events} == {("billing", "ursula")}
    finally:
        ours.uninstrument()
        instrumentor.uninstrument()
        pipeline.payi.shutdown()


def test_the_exporters_deliveries_are_not_traced_by_an_installed_httpx_instrumentation(tmp_path):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with running_service(tmp_path / "data") as service:
            exporter = PayiSpanExporter(
                base_url=service.base_url, api_key=service.api_key, spool_dir=str(tmp_path / "s")
            )
            ours = Ours()
            ours.instrument(tracer_provider=provider)
            try:
                with track_context(use_case_name="billing", user_id="ursula"):
                    app._embeddings_client().embeddings.create(model="text-embedding-3-small", input="x")
                assert exporter.force_flush(10_000)
                assert exporter.delivered_events == 1
            finally:
                ours.uninstrument()
                exporter.shutdown()
            httpx.get(f"{service.base_url}/openapi.json", timeout=5)  # the app's own httpx request: traced
            urls = [
                str(s.attributes.get("url.full") or s.attributes.get("http.url"))
                for s in memory.get_finished_spans()
                if s.instrumentation_scope.name.startswith("opentelemetry.instrumentation.httpx")
            ]
            assert f"{service.base_url}/openapi.json" in urls
            assert not any("/api/v1/ingest" in url for url in urls), urls
    finally:
        instrumentor.uninstrument()
