"""A user's app for the cost-record tests, run in fresh interpreters (also by the peer tests).

    python tests/cost_record_app.py N            # in code: payi_otel.instrument() first
    opentelemetry-instrument python tests/cost_record_app.py N     # with PAYI_APP_ZERO_CODE=1

Makes N rounds of three real openai calls (chat, streamed chat, embeddings) inside
``track_context(use_case_name="billing", user_id="ursula")``. Only the SDK's HTTP transport is
replaced: it answers with the recorded bodies, each chat answer under a fresh response id (as the
provider gives), so every call is a distinct cost record. With ``PAYI_APP_KEEP_STREAM=1`` one more
streamed chat is read for one chunk and kept, unfinished, in a module global until the process exits.
Then it prints ``RETURNED <n calls>`` and, with ``PAYI_APP_WAIT=1``, sleeps until it is killed.
``PAYI_APP_PEERS`` (comma list: ``openai_v2``, ``openllmetry``) instruments those peer instrumentations in
code, before (``PAYI_APP_PEERS_FIRST=1``) or after ours.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

import openai
import openai._base_client

CASSETTES = Path(__file__).parent / "cassettes" / "open-telemetry__opentelemetry-python-contrib" / "openai"
CHAT = CASSETTES / "test_chat_completion_extra_params.yaml"
STREAM = CASSETTES / "test_chat_completion_streaming.yaml"
EMBEDDINGS = CASSETTES / "test_embeddings_token_metrics.yaml"
MESSAGES = [{"role": "user", "content": "Say this is a test"}]
HTTP = importlib.import_module("httpx2" if hasattr(openai._base_client, "httpx2") else "httpx")


def _recorded(path: Path):  # type: ignore[no-untyped-def]
    from payi_otel.testing.replay import Cassette

    return Cassette.load(path).interactions[0]


def client(path: Path) -> openai.OpenAI:
    """A real OpenAI client answered from the recording at ``path``, with a fresh id per answer."""
    recorded = _recorded(path)
    body = recorded.body
    original = recorded.json()["id"] if path != STREAM else recorded.sse_events()[0]["id"]
    headers = {"content-type": recorded.header("content-type") or "application/json"}
    counter = iter(range(1_000_000))

    def answer(request):  # type: ignore[no-untyped-def]
        fresh = body.replace(original.encode(), f"{original}-{os.getpid()}-{next(counter)}".encode())
        return HTTP.Response(recorded.status, headers=headers, content=fresh)

    transport = HTTP.MockTransport(answer)
    return openai.OpenAI(api_key="test", base_url="https://api.openai.com/v1",
                         http_client=HTTP.Client(transport=transport), max_retries=0)  # fmt: skip


kept: object = None  # PAYI_APP_KEEP_STREAM: a stream the program holds, unfinished, until it exits


def instrument_peers() -> None:
    for name in filter(None, os.environ.get("PAYI_APP_PEERS", "").split(",")):
        if name == "openai_v2":
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
        elif name == "openllmetry":
            from opentelemetry.instrumentation.openai import OpenAIInstrumentor  # type: ignore[no-redef]
        else:
            raise SystemExit(f"PAYI_APP_PEERS: unknown peer {name!r}")
        OpenAIInstrumentor().instrument()


def main(rounds: int) -> None:
    if os.environ.get("PAYI_APP_ZERO_CODE") != "1":
        if os.environ.get("PAYI_APP_PEERS_FIRST") == "1":
            instrument_peers()
            import payi_otel

            payi_otel.instrument()
        else:
            import payi_otel

            payi_otel.instrument()
            instrument_peers()
    from payi_otel import track_context

    chat, stream, embeddings = client(CHAT), client(STREAM), _embeddings_client()
    with track_context(use_case_name="billing", user_id="ursula"):
        for _ in range(rounds):
            chat.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            for _chunk in stream.chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True):
                pass
            embeddings.embeddings.create(model="text-embedding-3-small", input="x")
        calls = 3 * rounds
        if os.environ.get("PAYI_APP_KEEP_STREAM") == "1":
            global kept
            kept = stream.chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True)
            next(iter(kept))
            calls += 1
    print("RETURNED", calls, flush=True)
    if os.environ.get("PAYI_APP_WAIT") == "1":
        time.sleep(600)


def _embeddings_client() -> openai.OpenAI:
    recorded = _recorded(EMBEDDINGS)
    transport = HTTP.MockTransport(
        lambda request: HTTP.Response(200, content=recorded.body, headers={"content-type": "application/json"})
    )
    return openai.OpenAI(api_key="test", base_url="https://api.openai.com/v1",
                         http_client=HTTP.Client(transport=transport), max_retries=0)  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
