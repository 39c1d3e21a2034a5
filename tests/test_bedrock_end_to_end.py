"""Bedrock through the whole pipeline, real pieces only: boto3 (HTTP answered from recordings), our
instrumentation and business context, the real PayiSpanExporter, and the local service on 127.0.0.1
pricing the events with genai-prices."""

from __future__ import annotations

from pathlib import Path

from _bedrock_helpers import CASSETTES, boto_call, expected_units, replayed_client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from service_support import running_service, stored_requests

from payi_otel import track_context
from payi_otel.exporters import PayiSpanExporter
from payi_otel.instrumentation.bedrock import BedrockInstrumentor, resolve
from payi_otel.testing.replay import Cassette, Interaction

TRACELOOP = CASSETTES / "traceloop__openllmetry" / "bedrock"
OTEL = CASSETTES / "open-telemetry__opentelemetry-python-contrib" / "bedrock"

CALLS = {  # what the app does -> the recording that answers it
    "converse": TRACELOOP / "test_anthropic_cross_region.yaml",  # inference-profile ARN, guardrails
    "invoke_model": TRACELOOP / "test_prompt_cache.yaml",  # Anthropic, cache write then read (headers)
    "converse_stream": TRACELOOP / "test_meta_converse_stream.yaml",
    "invoke_model_with_response_stream": OTEL / "test_invoke_model_with_response_stream_no_content[amazon.nova].yaml",
}
FAST = dict(retry_initial_backoff=0.02, retry_max_backoff=0.2, timeout=5.0, shutdown_timeout=5.0)


def _run(method: str, interaction: Interaction) -> None:
    client, _ = replayed_client(interaction)
    response = getattr(client, method)(**boto_call(interaction)[1])
    if method == "invoke_model":
        response["body"].read()
    elif method in ("converse_stream", "invoke_model_with_response_stream"):
        list(response["stream" if method == "converse_stream" else "body"])


def test_bedrock_calls_arrive_priced_and_attributed(tmp_path: Path):
    with running_service(tmp_path / "data") as service:
        exporter = PayiSpanExporter(
            base_url=service.base_url, api_key=service.api_key, spool_dir=tmp_path / "spool", **FAST
        )
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        instrumentor = BedrockInstrumentor()
        instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)
        expected = []
        try:
            with track_context(use_case_name="bedrock_app", user_id="dana", account_name="acme"):
                for method, path in CALLS.items():
                    for interaction in Cassette.load(path).interactions:
                        _run(method, interaction)
                        expected.append((method, interaction))
            assert exporter.force_flush(15_000)
        finally:
            instrumentor.uninstrument()
            provider.shutdown()
        rows = stored_requests(service.data_dir)

    assert len(rows) == len(expected)
    by_id = {row["provider_response_id"]: row for row in rows}
    for method, interaction in expected:
        row = by_id[interaction.header("x-amzn-requestid")]
        resource, scope = resolve(boto_call(interaction)[1]["modelId"])
        assert row["category"] == "system.aws.bedrock"
        assert row["resource"] == resource
        assert row["resource_scope"] == scope
        assert row["user_id"] == "dana" and row["account_name"] == "acme"
        units = {f"{u}.{d}": n for u, dirs in row["units"].items() for d, n in dirs.items() if n}
        assert units == expected_units(method, interaction)
        assert row["cost_total"] is not None and row["cost_total"] > 0, (resource, row)
