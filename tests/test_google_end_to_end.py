"""Google GenAI through the whole pipeline, real pieces only: the google-genai SDK (HTTP transport replaced by
recorded traffic), our instrumentation and business context, the real PayiSpanExporter, and the local service
as an HTTP server on 127.0.0.1. Assertions are on what the service stored and priced."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _google_helpers import CASSETTES, client_for, embed_kwargs, expected_units, generate_kwargs, restored
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from google.genai import errors
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from service_support import running_service, stored_requests

from payi_otel import track_context
from payi_otel.exporters import PayiSpanExporter
from payi_otel.instrumentation.google_genai import GoogleGenAIInstrumentor
from payi_otel.testing.replay import Cassette, Interaction

PYDANTIC = CASSETTES / "pydantic__pydantic-ai" / "google"
CONTRIB = CASSETTES / "open-telemetry__opentelemetry-python-contrib" / "google"
FAST = dict(retry_initial_backoff=0.02, retry_max_backoff=0.2, timeout=5.0, shutdown_timeout=5.0)


def _recorded(path: Path, action: str) -> tuple[Interaction, Cassette]:
    interaction = restored(next(i for i in Cassette.load(path).interactions if i.path.endswith(":" + action)))
    return interaction, Cassette([interaction], name=path.name)


@contextmanager
def _pipeline(tmp_path: Path) -> Iterator[tuple[Any, PayiSpanExporter]]:
    with running_service(tmp_path / "data") as service:
        exporter = PayiSpanExporter(
            base_url=service.base_url, api_key=service.api_key, spool_dir=tmp_path / "spool", **FAST
        )
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        instrumentor = GoogleGenAIInstrumentor()
        instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)
        try:
            yield service, exporter
        finally:
            instrumentor.uninstrument()
            provider.shutdown()


def _genai_prices_cost(usage: dict[str, Any], model: str) -> float:
    """The recorded usage priced by genai-prices directly (inclusive input, thoughts billed as output)."""
    price = calc_price(
        PriceUsage(
            input_tokens=usage["promptTokenCount"],
            cache_read_tokens=usage.get("cachedContentTokenCount", 0),
            output_tokens=usage.get("candidatesTokenCount", 0) + usage.get("thoughtsTokenCount", 0),
        ),
        model_ref=model,
        provider_id="google",
    )
    return float(price.total_price)


def test_gemini_and_vertex_calls_arrive_once_each_priced_with_context(tmp_path):
    cached, cached_tape = _recorded(PYDANTIC / "test_google_model_cached_content.yaml", "generateContent")
    vertex, vertex_tape = _recorded(CONTRIB / "test_generate_content.yaml", "generateContent")
    stream, stream_tape = _recorded(PYDANTIC / "test_google_vertex_service_tier_flex_stream.yaml",
                                    "streamGenerateContent")  # fmt: skip
    embed, embed_tape = _recorded(PYDANTIC / "test_google_task_prefix_vertex.yaml", "embedContent")
    missing, missing_tape = _recorded(CONTRIB / "test_generate_content_missing_model.yaml", "generateContent")
    # Clients are held: a collected google-genai client closes its HTTP client.
    clients = [client_for(i, tape) for i, tape in ((cached, cached_tape), (vertex, vertex_tape),
               (stream, stream_tape), (embed, embed_tape), (missing, missing_tape))]  # fmt: skip
    with _pipeline(tmp_path) as (service, exporter):
        with track_context(use_case_name="google_e2e", user_id="ana", request_tags=["gemini"]):
            clients[0].models.generate_content(**generate_kwargs(cached))
            clients[1].models.generate_content(**generate_kwargs(vertex))
            chunks = list(clients[2].models.generate_content_stream(**generate_kwargs(stream)))
            clients[3].models.embed_content(**embed_kwargs(embed))
            with pytest.raises(errors.ClientError):
                clients[4].models.generate_content(**generate_kwargs(missing))
        assert exporter.force_flush(15_000)
        rows = stored_requests(service.data_dir)
    assert len(rows) == 5  # one event per billed request, the failure included
    assert {r["category"] for r in rows} == {"system.google.vertex"}
    assert all(r["user_id"] == "ana" for r in rows)
    by_id = {r["provider_response_id"]: r for r in rows}

    usage = cached.json()["usageMetadata"]
    row = by_id[cached.json()["responseId"]]
    assert row["resource"] == "google.gemini-2.5-flash"
    assert row["units"] == expected_units(usage, "gemini-2.5-flash")
    assert row["cost_total"] == pytest.approx(_genai_prices_cost(usage, "gemini-2.5-flash"), rel=1e-9)

    usage = vertex.json()["usageMetadata"]
    row = by_id[vertex.json()["responseId"]]
    assert row["resource"] == "google.gemini-2.5-pro"
    assert row["cost_total"] == pytest.approx(_genai_prices_cost(usage, "gemini-2.5-pro"), rel=1e-9)

    row = by_id[chunks[0].response_id]
    assert row["resource"] == "google.gemini-3-flash-preview"
    assert row["units"]["reasoning"]["output"] == chunks[-1].usage_metadata.thoughts_token_count
    assert row["cost_total"] is not None

    embed_rows = [r for r in rows if r["resource"] == "google.gemini-embedding-2"]
    assert len(embed_rows) == 1
    assert embed_rows[0]["units"] == {"text": {"input": embed.json()["usageMetadata"]["promptTokenCount"],
                                               "output": 0}}  # fmt: skip
    assert embed_rows[0]["cost_total"] is not None

    (failed,) = [r for r in rows if r["http_status_code"] == 404]
    assert failed["failed"] and failed["resource"] == "google.gemini-does-not-exist"
