"""Delivery of ingest events by PayiSpanExporter to a real HTTP server on 127.0.0.1 that fails on purpose."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from exporter_fault_server import REJECT_RESOURCE, FaultServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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
def test_server_down_for_a_while_then_everything_arrives_once(tmp_path, spans, make_exporter, mode, caplog):
    caplog.set_level(logging.WARNING, logger="payi_otel.exporters")
    server = FaultServer().start()
    port = server.port
    server.stop()  # the port is closed: connection refused
    exporter = make_exporter(base_url=f"http://127.0.0.1:{port}", ingest_mode=mode)
    durations = [timed_export(exporter, spans(ids(f"d{i}", 20))) for i in range(5)]
    assert max(durations) < 0.25, durations  # export() never waits for the network
    assert not exporter.force_flush(300)  # nothing can be delivered yet
    assert exporter.spool.pending_batches() > 0
    # The warning says where delivery failed and why, and that the events are kept.
    assert any(
        f"not delivered to http://127.0.0.1:{port} yet (ConnectError" in r.getMessage()
        and "kept in the spool" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
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
    value = formatdate(math.ceil(time.time()) + 2, usegmt=True) if retry_after == "date" else retry_after
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
def test_permanent_rejections_go_to_the_dead_letter_file_logged_once(
    server, spans, make_exporter, mode, caplog, tmp_path
):
    caplog.set_level(logging.ERROR, logger="payi_otel.exporters")
    spool_dir = tmp_path / f"spool-{mode}"
    exporter = make_exporter(base_url=server.url, ingest_mode=mode, spool_dir=spool_dir, batch_size=3)
    reject = dict(resource=REJECT_RESOURCE)
    exporter.export(
        spans(["ok-1"]) + spans(["bad-1"], **reject) + spans(["ok-2"]) + spans(["bad-2"], **reject) + spans(["ok-3"])
    )
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


# --- restarts, bounds, sharing ---------------------------------------------------------------


def test_what_shutdown_could_not_send_is_sent_by_the_next_exporter(tmp_path, spans, make_exporter):
    server = FaultServer().start()
    port = server.port
    server.stop()
    first = make_exporter(base_url=f"http://127.0.0.1:{port}", shutdown_timeout=0.3)
    first.export(spans(ids("left", 7)))
    started = time.monotonic()
    first.shutdown()
    assert time.monotonic() - started < 1.5  # shutdown honours its timeout
    assert first.spool.pending_batches() == 1
    assert first.export(spans(["late"])) is SpanExportResult.FAILURE  # after shutdown
    server = FaultServer(port).start()
    try:
        second = make_exporter(base_url=f"http://127.0.0.1:{port}")
        assert server.wait_for(7)  # sent at start, without waiting for a new export
        assert second.force_flush(5000)
        assert server.ids() == set(ids("left", 7))
        assert sum(server.duplicates.values()) == 0
    finally:
        server.stop()


def test_full_spool_drops_new_events_counts_and_warns(tmp_path, spans, make_exporter, caplog):
    caplog.set_level(logging.WARNING, logger="payi_otel.exporters")
    exporter = make_exporter(base_url="http://127.0.0.1:9", spool_max_bytes=3000, batch_size=1)
    for i in range(30):
        assert exporter.export(spans([f"full-{i}"])) is SpanExportResult.SUCCESS
    assert exporter.spool.pending_bytes() <= 3000
    assert 0 < exporter.dropped_events < 30
    assert exporter.dropped_events + exporter.spool.pending_batches() == 30
    warnings = [r.getMessage() for r in caplog.records if "is full" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited, not one per event
    assert "dropped" in warnings[0]


def test_two_exporters_sharing_a_spool_never_send_the_same_batch(tmp_path, spans, server, make_exporter):
    spool_dir = tmp_path / "shared"
    server.slow_all = 0.01
    writer = make_exporter(base_url="http://127.0.0.1:9", spool_dir=spool_dir, batch_size=5)  # cannot send
    writer.export(spans(ids("shared", 100)))
    a = make_exporter(base_url=server.url, spool_dir=spool_dir, ingest_mode="bulk")
    b = make_exporter(base_url=server.url, spool_dir=spool_dir, ingest_mode="bulk")
    assert server.wait_for(100, timeout=15)
    assert a.force_flush(5000) and b.force_flush(5000)
    assert server.ids() == set(ids("shared", 100))
    assert sum(server.duplicates.values()) == 0
    assert a.delivered_events > 0 and b.delivered_events > 0  # both took part
    assert a.delivered_events + b.delivered_events == 100


def test_a_forked_worker_sends_its_own_events_and_the_parent_goes_on(tmp_path, spans, server, make_exporter):
    """A pre-fork server's worker inherits the exporter but not its sender thread: it gets one of its own, with
    connections of its own, so its flush delivers; the parent's connections are left working."""
    exporter = make_exporter(base_url=server.url, ingest_mode="single")
    exporter.export(spans(ids("parent", 2)))
    assert exporter.force_flush(5000)  # the parent's sender now holds a connection to the server
    worker_spans = spans(ids("worker", 3))
    report = tmp_path / "worker.json"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        outcome: dict = {}
        try:
            exporter.export(worker_spans)
            outcome["flushed"] = exporter.force_flush(5000)
        except BaseException as exc:
            outcome["error"] = repr(exc)
        finally:
            report.write_text(json.dumps(outcome))
            os._exit(0)
    os.waitpid(pid, 0)
    assert json.loads(report.read_text()) == {"flushed": True}
    assert server.ids() == set(ids("parent", 2)) | set(ids("worker", 3))
    exporter.export(spans(ids("after", 2)))
    assert exporter.force_flush(5000)
    assert server.ids() >= set(ids("after", 2))
    assert sum(server.duplicates.values()) == 0


