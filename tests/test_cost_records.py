"""Cost records are billing data: every provider call that returned to the caller has its record on disk
before the caller continues, whatever the trace sampler decided, and reaches the real local service
exactly once, also when the process is killed with SIGKILL right after its calls returned.

Each case runs ``tests/cost_record_app.py`` (real openai SDK, recorded answers with a fresh response id
per chat call) in a fresh interpreter, zero-code (``opentelemetry-instrument``) and in code
(``payi_otel.instrument()``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from service_support import running_service, stored_requests

APP = Path(__file__).parent / "cost_record_app.py"
BIN = Path(sys.executable).parent
ROUNDS = 7  # x (chat, stream, embeddings)


def app_env(service: Any, spool: Path, *, zero_code: bool, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYI_"))}
    env.update(
        PAYI_BASE_URL=service.base_url,
        PAYI_API_KEY=service.api_key,
        PAYI_SPOOL_DIR=str(spool),
        PAYI_RETRY_INITIAL_BACKOFF="0.05",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        PYTHONPATH=str(APP.parent),
    )
    if zero_code:
        env.update(PAYI_APP_ZERO_CODE="1", OTEL_TRACES_EXPORTER="payi")
    env.update(extra)
    return env


def command(rounds: int, *, zero_code: bool) -> list[str]:
    app = [sys.executable, str(APP), str(rounds)]
    return [str(BIN / "opentelemetry-instrument"), *app] if zero_code else app


def wait_rows(data_dir: Path, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows = stored_requests(data_dir)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = stored_requests(data_dir)
    time.sleep(0.5)  # anything beyond the expected count would be a duplicate: give it time to show
    return stored_requests(data_dir)


def assert_each_call_once(rows: list[dict[str, Any]], calls: int) -> None:
    assert len(rows) == calls
    assert len({r["provider_response_id"] for r in rows}) == calls
    assert {(r["use_case_name"], r["user_id"]) for r in rows} == {("billing", "ursula")}
    resources = sorted(r["resource"] for r in rows)
    per_round = calls // 3
    assert resources == sorted(["gpt-4o-mini", "gpt-4", "text-embedding-3-small"] * per_round)


@pytest.mark.parametrize("zero_code", [True, False], ids=["zero-code", "in-code"])
def test_a_sampler_at_ratio_0_1_drops_no_cost_record(zero_code, tmp_path):
    with running_service(tmp_path / "data") as service:
        env = app_env(service, tmp_path / "spool", zero_code=zero_code,
                      OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0.1")  # fmt: skip
        out = subprocess.run(command(ROUNDS, zero_code=zero_code), env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert f"RETURNED {3 * ROUNDS}" in out.stdout
        assert_each_call_once(wait_rows(service.data_dir, 3 * ROUNDS), 3 * ROUNDS)


@pytest.mark.parametrize("zero_code", [True, False], ids=["zero-code", "in-code"])
def test_sigkill_right_after_the_calls_returned_loses_nothing_and_sends_nothing_twice(zero_code, tmp_path):
    spool = tmp_path / "spool"
    with running_service(tmp_path / "data") as service:
        # Nothing can be delivered before the kill: the first process talks to a closed port.
        dead = type("Dead", (), {"base_url": "http://127.0.0.1:9", "api_key": service.api_key})()
        env = app_env(dead, spool, zero_code=zero_code, PAYI_APP_WAIT="1")
        proc = subprocess.Popen(command(ROUNDS, zero_code=zero_code), env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == f"RETURNED {3 * ROUNDS}", line
        finally:
            proc.send_signal(signal.SIGKILL)  # right after the calls returned: no exit hook runs
            proc.wait(10)
        assert list(spool.glob("journal-*")), "the calls are journaled on disk"

        # Restarted (no calls this time), pointing at the service: it delivers what the dead one journaled.
        env = app_env(service, spool, zero_code=zero_code)
        out = subprocess.run(command(0, zero_code=zero_code), env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        rows = wait_rows(service.data_dir, 3 * ROUNDS)
        assert_each_call_once(rows, 3 * ROUNDS)
        # A third start finds nothing left to send.
        out = subprocess.run(command(0, zero_code=zero_code), env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert len(wait_rows(service.data_dir, 3 * ROUNDS, timeout=1)) == 3 * ROUNDS
        assert not list(spool.glob("journal-*")) and not list(spool.glob("batch-*.jsonl"))


@pytest.mark.parametrize("zero_code", [True, False], ids=["zero-code", "in-code"])
def test_a_stream_still_held_unfinished_at_exit_is_recorded_once(zero_code, tmp_path):
    """A stream read partway and kept in a module global when the program exits normally: its garbage collection
    would come after the exporter has closed, so it is ended (abandoned) at exit, while the journal is open."""
    with running_service(tmp_path / "data") as service:
        env = app_env(service, tmp_path / "spool", zero_code=zero_code, PAYI_APP_KEEP_STREAM="1")
        out = subprocess.run(command(1, zero_code=zero_code), env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "RETURNED 4" in out.stdout
        rows = wait_rows(service.data_dir, 4)
    assert len(rows) == 4 and len({r["provider_response_id"] for r in rows}) == 4
    assert {(r["use_case_name"], r["user_id"]) for r in rows} == {("billing", "ursula")}
    (kept,) = [r for r in rows if r["properties"].get("system.usage_incomplete") == "true"]
    assert kept["resource"] == "gpt-4" and kept["cost_total"] is None  # partial usage: not priced as a cost
    assert "abandoned" in kept["properties"]["system.usage_incomplete.reason"]


def test_the_journaled_event_is_the_event_the_span_maps_to(tmp_path):
    """One mapping: the event made from the journal equals the exporter's event for our span."""
    import cost_record_app as app
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from payi_otel import track_context
    from payi_otel.exporters import PayiSpanExporter, event_from_span
    from payi_otel.instrumentation.openai import OpenAIInstrumentor

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    events_file = tmp_path / "events.jsonl"
    payi = PayiSpanExporter(offline_file=str(events_file), spool_dir=str(tmp_path / "spool"))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with track_context(use_case_name="billing", user_id="ursula", request_properties={"k": "v"}):
            app.client(app.CHAT).chat.completions.create(model="gpt-4o-mini", messages=app.MESSAGES)
            list(app.client(app.STREAM).chat.completions.create(model="gpt-4", messages=app.MESSAGES, stream=True))
            app._embeddings_client().embeddings.create(model="text-embedding-3-small", input="x")
        assert payi.force_flush(5_000)
    finally:
        instrumentor.uninstrument()
        payi.shutdown()
    journaled = [json.loads(line) for line in events_file.read_text().splitlines()]
    from_spans = [event_from_span(span) for span in memory.get_finished_spans()]
    assert len(journaled) == 3
    assert journaled == from_spans
    assert journaled[0]["properties"]["service.name"] == "checkout"
