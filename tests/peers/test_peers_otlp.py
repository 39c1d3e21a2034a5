"""The peer instrumentations' spans, sent over OTLP to the local service's receiver.

Apps instrumented with openai-v2 (util-genai 1.1b0) or OpenLLMetry, alone or next to ours, export with the
OpenTelemetry SDK's real OTLP exporter (http/protobuf, gzip). Expected units come from the recorded usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cost_record_app as app
import pytest
from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetry
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OpenAIv2
from opentelemetry.sdk.metrics import MeterProvider
from otlp_apps import RESOURCE, otlp_app
from service_support import running_service, stored_requests
from test_end_to_end import recorded, recorded_usage, text_units

from payi_otel import track_context
from payi_otel.instrumentation.openai import OpenAIInstrumentor as Ours

PEERS = {"openai_v2": OpenAIv2, "openllmetry": OpenLLMetry}


def calls() -> None:
    app.client(app.CHAT).chat.completions.create(model="gpt-4o-mini", messages=app.MESSAGES)
    stream = app.client(app.STREAM).chat.completions.create(
        model="gpt-4", messages=app.MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    list(stream)


def expected_units() -> list[dict[str, Any]]:
    return sorted((text_units(recorded_usage(recorded(p))) for p in (app.CHAT, app.STREAM)), key=str)


def instrument(names: list[str], provider: Any) -> list[Any]:
    instrumentors = []
    for name in names:
        instrumentor = Ours() if name == "ours" else PEERS[name]()
        instrumentor.instrument(tracer_provider=provider, meter_provider=MeterProvider(), skip_dep_check=True)
        instrumentors.append(instrumentor)
    return instrumentors


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_peer_spans_alone_become_one_priced_request_per_call(peer: str, tmp_path: Path) -> None:
    with running_service(tmp_path / "data") as service:
        with otlp_app(service.base_url, service.api_key) as otlp:
            instrumentors = instrument([peer], otlp.provider)
            try:
                calls()
            finally:
                for instrumentor in instrumentors:
                    instrumentor.uninstrument()
        rows = stored_requests(service.data_dir)
    assert sorted((row["units"] for row in rows), key=str) == expected_units()
    assert {(row["category"], row["properties"]["service.name"]) for row in rows} == {
        ("system.openai", RESOURCE["service.name"])
    }
    assert all(row["cost_total"] > 0 for row in rows)


@pytest.mark.parametrize("peer", sorted(PEERS))
@pytest.mark.parametrize("peer_first", [True, False], ids=["peer-first", "ours-first"])
def test_two_instrumentations_on_store_one_request_per_call_with_the_business_context(
    peer: str, peer_first: bool, tmp_path: Path
) -> None:
    with running_service(tmp_path / "data") as service:
        with otlp_app(service.base_url, service.api_key) as otlp:
            instrumentors = instrument([peer, "ours"] if peer_first else ["ours", peer], otlp.provider)
            try:
                with track_context(use_case_name="billing", user_id="ursula"):
                    calls()
            finally:
                for instrumentor in reversed(instrumentors):
                    instrumentor.uninstrument()
        rows = stored_requests(service.data_dir)
    assert len(rows) == 2
    assert sorted((row["units"] for row in rows), key=str) == expected_units()
    assert {(row["use_case_name"], row["user_id"]) for row in rows} == {("billing", "ursula")}
    assert all(row["properties"] == RESOURCE for row in rows)