# --- offline mode and configuration ----------------------------------------------------------


def test_offline_mode_appends_json_lines(tmp_path, spans):
    path = tmp_path / "out" / "events.jsonl"
    for round_ in range(2):
        exporter = PayiSpanExporter(offline_file=str(path))
        assert exporter.export(spans(ids(f"off{round_}", 3))) is SpanExportResult.SUCCESS
        exporter.shutdown()
        assert exporter.spool is None
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["provider_response_id"] for e in lines] == ids("off0", 3) + ids("off1", 3)
    assert lines[0]["user_id"] == "alice" and lines[0]["units"] == {"text": {"input": 10, "output": 5}}


@pytest.mark.parametrize(
    "var, value, message",
    [
        ("PAYI_BASE_URL", "api.pay-i.com", "PAYI_BASE_URL='api.pay-i.com': must be an http:// or https:// URL"),
        ("PAYI_INGEST_MODE", "batch", "PAYI_INGEST_MODE='batch': must be 'single' or 'bulk'"),
        ("PAYI_EXPORT_TIMEOUT", "soon", "PAYI_EXPORT_TIMEOUT='soon': must be a number of seconds"),
        ("PAYI_EXPORT_TIMEOUT", "-1", "PAYI_EXPORT_TIMEOUT='-1'"),
        ("PAYI_EXPORT_BATCH_SIZE", "0", "PAYI_EXPORT_BATCH_SIZE='0': must be an integer >= 1 and <= 1000"),
        ("PAYI_SPOOL_MAX_BYTES", "10MB", "PAYI_SPOOL_MAX_BYTES='10MB': must be an integer"),
        ("PAYI_EXPORT_CONTENT", "maybe", "PAYI_EXPORT_CONTENT='maybe': must be true or false"),
        ("PAYI_SHUTDOWN_TIMEOUT", "nan", "PAYI_SHUTDOWN_TIMEOUT='nan'"),
    ],
)
def test_bad_environment_values_are_reported_naming_the_variable_and_events_stay_spooled(
    monkeypatch, tmp_path, caplog, spans, var, value, message
):
    # The SDK configurator builds the exporter with no arguments while it sets up every exporter:
    # raising there would leave the application with no telemetry at all.
    monkeypatch.setenv("PAYI_SPOOL_DIR", str(tmp_path))
    monkeypatch.setenv(var, value)
    monkeypatch.delenv("PAYI_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="payi_otel.exporters"):
        exporter = PayiSpanExporter()
    try:
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and message in errors[0] and str(tmp_path) in errors[0]
        # Only the settings to fix are reported (no warning about a key for a URL that is not the one set).
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == []
        assert exporter.export(spans(ids("held", 3))) is SpanExportResult.SUCCESS
        assert exporter.spool.pending_batches() == 1  # kept for a start with correct settings
        assert exporter.force_flush(100) is True and exporter.delivered_events == 0
    finally:
        exporter.shutdown()
    assert exporter.spool.pending_batches() == 1


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("base_url", "api.pay-i.com", "base_url='api.pay-i.com': must be an http:// or https:// URL"),
        ("ingest_mode", "batch", "ingest_mode='batch': must be 'single' or 'bulk'"),
        ("batch_size", 0, "batch_size=0: must be an integer >= 1 and <= 1000"),
    ],
)
def test_bad_keyword_values_raise_naming_the_setting(tmp_path, setting, value, message):
    with pytest.raises(ConfigError) as info:
        PayiSpanExporter(spool_dir=tmp_path, **{setting: value})
    assert message in str(info.value)


