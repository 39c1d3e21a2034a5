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
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from otlp_apps import RESOURCE, otlp_app
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
from payi_otel.exporters import PayiSpanExporter
from payi_otel.instrumentation.openai import OpenAIInstrumentor
from payi_otel.relay import create_relay_app
from payi_otel.service.server import AppThread, ServiceThread

RELAY_KEY = "relay-inbound-key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def relay(
    base_url: str, api_key: str, spool: Path, grpc: bool = False, hold_s: float = 0.3
) -> Iterator[dict[str, Any]]:
    """``payi-otel relay`` in its own process (as deployed); yields its endpoints and its process."""
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
        "PAYI_OTEL_RELAY_HOLD_S": str(hold_s),
    }
    command = [sys.executable, "-m", "payi_otel.cli", "relay", "--port", str(port)]
    if grpc:
        command += ["--otlp-grpc-port", str(grpc_port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}/v1/traces" in first, first + process.stdout.read()
        yield {"http/protobuf": f"http://127.0.0.1:{port}", "grpc": f"127.0.0.1:{grpc_port}", "process": process}
    finally:
        if process.poll() is None:  # not killed by the test
            process.terminate()
            assert process.wait(20) == 0  # SIGTERM: a clean stop
        else:
            process.wait()
        process.stdout.close()


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


def two_spans_of_one_call() -> tuple[Any, Any, dict[str, int]]:
    """Our span (with business context) and another instrumentation's span (without) around the same
    recorded call; the other one has no response id, so the two events' ids differ and Pay-i's dedupe by id
    could not join them. Returns (ours, theirs, the recorded usage)."""
    from opentelemetry import trace
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
    foreign = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        "gen_ai.usage.output_tokens": usage["completion_tokens"],
    }
    try:
        with (
            provider.get_tracer("other").start_as_current_span("chat", kind=trace.SpanKind.CLIENT, attributes=foreign),
            track_context(use_case_name="triage", user_id="alice"),  # set inside: only our span carries it
        ):
            openai_client(chat).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        instrumentor.uninstrument()
    ours, theirs = memory.get_finished_spans()
    assert ours.parent.span_id == theirs.context.span_id
    assert "payi.use_case.name" in ours.attributes and "payi.use_case.name" not in theirs.attributes
    return ours, theirs, usage


