"""``payi-otel relay``: app -> (SDK OTLP exporter) -> relay -> (Pay-i ingest API) -> local service.

The relay is the real app over a real PayiSpanExporter; the local service plays Pay-i's cloud.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from otlp_apps import RESOURCE, otlp_app
from payi_otel.exporters import PayiSpanExporter
from service_support import running_service, stored_requests
from test_end_to_end import (
    CHAT,
    FAST,
    MESSAGES,
    STREAM,
    openai_client,
    recorded,
    recorded_usage,
    response_id,
    text_units,
)

from payi_otel import track_context
from payi_otel.instrumentation.openai import OpenAIInstrumentor
from payi_otel.relay import create_relay_app
from payi_otel.service.server import AppThread, ServiceThread

RELAY_KEY = "relay-inbound-key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def relay(base_url: str, api_key: str, spool: Path, grpc: bool = False) -> Iterator[dict[str, Any]]:
    """``payi-otel relay`` in its own process (as deployed); yields its endpoints."""
    port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PAYI_BASE_URL": base_url,
        "PAYI_API_KEY": api_key,
        "PAYI_OTEL_RELAY_KEY": RELAY_KEY,
        "PAYI_SPOOL_DIR": str(spool),
        "PAYI_INGEST_MODE": "bulk",
        "PAYI_SHUTDOWN_TIMEOUT": "1",
        "PAYI_RETRY_INITIAL_BACKOFF": "0.02",
        "PAYI_RETRY_MAX_BACKOFF": "0.2",
    }
    command = [sys.executable, "-m", "payi_otel.cli", "relay", "--port", str(port)]
    if grpc:
        command += ["--otlp-grpc-port", str(grpc_port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}/v1/traces" in first, first + process.stdout.read()
        yield {"http/protobuf": f"http://127.0.0.1:{port}", "grpc": f"127.0.0.1:{grpc_port}"}
    finally:
        process.terminate()
        assert process.wait(20) == 0  # SIGTERM: a clean stop


def make_calls(provider: Any) -> None:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)
    try:
        with track_context(use_case_name="triage", user_id="alice"):
            openai_client(recorded(CHAT)).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            stream = recorded(STREAM)
            model = stream.request_body["model"]
            list(openai_client(stream).chat.completions.create(model=model, messages=MESSAGES, stream=True))
    finally:
        instrumentor.uninstrument()


def assert_stored(data_dir: Path) -> None:
    rows = {row["provider_response_id"]: row for row in stored_requests(data_dir)}
    for interaction in (recorded(CHAT), recorded(STREAM)):
        row = rows.pop(response_id(interaction))
        assert row["units"] == text_units(recorded_usage(interaction))
        assert (row["use_case_name"], row["user_id"]) == ("triage", "alice")
        assert row["properties"] == RESOURCE
    assert rows == {}


def wait_for(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_sent_to_the_relay_reach_the_pay_i_api(tmp_path: Path, protocol: str) -> None:
    with running_service(tmp_path / "data") as service:
        with relay(service.base_url, service.api_key, tmp_path / "spool", grpc=protocol == "grpc") as endpoints:
            with otlp_app(endpoints[protocol], RELAY_KEY, protocol) as app:
                make_calls(app.provider)
            wait_for(lambda: len(stored_requests(service.data_dir)) == 2)
        assert_stored(service.data_dir)


def test_relay_loses_nothing_across_an_outage_and_a_restart(tmp_path: Path) -> None:
    port = free_port()  # Pay-i will answer here once it is up
    pay_i = f"http://127.0.0.1:{port}"
    spool, data = tmp_path / "spool", tmp_path / "data"
    with running_service(data):  # creates the data directory and its default key
        pass
    key = (data / "default-api-key").read_text().strip()
    with relay(pay_i, key, spool) as endpoints, otlp_app(endpoints["http/protobuf"], RELAY_KEY) as app:
        make_calls(app.provider)  # Pay-i is down: the relay accepts and keeps the events
    assert list(spool.glob("batch-*.jsonl")), "the events were not kept in the spool"
    assert stored_requests(data) == []
    with ServiceThread(data, port=port) as service, relay(pay_i, key, spool):  # a new relay, the same spool
        wait_for(lambda: len(stored_requests(service.data_dir)) == 2)
    assert_stored(data)
    assert not list(spool.glob("batch-*.jsonl"))


def test_relay_refuses_senders_without_its_key(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from test_otlp_receiver import _spans

    body = encode_spans(_spans({"service.name": "probe"}, 1, 1)).SerializeToString()
    exporter = PayiSpanExporter(base_url="http://127.0.0.1:9", api_key="k", spool_dir=tmp_path / "spool", **FAST)
    with AppThread(create_relay_app(exporter, RELAY_KEY)) as forwarder:
        url = f"{forwarder.base_url}/v1/traces"
        for key in (None, "wrong"):
            headers = {"Content-Type": "application/x-protobuf", **({"xProxy-api-key": key} if key else {})}
            assert httpx.post(url, content=body, headers=headers).status_code == 401
        headers = {"Content-Type": "application/x-protobuf", "xProxy-api-key": RELAY_KEY}
        assert httpx.post(url, content=body, headers=headers).status_code == 200


@pytest.mark.parametrize("order", ["ours first", "theirs first"])
def test_two_spans_of_one_call_in_different_requests_are_forwarded_once(tmp_path: Path, order: str) -> None:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    chat = recorded(CHAT)
    usage = recorded_usage(chat)
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)
    foreign = {  # another instrumentation's span around the same call; it has no response id, so its
        "gen_ai.operation.name": "chat",  # event's id differs from ours and Pay-i's dedupe cannot join them
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        "gen_ai.usage.output_tokens": usage["completion_tokens"],
    }
    try:
        with (
            track_context(use_case_name="triage", user_id="alice"),
            provider.get_tracer("other").start_as_current_span("chat", kind=trace.SpanKind.CLIENT, attributes=foreign),
        ):
            openai_client(chat).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        instrumentor.uninstrument()
    ours, theirs = memory.get_finished_spans()
    assert ours.parent.span_id == theirs.context.span_id
    with running_service(tmp_path / "data") as service:
        exporter = PayiSpanExporter(
            base_url=service.base_url, api_key=service.api_key, spool_dir=tmp_path / "spool", **FAST
        )
        with AppThread(create_relay_app(exporter, RELAY_KEY)) as forwarder:
            for batch in ([ours], [theirs]) if order == "ours first" else ([theirs], [ours]):
                response = httpx.post(
                    f"{forwarder.base_url}/v1/traces",
                    content=encode_spans(batch).SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf", "xProxy-api-key": RELAY_KEY},
                )
                assert response.status_code == 200
        rows = stored_requests(service.data_dir)  # the relay delivered what it had when it stopped
    assert len(rows) == 1
    assert rows[0]["units"] == text_units(usage)
    if order == "ours first":  # the span forwarded first stands: ours carries the business context
        assert (rows[0]["use_case_name"], rows[0]["user_id"]) == ("triage", "alice")


def test_the_relay_remembers_forwarded_calls_for_a_bounded_window() -> None:
    from payi_otel.exporters.calls import Call
    from payi_otel.relay import RecentCalls

    now = [0.0]
    recent = RecentCalls(window_s=900, max_spans=3, clock=lambda: now[0])

    def call(span: str, parent: str, key: str = "system.openai/gpt-4o-mini") -> Call:
        return Call({"category": "system.openai"}, 0, key, "t1", [(span, parent)])

    assert recent.claim([call("child", "parent")]) != []
    assert recent.claim([call("parent", "")]) == []  # its child was forwarded: the same call
    assert recent.claim([call("grandchild", "child")]) == []  # the child's own child, same key
    assert recent.claim([call("other", "parent", key="system.openai/gpt-4o")]) != []  # another model: another call
    now[0] = 901.0  # past the window: forgotten
    assert recent.claim([call("parent", "")]) != []
    for i in range(5):  # at most 3 spans are remembered, the oldest forgotten first
        recent.claim([call(f"s{i}", "")])
    assert recent.claim([call("x", "s0")]) != [] and recent.claim([call("y", "s4")]) == []
