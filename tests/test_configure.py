"""instrument(): global defaults, idempotence, uninstrument, instrumentor discovery, exporter setup."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import payi_otel
from payi_otel import configure, get_context, instrument, propagation, track_context
from payi_otel.context import PROCESS_USE_CASE_ID, current_business_context


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    # Keep any Pay-i exporter created here off the network and out of the home directory.
    monkeypatch.setenv("PAYI_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("PAYI_OFFLINE_FILE", str(tmp_path / "events.jsonl"))
    monkeypatch.setenv("PAYI_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.delenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    yield
    if configure._HANDLE is not None:
        configure._HANDLE.uninstrument()
    propagation.install()  # leave threads propagating for other tests, as entering a context would


def sdk_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def processors(provider: TracerProvider) -> tuple:
    return provider._active_span_processor._span_processors


def test_alias_and_exports():
    assert payi_otel.payi_instrument is instrument


def test_global_defaults_from_instrument():
    provider, _ = sdk_provider()
    handle = instrument(tracer_provider=provider, exporter=False, limit_ids=["org"], user_id="svc", instruments=set())
    assert get_context() == {
        "use_case_name": "test_configure",
        "use_case_id": PROCESS_USE_CASE_ID,
        "user_id": "svc",
        "limit_ids": ["org"],
    }
    assert handle.defaults == current_business_context()
    with track_context(use_case_name="inner", limit_ids=["daily"]):
        ctx = get_context()
        assert ctx["use_case_name"] == "inner" and ctx["limit_ids"] == ["org", "daily"] and ctx["user_id"] == "svc"


def test_idempotent_and_warns_once_on_different_arguments(caplog):
    provider, _ = sdk_provider()
    first = instrument(tracer_provider=provider, exporter=False, instruments=set(), use_case_name="app")
    caplog.set_level(logging.DEBUG, logger="payi_otel.configure")
    assert instrument(tracer_provider=provider, exporter=False, instruments=set(), use_case_name="app") is first
    assert "already called" in caplog.text
    caplog.clear()
    assert instrument(use_case_name="other") is first
    assert instrument(use_case_name="third") is first
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "first configuration stays" in warnings[0].getMessage()
    assert get_context()["use_case_name"] == "app"


def test_uninstrument_undoes_and_allows_instrument_again():
    provider, _ = sdk_provider()
    handle = instrument(tracer_provider=provider, exporter=True, instruments=set(), user_id="svc")
    assert propagation.INSTALLED
    assert handle.span_processor is not None and handle.span_processor in processors(provider)
    assert isinstance(handle.span_processor, BatchSpanProcessor)
    assert type(handle.span_processor.span_exporter).__name__ == "PayiSpanExporter"

    handle.uninstrument()
    assert not handle.active
    assert current_business_context() is None
    assert not propagation.INSTALLED
    assert handle.span_processor is None and len(processors(provider)) == 1  # only the in-memory one
    with ThreadPoolExecutor(max_workers=1) as pool, track_context(user_id="x"):
        propagation.uninstall()  # entering re-enables propagation lazily; check the raw state
        assert pool.submit(get_context).result() == {}
    handle.uninstrument()  # second call is a no-op

    again = instrument(tracer_provider=provider, exporter=False, instruments=set(), user_id="svc2")
    assert again is not handle and get_context()["user_id"] == "svc2" and propagation.INSTALLED


def test_exporter_none_leaves_a_configured_provider_alone():
    provider, _ = sdk_provider()
    handle = instrument(tracer_provider=provider, instruments=set())
    assert handle.span_processor is None and len(processors(provider)) == 1


def test_sdk_disabled_skips_the_exporter(monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider, _ = sdk_provider()
    handle = instrument(tracer_provider=provider, exporter=True, instruments=set())
    assert handle.span_processor is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"instruments": "payi_openai"}, TypeError, "instruments: must be None or a set"),
        ({"instruments": {"nope"}}, ValueError, "instruments: unknown instrumentor(s) nope"),
        ({"instruments": {1}}, TypeError, "instruments: every entry must be a string"),
        ({"exporter": "yes"}, TypeError, "exporter: must be None, True or False"),
        ({"config": [("a", 1)]}, TypeError, "config: must be a dict"),
        ({"config": {"not valid": 1}}, TypeError, "config: keys must be keyword-argument names"),
        ({"use_case_name": "bad name"}, ValueError, "use_case_name:"),
        ({"limit_ids": "org"}, TypeError, "limit_ids:"),
        ({"colour": "blue"}, TypeError, "colour: unknown business-context keyword"),
    ],
)
def test_bad_arguments_raise_before_changing_anything(kwargs, error, message):
    propagation.uninstall()
    with pytest.raises(error) as info:
        instrument(**kwargs)
    assert str(info.value).startswith(message)
    assert configure._HANDLE is None and current_business_context() is None and not propagation.INSTALLED


# --- instrumentor discovery -----------------------------------------------------------------
def test_discovers_only_this_distributions_instrumentors():
    found = configure.available_instrumentors()
    assert "payi_openai" in found  # declared in pyproject.toml
    assert all(ep.dist.name == "payi-otel" for ep in found.values())


def test_disabled_by_environment(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "other, payi_openai")
    caplog.set_level(logging.DEBUG, logger="payi_otel.configure")
    handle = instrument(exporter=False)
    assert "payi_openai" not in handle.instrumentors
    assert "disabled by OTEL_PYTHON_DISABLED_INSTRUMENTATIONS" in caplog.text


def test_openai_instrumentor_is_instrumented_and_uninstrumented(caplog):
    if importlib.util.find_spec("payi_otel.instrumentation.openai") is None:
        handle = instrument(exporter=False, instruments={"payi_openai"})
        assert handle.instrumentors == {}
        assert "could not load instrumentor payi_openai" in caplog.text
        pytest.skip("the OpenAI instrumentor is not in this tree yet; checked that its absence is only logged")
    provider, _ = sdk_provider()
    handle = instrument(tracer_provider=provider, exporter=False, instruments={"payi_openai"})
    instrumentor = handle.instrumentors["payi_openai"]
    assert instrumentor.is_instrumented_by_opentelemetry
    handle.uninstrument()
    assert not instrumentor.is_instrumented_by_opentelemetry


def test_instruments_empty_set_loads_nothing():
    handle = instrument(exporter=False, instruments=set())
    assert handle.instrumentors == {}


# --- global provider (fresh interpreter: the global TracerProvider can be set only once) -----
def run_python(code: str, tmp_path, **env: str) -> dict:
    environ = {
        **os.environ,
        "PAYI_BASE_URL": "http://127.0.0.1:9",
        "PAYI_OFFLINE_FILE": str(tmp_path / "events.jsonl"),
        "PAYI_SPOOL_DIR": str(tmp_path / "spool"),
        **env,
    }
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=environ, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_exporter_none_creates_and_registers_an_sdk_provider(tmp_path):
    result = run_python(
        """
        import json
        from opentelemetry import trace
        import payi_otel
        h = payi_otel.instrument(instruments=set())
        tp = trace.get_tracer_provider()
        procs = tp._active_span_processor._span_processors
        first = {"type": type(tp).__module__ + "." + type(tp).__name__,
                 "service": tp.resource.attributes.get("service.name"),
                 "team": tp.resource.attributes.get("team"),
                 "exporter": type(h.span_processor.span_exporter).__name__,
                 "processors": len(procs)}
        h.uninstrument()
        after_uninstrument = len(tp._active_span_processor._span_processors)
        h2 = payi_otel.instrument(instruments=set())
        print(json.dumps({**first, "after_uninstrument": after_uninstrument,
                          "same_provider": trace.get_tracer_provider() is tp,
                          "reinstrumented_processors": len(tp._active_span_processor._span_processors),
                          "exporting_again": h2.span_processor is not None}))
        """,
        tmp_path,
        OTEL_SERVICE_NAME="checkout",
        OTEL_RESOURCE_ATTRIBUTES="team=payments",
    )
    assert result == {
        "type": "opentelemetry.sdk.trace.TracerProvider",
        "service": "checkout",
        "team": "payments",
        "exporter": "PayiSpanExporter",
        "processors": 2,  # the Pay-i exporter's and the business-context processor
        "after_uninstrument": 0,
        "same_provider": True,
        "reinstrumented_processors": 2,
        "exporting_again": True,
    }


def test_existing_global_sdk_provider_gets_the_exporter_only_when_asked(tmp_path):
    result = run_python(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        import payi_otel
        tp = TracerProvider()
        trace.set_tracer_provider(tp)
        h = payi_otel.instrument(instruments=set())
        untouched = len(tp._active_span_processor._span_processors)
        h.uninstrument()
        h = payi_otel.instrument(instruments=set(), exporter=True)
        print(json.dumps({"untouched": untouched, "added": len(tp._active_span_processor._span_processors),
                          "same": trace.get_tracer_provider() is tp}))
        """,
        tmp_path,
    )
    assert result == {"untouched": 0, "added": 2, "same": True}  # the exporter and the business-context processor