def post_spans(base_url: str, spans: list[Any]) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    response = httpx.post(
        f"{base_url}/v1/traces",
        content=encode_spans(spans).SerializeToString(),
        headers={"Content-Type": "application/x-protobuf", "xProxy-api-key": RELAY_KEY},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("order", ["ours first", "theirs first"])
def test_two_spans_of_one_call_in_different_requests_give_one_event_with_the_business_context(
    tmp_path: Path, order: str
) -> None:
    ours, theirs, usage = two_spans_of_one_call()
    with running_service(tmp_path / "data") as service:
        # held 5 s: ample for the second request however loaded the machine is
        with relay(service.base_url, service.api_key, tmp_path / "spool", hold_s=5) as endpoints:
            for batch in ([ours], [theirs]) if order == "ours first" else ([theirs], [ours]):
                post_spans(endpoints["http/protobuf"], batch)
            wait_for(lambda: len(stored_requests(service.data_dir)) == 1, timeout=30)
        rows = stored_requests(service.data_dir)  # the relay stopped: everything it had is delivered
    assert len(rows) == 1
    row = rows[0]
    assert row["units"] == text_units(usage)
    assert (row["use_case_name"], row["user_id"]) == ("triage", "alice")  # also when our span came second
    assert row["provider_response_id"] == response_id(recorded(CHAT))  # our span's event, ranked higher


@pytest.mark.parametrize("restarted", [False, True], ids=["same relay", "after a restart"])
def test_a_span_arriving_after_its_call_was_released_is_not_forwarded_again(tmp_path: Path, restarted: bool) -> None:
    ours, theirs, _ = two_spans_of_one_call()
    spool = tmp_path / "spool"
    with running_service(tmp_path / "data") as service:
        with ExitStack() as relays:
            endpoints = relays.enter_context(relay(service.base_url, service.api_key, spool, hold_s=0.2))
            post_spans(endpoints["http/protobuf"], [theirs])
            wait_for(lambda: len(stored_requests(service.data_dir)) == 1)
            if restarted:  # the late span meets a new process, which knows the call only from the spool
                relays.close()
                endpoints = relays.enter_context(relay(service.base_url, service.api_key, spool, hold_s=0.2))
            post_spans(endpoints["http/protobuf"], [ours])  # answered: nothing of it was spooled
            assert not list(spool.glob("held-*.jsonl")) and not list(spool.glob("batch-*.jsonl"))
        rows = stored_requests(service.data_dir)
    assert len(rows) == 1 and rows[0]["use_case_name"] is None  # the event already sent stands


def test_held_events_survive_a_killed_relay(tmp_path: Path) -> None:
    ours, theirs, usage = two_spans_of_one_call()
    spool = tmp_path / "spool"
    with running_service(tmp_path / "data") as service:
        with relay(service.base_url, service.api_key, spool, hold_s=300) as endpoints:
            post_spans(endpoints["http/protobuf"], [theirs])
            post_spans(endpoints["http/protobuf"], [ours])
            endpoints["process"].kill()  # SIGKILL: nothing released, nothing sent
            assert endpoints["process"].wait(20) == -9
        assert len(list(spool.glob("held-*.jsonl"))) == 1 and not list(spool.glob("batch-*.jsonl"))
        assert stored_requests(service.data_dir) == []
        with relay(service.base_url, service.api_key, spool, hold_s=300):  # releases what it finds held
            wait_for(lambda: len(stored_requests(service.data_dir)) == 1)
        rows = stored_requests(service.data_dir)
    assert len(rows) == 1
    assert rows[0]["units"] == text_units(usage)
    assert (rows[0]["use_case_name"], rows[0]["user_id"]) == ("triage", "alice")
    assert not list(spool.glob("held-*.jsonl"))


def test_relay_hold_setting_is_checked() -> None:
    from payi_otel.relay import hold_seconds

    assert hold_seconds({}) == 10.0
    assert hold_seconds({"PAYI_OTEL_RELAY_HOLD_S": "0"}) == 0.0
    for bad in ("-1", "soon", "301", "nan"):
        with pytest.raises(ValueError, match=r"PAYI_OTEL_RELAY_HOLD_S=.*from 0 to 300"):
            hold_seconds({"PAYI_OTEL_RELAY_HOLD_S": bad})
    result = subprocess.run(
        [sys.executable, "-m", "payi_otel.cli", "relay", "--port", "0"],
        env={**os.environ, "PAYI_OTEL_RELAY_HOLD_S": "soon"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "PAYI_OTEL_RELAY_HOLD_S='soon'" in result.stderr, result.stderr


def test_the_relay_remembers_forwarded_calls_for_a_bounded_window() -> None:
    from payi_otel.exporters.calls import Call
    from payi_otel.relay_calls import RecentCalls

    now = [0.0]
    recent = RecentCalls(window_s=900, max_spans=3, clock=lambda: now[0])

    def new(span: str, parent: str, key: str = "system.openai/gpt-4o-mini") -> bool:
        fresh, _ = recent.claim([Call({"category": "system.openai"}, 0, key, "t1", [(span, parent)])])
        return bool(fresh)

    assert new("child", "parent")
    assert not new("parent", "")  # its child was forwarded: the same call
    assert not new("grandchild", "child")  # the child's own child, same key
    assert new("other", "parent", key="system.openai/gpt-4o")  # another model: another call
    now[0] = 901.0  # past the window: forgotten
    assert new("parent", "")
    for i in range(5):  # at most 3 spans are remembered, the oldest forgotten first
        new(f"s{i}", "")
    assert new("x", "s0") and not new("y", "s4")


def test_the_span_journal_restores_what_the_window_still_holds(tmp_path: Path) -> None:
    from payi_otel.exporters.calls import Call
    from payi_otel.relay_calls import RecentCalls, SpanJournal

    journal = SpanJournal(tmp_path / "relay-spans.jsonl")
    key = "system.openai/gpt-4o-mini"
    journal.append([("t1", "old", "", key, 1000.0), ("t1", "child", "parent", key, 1800.0)])
    with open(journal.path, "ab") as fh:
        fh.write(b'["t1","cut-by-a-crash"')  # a line cut by a kill: skipped
    recent = RecentCalls(window_s=900, clock=lambda: 50.0)
    recent.restore(journal.load(), now_wall=2000.0)
    assert [entry[:4] for entry in recent.entries(2000.0)] == [("t1", "child", "parent", key)]  # "old": too old
    fresh, seen = recent.claim([Call({"category": "system.openai"}, 0, key, "t1", [("parent", "")])])
    assert fresh == [] and seen[0][0].held is None  # its child was forwarded before: released, it stands
