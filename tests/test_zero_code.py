"""The two ways a user turns payi-otel on, each in a fresh interpreter, against the real local service:

* zero code: ``OTEL_TRACES_EXPORTER=payi opentelemetry-instrument python app.py``, where the app only
  uses openai and ``payi_otel.track``;
* in code: ``payi_otel.instrument()`` with ``PAYI_BASE_URL`` / ``PAYI_API_KEY`` in the environment.

The openai SDK in the app is real; only its HTTP transport replays recorded traffic.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from service_support import running_service, stored_requests

CASSETTES = Path(__file__).parent / "cassettes"
OTEL = CASSETTES / "open-telemetry__opentelemetry-python-contrib/openai"
CHAT = OTEL / "test_chat_completion_extra_params.yaml"  # gpt-4o-mini, 12 in / 12 out
STREAM = OTEL / "test_chat_completion_streaming.yaml"  # gpt-4, 12 / 5 (usage only with include_usage)
EMBEDDINGS = OTEL / "test_embeddings_token_metrics.yaml"  # text-embedding-3-small, 8 in

# The app a user writes: openai with a replay transport, and payi_otel.track. Nothing else.
APP_PRELUDE = f"""
import httpx2, openai
from payi_otel.testing.replay import Cassette

def client(path):
    transport = Cassette.load(path).transport("httpx2")
    return openai.OpenAI(api_key="test", base_url="https://api.openai.com/v1",
                         http_client=httpx2.Client(transport=transport), max_retries=0)

MESSAGES = [{{"role": "user", "content": "Say this is a test"}}]
CHAT, STREAM, EMBEDDINGS = {str(CHAT)!r}, {str(STREAM)!r}, {str(EMBEDDINGS)!r}
"""

TRACKED_APP = """
from payi_otel import track

@track(use_case_name="zero_code", user_id="zed", request_properties={"source": "cli"})
def main():
    chat = client(CHAT).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    chunks = list(client(STREAM).chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True))
    client(EMBEDDINGS).embeddings.create(model="text-embedding-3-small", input="x")
    print("IDS", chat.id, chunks[0].id, flush=True)

main()
"""


def run_app(code: str, tmp_path: Path, env: dict[str, str], *, zero_code: bool) -> subprocess.CompletedProcess:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(APP_PRELUDE) + textwrap.dedent(code))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYI_"))}
    environ.update(
        PAYI_SPOOL_DIR=str(tmp_path / "spool"),
        PAYI_RETRY_INITIAL_BACKOFF="0.02",
        PAYI_RETRY_MAX_BACKOFF="0.2",
        PAYI_SHUTDOWN_TIMEOUT="10",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        **env,
    )
    bindir = Path(sys.executable).parent
    argv = [sys.executable, str(script)]
    if zero_code:
        argv.insert(0, str(bindir / "opentelemetry-instrument"))
    out = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return out


def wait_for_rows(data_dir: Path, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = stored_requests(data_dir)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def service_env(service: Any) -> dict[str, str]:
    return {"PAYI_BASE_URL": service.base_url, "PAYI_API_KEY": service.api_key}


def test_zero_code_opentelemetry_instrument_delivers_tracked_calls(tmp_path):
    with running_service(tmp_path / "data") as service:
        out = run_app(TRACKED_APP, tmp_path, {"OTEL_TRACES_EXPORTER": "payi", **service_env(service)}, zero_code=True)
        chat_id, stream_id = out.stdout.split("IDS ", 1)[1].split()
        rows = wait_for_rows(service.data_dir, 3)

    assert len(rows) == 3, out.stderr
    by_resource = {r["resource"]: r for r in rows}
    assert by_resource["gpt-4o-mini"]["provider_response_id"] == chat_id
    assert by_resource["gpt-4o-mini"]["units"] == {"text": {"input": 12, "output": 12}}
    assert by_resource["gpt-4"]["provider_response_id"] == stream_id
    assert by_resource["gpt-4"]["units"] == {"text": {"input": 12, "output": 5}}  # include_usage was injected
    assert by_resource["text-embedding-3-small"]["units"] == {"text": {"input": 8, "output": 0}}
    assert {r["use_case_name"] for r in rows} == {"zero_code"}
    assert len({r["use_case_id"] for r in rows}) == 1  # one tracked call, one instance
    assert {r["user_id"] for r in rows} == {"zed"}
    assert all(r["properties"].get("source") == "cli" for r in rows)
    assert all(r["cost_total"] and r["cost_total"] > 0 for r in rows)
    assert all(r["category"] == "system.openai" and r["http_status_code"] == 200 for r in rows)


def test_zero_code_with_the_instrumentor_disabled_sends_nothing(tmp_path):
    with running_service(tmp_path / "data") as service:
        env = {"OTEL_TRACES_EXPORTER": "payi", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "payi_openai"}
        out = run_app(TRACKED_APP, tmp_path, {**env, **service_env(service)}, zero_code=True)
        assert "IDS chatcmpl-" in out.stdout  # the app ran its calls
        # The process has exited, so its exporter has shut down: anything it had would be delivered.
        assert stored_requests(service.data_dir) == []
    assert not any(p.is_file() and p.stat().st_size for p in (tmp_path / "spool").rglob("*"))


INSTRUMENT_APP = """
import payi_otel
from payi_otel import track_context

payi_otel.instrument(use_case_name="in_code_app", account_name="acme")

chat = client(CHAT).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
with track_context(use_case_name="nightly_batch", user_id="ivy"):
    client(EMBEDDINGS).embeddings.create(model="text-embedding-3-small", input="x")
print("ID", chat.id, flush=True)
"""


@pytest.mark.parametrize("mode", ["single", "bulk"])
def test_instrument_in_code_delivers_with_global_defaults(mode, tmp_path):
    with running_service(tmp_path / "data") as service:
        env = {**service_env(service), "PAYI_INGEST_MODE": mode}
        out = run_app(INSTRUMENT_APP, tmp_path, env, zero_code=False)
        chat_id = out.stdout.split("ID ", 1)[1].strip()
        rows = wait_for_rows(service.data_dir, 2)

    assert len(rows) == 2, out.stderr
    chat, embed = sorted(rows, key=lambda r: r["resource"])
    assert chat["provider_response_id"] == chat_id
    assert (chat["use_case_name"], chat["account_name"], chat["user_id"]) == ("in_code_app", "acme", None)
    assert chat["units"] == {"text": {"input": 12, "output": 12}}
    assert (embed["use_case_name"], embed["account_name"], embed["user_id"]) == ("nightly_batch", "acme", "ivy")
    assert embed["use_case_id"] != chat["use_case_id"]
    assert all(r["cost_total"] > 0 for r in rows)


def test_instrument_without_a_use_case_names_it_after_the_module(tmp_path):
    code = """
    import payi_otel
    payi_otel.instrument()
    client(CHAT).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client(EMBEDDINGS).embeddings.create(model="text-embedding-3-small", input="x")
    """
    with running_service(tmp_path / "data") as service:
        run_app(code, tmp_path, service_env(service), zero_code=False)
        rows = wait_for_rows(service.data_dir, 2)
    assert len(rows) == 2
    assert {r["use_case_name"] for r in rows} == {"app"}  # the script is app.py
    assert len({r["use_case_id"] for r in rows}) == 1  # one instance per process