def test_a_missing_key_is_warned_about_naming_the_url_that_will_see_the_requests(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("PAYI_SPOOL_DIR", str(tmp_path))
    monkeypatch.setenv("PAYI_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("PAYI_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="payi_otel.exporters"):
        exporter = PayiSpanExporter()
    exporter.shutdown()
    assert [r.getMessage() for r in caplog.records] == [
        "Pay-i exporter: PAYI_API_KEY is not set; http://127.0.0.1:9 will see requests without xProxy-api-key"
    ]


def test_environment_configures_and_keywords_override(monkeypatch, tmp_path):
    monkeypatch.setenv("PAYI_BASE_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("PAYI_INGEST_MODE", "BULK")
    monkeypatch.setenv("PAYI_EXPORT_BATCH_SIZE", "7")
    monkeypatch.setenv("PAYI_SPOOL_DIR", str(tmp_path / "env-spool"))
    monkeypatch.setenv("PAYI_EXPORT_CONTENT", "false")
    exporter = PayiSpanExporter()
    try:
        c = exporter.config
        assert (c.base_url, c.ingest_mode, c.batch_size, c.export_content) == ("http://127.0.0.1:9", "bulk", 7, False)
        assert c.spool_dir == tmp_path / "env-spool"
    finally:
        exporter.shutdown()
    exporter = PayiSpanExporter(ingest_mode="single", batch_size=3)
    try:
        assert (exporter.config.ingest_mode, exporter.config.batch_size) == ("single", 3)
    finally:
        exporter.shutdown()


def test_default_spool_dir_is_per_user_and_per_base_url(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("PAYI_SPOOL_DIR", raising=False)
    from payi_otel.exporters import ExporterConfig

    one = ExporterConfig.load(env={"XDG_CACHE_HOME": str(tmp_path)}, base_url="http://127.0.0.1:1")
    two = ExporterConfig.load(env={}, base_url="http://127.0.0.1:2")
    assert one.spool_dir.parent == tmp_path / "payi-otel" / "spool"
    assert one.spool_dir != two.spool_dir


# --- a real application process: kill -9 mid-batch, restart, normal exit -------------------

APP = textwrap.dedent(
    """
    import sys, time
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from payi_otel.exporters import PayiSpanExporter

    first, count, linger = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "linger"
    exporter = PayiSpanExporter()  # configured by the environment, as opentelemetry-instrument does
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=20, max_export_batch_size=25))
    tracer = provider.get_tracer("app")
    slowest = 0.0
    for i in range(first, first + count):
        t0 = time.perf_counter()
        with tracer.start_as_current_span("chat", attributes={
            "gen_ai.operation.name": "chat", "payi.category": "system.openai", "payi.resource": "gpt-4o-mini",
            "payi.provider_response_id": f"app-{i}", "payi.units.text.input": 3, "payi.units.text.output": 1,
        }):
            pass
        slowest = max(slowest, time.perf_counter() - t0)
        if i % 25 == 0:
            time.sleep(0.01)  # let the batch processor export while spans are still made
    start = time.perf_counter()
    provider.force_flush()  # exports every span into the spool (the network is not involved)
    print(f"SPOOLED slowest_span={slowest:.4f} flush={time.perf_counter() - start:.4f}", flush=True)
    if linger:
        time.sleep(60)
    # normal exit: the SDK's atexit hook shuts the exporter down, which delivers what it can
    """
)


def run_app(tmp_path, server_url, spool_dir, first, count, linger):
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = {
        **os.environ,
        "PAYI_BASE_URL": server_url,
        "PAYI_API_KEY": "app-key",
        "PAYI_SPOOL_DIR": str(spool_dir),
        "PAYI_INGEST_MODE": "bulk",
        "PAYI_EXPORT_BATCH_SIZE": "10",
        "PAYI_RETRY_INITIAL_BACKOFF": "0.05",
        "PAYI_RETRY_MAX_BACKOFF": "0.5",
        "PAYI_SHUTDOWN_TIMEOUT": "20",
    }
    return subprocess.Popen(
        [sys.executable, str(script), str(first), str(count), "linger" if linger else "exit"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_app_killed_with_sigkill_mid_batch_loses_nothing_after_restart(tmp_path, server):
    spool_dir = tmp_path / "app-spool"
    server.slow_all = 0.1  # each bulk request of 10 takes 0.1 s: 300 events need ~3 s
    app = run_app(tmp_path, server.url, spool_dir, 0, 300, linger=True)
    line = app.stdout.readline()
    assert line.startswith("SPOOLED"), line + app.stderr.read()
    slowest = float(line.split("slowest_span=")[1].split()[0])
    assert slowest < 0.05  # span creation never waited on the (slow) server
    assert server.wait_for(20)
    time.sleep(0.05)  # a bulk request is in flight now
    app.send_signal(signal.SIGKILL)
    app.wait(5)
    got_before_kill = len(server.ids())
    assert 0 < got_before_kill < 300, got_before_kill

    server.slow_all = 0.0
    again = run_app(tmp_path, server.url, spool_dir, 300, 50, linger=False)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert "SPOOLED" in out
    expected = {f"app-{i}" for i in range(350)}
    assert server.ids() == expected  # every event arrived; re-deliveries are counted apart
    assert sum(server.duplicates.values()) <= 10  # at most the one batch in flight at the kill
    assert not list(spool_dir.glob("batch-*"))


def test_zero_code_setup_with_opentelemetry_instrument(tmp_path, server):
    script = tmp_path / "zero.py"
    script.write_text(
        textwrap.dedent(
            """
            from opentelemetry import trace
            tracer = trace.get_tracer("zero")
            for i in range(5):
                tracer.start_span("chat", attributes={"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.id": f"zero-{i}",
                    "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 4}).end()
            """
        )
    )
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "payi",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "payi_openai",
        "PAYI_BASE_URL": server.url,
        "PAYI_SPOOL_DIR": str(tmp_path / "zero-spool"),
    }
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    done = subprocess.run(
        [str(instrument), sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert server.ids() == {f"zero-{i}" for i in range(5)}
    assert server.events["zero-0"]["units"] == {"text": {"input": 12, "output": 4}}


# --- no event blocks the others --------------------------------------------------------------


def dead_letters(exporter) -> list[dict]:
    path = exporter.spool.dead_letter_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("mode", ["single", "bulk"])
def test_an_event_the_server_keeps_failing_never_holds_the_others_and_is_dead_lettered(
    server, spans, make_exporter, mode
):
    server.poison_ids = {"poison-0"}
    exporter = make_exporter(base_url=server.url, ingest_mode=mode, retry_max_attempts=3)
    exporter.export(spans(["poison-0", *ids("good", 5)]))
    exporter.export(spans(ids("later", 3)))  # a second batch, behind the poisoned one
    assert wait_until(lambda: server.ids() == {*ids("good", 5), *ids("later", 3)}, 10)
    assert wait_until(lambda: len(dead_letters(exporter)) == 1)
    (record,) = dead_letters(exporter)
    assert record["event"]["provider_response_id"] == "poison-0" and record["status"] == 500
    assert "unexpected_error: integer overflow" in record["reason"] and "gave up after 3 attempts" in record["reason"]
    assert exporter.force_flush(5000) and exporter.spool.pending_batches() == 0
    assert exporter.delivered_events == 8 and exporter.rejected_events == 1


def test_server_errors_are_dead_lettered_by_age_too(server, spans, make_exporter):
    server.poison_ids = {"old-0"}
    exporter = make_exporter(base_url=server.url, retry_max_attempts=1000, retry_max_age=0.3)
    exporter.export(spans(["old-0"]))
    assert wait_until(lambda: len(dead_letters(exporter)) == 1, 10)
    assert "gave up after" in dead_letters(exporter)[0]["reason"]


def test_unavailable_server_is_waited_for_never_dead_lettered(server, spans, make_exporter):
    server.fail_next(12, status=503)
    exporter = make_exporter(base_url=server.url, ingest_mode="bulk", retry_max_attempts=2)
    exporter.export(spans(ids("wait", 4)))
    assert wait_until(lambda: server.ids() == set(ids("wait", 4)), 20)
    assert dead_letters(exporter) == []


def test_bulk_over_the_servers_size_limit_is_split(server, spans, make_exporter):
    server.max_bulk_items = 3
    exporter = make_exporter(base_url=server.url, ingest_mode="bulk", batch_size=10)
    exporter.export(spans(ids("split", 10)))
    assert exporter.force_flush(10_000)
    assert server.ids() == set(ids("split", 10)) and dead_letters(exporter) == []
    assert exporter.delivered_events == 10


def test_spool_files_are_private(server, spans, make_exporter, tmp_path):
    server.poison_ids = {"p-0"}
    exporter = make_exporter(base_url=server.url, retry_max_attempts=1)
    exporter.export(spans(["p-0"]))
    spool = exporter.spool.directory
    # The sender writes the dead letter, then removes the poisoned batch: wait for both, so no file of that
    # batch can vanish between the listing below and its stat.
    assert wait_until(lambda: len(dead_letters(exporter)) == 1 and not list(spool.glob("batch-*")))
    server.stop()
    exporter.export(spans(ids("kept", 2)))
    assert os.stat(spool).st_mode & 0o777 == 0o700
    files = list(spool.iterdir())
    assert any(f.name.startswith("batch-") for f in files)
    for f in files:
        assert os.stat(f).st_mode & 0o777 == 0o600, f.name


def test_held_spool_batches_wait_for_their_release_and_count_against_the_bound(tmp_path):
    from payi_otel.exporters.spool import Spool

    spool = Spool(tmp_path, max_bytes=10_000)
    (path, events), *_ = spool.hold([{"id": 1}, {"id": 2}], batch_size=10)[0]
    assert events == [{"id": 1}, {"id": 2}]
    assert list(spool.claim()) == [] and spool.pending_bytes() == path.stat().st_size  # held: no sender takes it
    assert spool.rewrite_held(path, [{"id": 1, "more": True}, {"id": 2}])
    assert spool.release_held(path) and not spool.release_held(path)  # released once
    assert not spool.rewrite_held(path, [{"id": 3}])  # no longer held: nothing changes
    [batch] = list(spool.claim())
    assert batch.events == [{"id": 1, "more": True}, {"id": 2}]
    batch.ack()
    left = spool.hold([{"id": 4}], batch_size=10)[0]
    assert len(left) == 1 and Spool(tmp_path, max_bytes=10_000).release_all_held() == 1  # a writer that stopped
    assert [b.events for b in spool.claim()] == [[{"id": 4}]]
    assert spool.hold([{"x": "y" * 20_000}], batch_size=10) == ([], 1)  # over the bound: dropped