def test_payi_client_gives_the_exporter_its_base_url_key_and_default_headers(tmp_path, monkeypatch):
    from payi import AsyncPayi, Payi
    from service_support import running_service

    from payi_otel.exporters.sender import Sender

    monkeypatch.delenv("PAYI_OFFLINE_FILE")
    with running_service(tmp_path / "svc") as svc:
        client = Payi(api_key=svc.api_key, base_url=svc.base_url + "/", default_headers={"X-Team": "red"})
        provider, _ = sdk_provider()
        handle = instrument(
            tracer_provider=provider,
            exporter=True,
            instruments=set(),
            payi=[client, AsyncPayi(api_key=svc.api_key, base_url=svc.base_url)],
        )
        config = handle.span_processor.span_exporter.config
        assert (config.base_url, config.api_key) == (svc.base_url, svc.api_key)  # not PAYI_BASE_URL's
        assert dict(config.extra_headers) == {"X-Team": "red"}
        # what the exporter sends with these settings reaches the service and is stored
        sender = Sender(config.base_url, config.api_key, "single", 5, config.extra_headers)
        try:
            assert sender._client.headers["X-Team"] == "red"
            event = {
                "category": "system.openai",
                "resource": "gpt-4o",
                "provider_response_id": "chatcmpl-1",
                "units": {"text": {"input": 3, "output": 1}},
            }
            assert sender.send([event]).delivered == 1
        finally:
            sender.close()
    with pytest.raises(TypeError, match=r"payi: expected a payi\.Payi"):
        configure.payi_client_settings("http://127.0.0.1:3011")
