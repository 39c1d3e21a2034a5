"""The whole pipeline, real pieces only: the openai SDK (HTTP transport replaced by recorded traffic),
our instrumentation and business context, the real PayiSpanExporter, and the local service as an
HTTP server on 127.0.0.1. Assertions are on what a user sees in the service: the requests API,
the store and the ``payi-otel report`` output."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from service_support import read_only_store, running_service, stored_requests

from payi_otel import cli, track, track_context
from payi_otel.exporters import PayiSpanExporter
from payi_otel.instrumentation.openai import OpenAIInstrumentor
from payi_otel.service.server import ServiceThread
from payi_otel.testing.replay import Cassette, Interaction

CASSETTES = Path(__file__).parent / "cassettes"
OTEL = CASSETTES / "open-telemetry__opentelemetry-python-contrib/openai"
TRACELOOP = CASSETTES / "traceloop__openllmetry/openai"

CHAT = OTEL / "test_chat_completion_extra_params.yaml"  # gpt-4o-mini, 12 in / 12 out
STREAM = OTEL / "test_chat_completion_streaming.yaml"  # gpt-4, recorded with include_usage: 12 / 5
TOOLS = OTEL / "test_chat_completion_tool_calls_no_content.yaml"  # gpt-4o-mini, two calls
EMBEDDINGS = OTEL / "test_embeddings_token_metrics.yaml"  # text-embedding-3-small, 8 in; no response id
RESPONSES = OTEL / "test_responses_create_basic[content_mode0].yaml"  # gpt-4o-mini, 22 / 6
REASONING = TRACELOOP / "test_responses_reasoning.yaml"  # gpt-5-nano, 11 in / 327 out (320 reasoning)
RESPONSES_STREAM = TRACELOOP / "test_responses_streaming.yaml"  # gpt-4.1-nano
CACHED = TRACELOOP / "test_openai_prompt_caching.yaml"  # 2nd call: 1149 in, 1024 cached
NOT_FOUND = OTEL / "test_chat_completion_404.yaml"

TOOL_DEFS = Cassette.load(TOOLS).interactions[0].request_body["tools"]
MESSAGES = [{"role": "user", "content": "Say this is a test"}]
FAST = dict(retry_initial_backoff=0.02, retry_max_backoff=0.2, timeout=5.0, shutdown_timeout=5.0)


def recorded(path: Path, index: int = 0) -> Interaction:
    return Cassette.load(path).interactions[index]


def recorded_usage(interaction: Interaction) -> dict[str, Any]:
    """The usage block of a recorded response (the last one reported in a stream)."""
    if isinstance(interaction.request_body, dict) and interaction.request_body.get("stream"):
        found = None
        for event in interaction.sse_events():
            usage = event.get("usage") or (event.get("response") or {}).get("usage")
            found = usage or found
        return found
    return interaction.json()["usage"]


def response_id(interaction: Interaction) -> str:
    if isinstance(interaction.request_body, dict) and interaction.request_body.get("stream"):
        first = interaction.sse_events()[0]
        return first.get("id") or first["response"]["id"]
    return interaction.json()["id"]


def openai_client(source: Path | Interaction, *, is_async: bool = False) -> Any:
    """A real OpenAI client whose HTTP transport replays a cassette file or one recorded interaction."""
    cassette = Cassette([source]) if isinstance(source, Interaction) else Cassette.load(source)
    http = (httpx2.AsyncClient if is_async else httpx2.Client)(transport=cassette.transport("httpx2"))
    cls = openai.AsyncOpenAI if is_async else openai.OpenAI
    client = cls(api_key="test", base_url="https://api.openai.com/v1", http_client=http, max_retries=0)
    client.replay_transport = http._transport  # type: ignore[attr-defined]
    return client


def sent_body(client: Any) -> dict[str, Any]:
    """The JSON body of the last request the SDK sent through the replay transport."""
    return json.loads(client.replay_transport.requests[-1].content)


class Pipeline:
    """Instrumentation -> PayiSpanExporter -> local service, wired as a user would wire them."""

    def __init__(self, service: Any, exporter: PayiSpanExporter, provider: TracerProvider) -> None:
        self.service = service
        self.exporter = exporter
        self.provider = provider

    def flush(self) -> None:
        assert self.exporter.force_flush(15_000), "events were not delivered in time"

    def result(self, category: str, provider_response_id: str, *, status: int = 200) -> dict[str, Any]:
        r = httpx.get(
            f"{self.service.base_url}/api/v1/requests/provider/{category}/{provider_response_id}/result",
            headers={"xProxy-api-key": self.service.api_key},
            timeout=5,
        )
        assert r.status_code == status, r.text
        return r.json().get("xproxy_result", r.json())

    def rows(self) -> list[dict[str, Any]]:
        return stored_requests(self.service.data_dir)

    def report(self, capsys: Any, *by: str) -> dict[str, Any]:
        capsys.readouterr()
        args = ["report", "--data-dir", str(self.service.data_dir), "--format", "json"]
        for dim in by:
            args += ["--by", dim]
        assert cli.main(args) == 0
        return json.loads(capsys.readouterr().out)


def use_case_instance(data_dir: Path, use_case_id: str) -> dict[str, Any]:
    with read_only_store(data_dir) as conn:
        name, version, props = conn.execute(
            "SELECT name, version, properties FROM use_case_instances WHERE use_case_id = ?", (use_case_id,)
        ).fetchone()
    return {"name": name, "version": version, "properties": json.loads(props or "{}")}


@contextmanager
def pipeline(tmp_path: Path, mode: str = "single", **options: Any) -> Iterator[Pipeline]:
    with (
        running_service(tmp_path / "data") as service,
        instrumented_exporter(tmp_path, service.base_url, service.api_key, mode, **options) as wired,
    ):
        yield Pipeline(service, *wired)


@contextmanager
def instrumented_exporter(
    tmp_path: Path, base_url: str, api_key: str, mode: str = "single", also: Any = None, **options: Any
) -> Iterator[tuple[PayiSpanExporter, TracerProvider]]:
    """OpenAI instrumented into a TracerProvider that exports to Pay-i (and to ``also`` when given)."""
    exporter = PayiSpanExporter(
        base_url=base_url, api_key=api_key, ingest_mode=mode, spool_dir=tmp_path / "spool", **FAST
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if also is not None:
        provider.add_span_processor(SimpleSpanProcessor(also))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, skip_dep_check=True, **options)
    try:
        yield exporter, provider
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def text_units(usage: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Pay-i units of a recorded chat/responses usage block (cache and reasoning split out)."""
    tin = usage.get("prompt_tokens", usage.get("input_tokens")) or 0
    tout = usage.get("completion_tokens", usage.get("output_tokens")) or 0
    in_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    cached = in_details.get("cached_tokens") or 0
    reasoning = out_details.get("reasoning_tokens") or 0
    units = {"text": {"input": tin - cached, "output": tout - reasoning}}
    if cached:
        units["text_cache_read"] = {"input": cached, "output": 0}
    if reasoning:
        units["reasoning"] = {"input": 0, "output": reasoning}
    return units


# --- the main scenario: one app, several use cases, both ingest modes --------------------------------

STOP = OTEL / "test_chat_completion_handle_stop_sequences_as_string.yaml"  # gpt-4o-mini, 12 / 12
STREAM_CM = OTEL / "test_chat_completion_with_context_manager_streaming.yaml"  # gpt-4o-mini, include_usage


@track(
    use_case_name="support_bot",
    user_id="alice",
    request_tags=["web"],
    request_properties={"ticket": "T-1"},
    use_case_properties={"channel": "chat"},
)
def answer(calls: dict[str, Interaction]) -> dict[str, Any]:
    """A user's tracked function: three chat calls, then a nested step with embeddings + Responses."""
    out: dict[str, Any] = {}
    out["chat"] = openai_client(calls["chat"]).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client = openai_client(calls["stream"])
    stream = client.chat.completions.create(model=calls["stream"].request_body["model"], messages=MESSAGES, stream=True)
    out["stream"] = list(stream)
    out["stream_options_sent"] = sent_body(client).get("stream_options")
    out["tools"] = openai_client(calls["tools"]).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, tools=TOOL_DEFS
    )
    with track_context(
        use_case_name="summarize",
        user_id="bob",
        account_name="acme",
        request_tags=["batch"],
        request_properties={"stage": "2"},
        use_case_properties={"depth": "short"},
    ):
        out["embed"] = openai_client(calls["embed"]).embeddings.create(model="text-embedding-3-small", input="x")
        model = calls["resp"].request_body["model"]
        out["resp"] = openai_client(calls["resp"]).responses.create(model=model, input="hi")
    return out


def answer_calls() -> list[dict[str, Interaction]]:
    first = dict(chat=recorded(CHAT), stream=recorded(STREAM), tools=recorded(TOOLS, 0), embed=recorded(EMBEDDINGS),
                 resp=recorded(REASONING))  # fmt: skip
    second = dict(chat=recorded(STOP), stream=recorded(STREAM_CM), tools=recorded(TOOLS, 1), embed=recorded(EMBEDDINGS),
                  resp=recorded(RESPONSES))  # fmt: skip
    return [first, second]


@pytest.mark.parametrize("mode", ["single", "bulk"])
def test_tracked_calls_arrive_once_each_with_units_context_and_cost(mode, tmp_path, capsys):
    runs = answer_calls()
    with pipeline(tmp_path, mode) as p:
        started = time.monotonic()
        outputs = [answer(calls) for calls in runs]
        wall_ms = (time.monotonic() - started) * 1000
        p.flush()

        # The caller got the SDK's own objects, untouched; the injected usage chunk stayed hidden.
        first = outputs[0]
        assert isinstance(first["chat"], openai.types.chat.ChatCompletion)
        assert first["chat"].id == runs[0]["chat"].json()["id"]
        assert "".join(c.choices[0].delta.content or "" for c in first["stream"] if c.choices) == '"This is a test."'
        assert all(c.choices for c in first["stream"]), "the usage-only chunk we asked for reached the caller"
        assert first["stream_options_sent"] == {"include_usage": True}
        assert [t.function.name for t in first["tools"].choices[0].message.tool_calls] == ["get_current_weather"] * 2
        assert len(first["embed"].data[0].embedding) > 0
        assert first["resp"].usage.output_tokens_details.reasoning_tokens == 320

        rows = p.rows()
        assert len(rows) == 10, [(r["resource"], r["provider_response_id"]) for r in rows]
        assert len({r["provider_response_id"] for r in rows}) == 10  # each call once
        embeds = [r for r in rows if r["resource"] == "text-embedding-3-small"]
        assert len(embeds) == 2 and all(r["provider_response_id"].startswith("payi_") for r in embeds)

        instance_ids: list[tuple[str, str]] = []
        for run, calls in enumerate(runs):
            results = {
                kind: p.result("system.openai", response_id(calls[kind]))
                for kind in ("chat", "stream", "tools", "resp")
            }
            support = {results[k]["use_case_id"] for k in ("chat", "stream", "tools")}
            assert len(support) == 1 and None not in support, support  # one instance per tracked call
            (support_id,) = support
            summarize_id = results["resp"]["use_case_id"]
            assert summarize_id not in (None, support_id)
            instance_ids.append((support_id, summarize_id))
            for kind in ("chat", "stream", "tools"):
                r = results[kind]
                assert (r["use_case_name"], r["user_id"], r.get("account_name")) == ("support_bot", "alice", None)
                assert r["request_tags"] == ["web"]
            r = results["resp"]
            assert (r["use_case_name"], r["user_id"], r["account_name"]) == ("summarize", "bob", "acme")
            assert sorted(r["request_tags"]) == ["batch", "web"]
            for kind, r in results.items():
                assert r["cost"]["total"]["base"] > 0, (kind, r)
                assert r["resource_id"], (kind, r)
                assert r["duplicate_request"] is False

            stored = {row["provider_response_id"]: row for row in rows}
            for kind in ("chat", "stream", "tools", "resp"):
                row = stored[response_id(calls[kind])]
                assert row["units"] == text_units(recorded_usage(calls[kind])), kind
                assert row["category"] == "system.openai"
                assert row["resource"] == calls[kind].request_body["model"], kind
                assert row["http_status_code"] == 200 and not row["failed"]
                assert 0 <= row["latency_ms"] <= wall_ms
                assert row["properties"]["ticket"] == "T-1"
                assert "system.usage_incomplete" not in row["properties"], (kind, row["properties"])
            assert stored[response_id(calls["resp"])]["properties"]["stage"] == "2"
            assert "stage" not in stored[response_id(calls["chat"])]["properties"]
            stream_row = stored[response_id(calls["stream"])]
            assert stream_row["ttft_ms"] is not None and stream_row["ttft_ms"] <= stream_row["latency_ms"]
            # the tool calls the model asked for (two in the first run, none in the follow-up)
            got = (stored[response_id(calls["tools"])]["provider_data"] or {}).get(
                "provider_response_function_calls", []
            )
            asked = calls["tools"].json()["choices"][0]["message"].get("tool_calls") or []
            assert len(asked) == (2 if run == 0 else 0)
            assert [(c["name"], json.loads(c["arguments"])) for c in got] == [
                (t["function"]["name"], json.loads(t["function"]["arguments"])) for t in asked
            ]

            embed_row = next(r for r in embeds if r["use_case_id"] == summarize_id)
            embed_tokens = recorded_usage(calls["embed"])["prompt_tokens"]
            assert embed_row["units"] == {"text": {"input": embed_tokens, "output": 0}}
            assert (embed_row["user_id"], embed_row["account_name"]) == ("bob", "acme")
            assert embed_row["cost_total"] > 0

            assert use_case_instance(p.service.data_dir, support_id) == {
                "name": "support_bot", "version": 1, "properties": {"channel": "chat"},
            }  # fmt: skip
            assert use_case_instance(p.service.data_dir, summarize_id)["properties"] == {
                "channel": "chat", "depth": "short",
            }  # fmt: skip

        assert len({i for pair in instance_ids for i in pair}) == 4  # a new instance per tracked call

        report = p.report(capsys, "use_case")
        groups = {row["group"]["use_case"]: row for row in report["rows"]}
        assert groups["support_bot"]["requests"] == 6
        assert groups["summarize"]["requests"] == 4
        assert report["total"]["unpriced_requests"] == 0
        assert report["total"]["cost_usd"] == pytest.approx(sum(r["cost_total"] for r in rows))


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, call",
    [
        (NOT_FOUND, lambda c: c.chat.completions.create(model="this-model-does-not-exist", messages=MESSAGES)),
        (
            OTEL / "test_responses_create_api_error[content_mode0].yaml",
            lambda c: c.responses.create(model="this-model-does-not-exist", input="hi"),
        ),
    ],
    ids=["chat-404", "responses-400"],
)
def test_provider_4xx_is_a_failure_with_its_status_and_the_caller_gets_the_original_error(path, call, tmp_path):
    interaction = recorded(path)
    # What the SDK raises with no instrumentation at all:
    with pytest.raises(openai.APIStatusError) as plain:
        call(openai_client(interaction))

    with pipeline(tmp_path) as p:
        with (
            track_context(use_case_name="failing", user_id="carol"),
            pytest.raises(openai.APIStatusError) as instrumented,
        ):
            call(openai_client(interaction))
        p.flush()
        (row,) = p.rows()

    err, expected = instrumented.value, plain.value
    assert type(err) is type(expected)
    assert (err.status_code, err.message, err.body) == (expected.status_code, expected.message, expected.body)
    assert err.status_code == interaction.status

    assert row["http_status_code"] == interaction.status
    assert row["failed"] == 1
    assert row["properties"]["system.failure"]
    assert (row["use_case_name"], row["user_id"]) == ("failing", "carol")
    assert row["category"] == "system.openai"
    assert row["resource"] == "this-model-does-not-exist"
    # the provider's request id when it sent one, else the exporter's stable event id
    assert row["provider_response_id"] == (interaction.header("x-request-id") or row["provider_response_id"])
    assert row["provider_response_id"].startswith(("req_", "payi_"))


# --- an unknown model ----------------------------------------------------------------------------


def test_unknown_model_is_stored_unpriced_and_the_report_says_so(tmp_path, capsys):
    with pipeline(tmp_path) as p:
        with track_context(use_case_name="fine_tuned"):
            # A self-hosted/fine-tuned model name genai-prices has no price for.
            client = openai_client(recorded(CHAT))
            completion = client.chat.completions.create(model="acme-support-ft-v2", messages=MESSAGES)
        with track_context(use_case_name="stock"):
            openai_client(recorded(STOP)).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        p.flush()

        result = p.result("system.openai", completion.id)
        assert result["cost"] is None  # unpriced, never $0
        assert result["resource_id"] is None
        assert any("unpriced" in w for w in result["warnings"])
        (row,) = [r for r in p.rows() if r["resource"] == "acme-support-ft-v2"]
        assert row["cost_total"] is None and row["unpriced_reason"]
        assert row["units"] == text_units(recorded_usage(recorded(CHAT)))  # usage is kept, only the price is unknown

        report = p.report(capsys, "use_case")
        groups = {r["group"]["use_case"]: r for r in report["rows"]}
        assert groups["fine_tuned"]["cost_usd"] is None
        assert groups["fine_tuned"]["unpriced_requests"] == 1
        assert groups["stock"]["cost_usd"] > 0 and groups["stock"]["unpriced_requests"] == 0
        assert report["total"]["unpriced_requests"] == 1
        assert report["total"]["cost_usd"] == pytest.approx(groups["stock"]["cost_usd"])

        capsys.readouterr()
        assert cli.main(["report", "--data-dir", str(p.service.data_dir), "--by", "use_case"]) == 0
        table = capsys.readouterr().out
        (line,) = [ln for ln in table.splitlines() if ln.startswith("fine_tuned")]
        assert "unpriced" in line


# --- delivery across service outages, restarts and re-exports --------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_key(data_dir: Path, capsys: Any) -> str:
    """The default application's key, as a user gets it (the service, once started, created the data)."""
    if not (data_dir / "default-api-key").exists():
        with ServiceThread(data_dir):
            pass
    capsys.readouterr()
    assert cli.main(["apps", "default-key", "--data-dir", str(data_dir)]) == 0
    return capsys.readouterr().out.strip()


def make_calls() -> list[tuple[str, Any]]:
    """Four calls (chat, streamed chat, embeddings, streamed Responses); the provider response ids of the
    three that have one."""
    out = []
    c = openai_client(recorded(CHAT)).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    out.append(c.id)
    s = list(openai_client(recorded(STREAM)).chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True))
    out.append(s[0].id)
    openai_client(recorded(EMBEDDINGS)).embeddings.create(model="text-embedding-3-small", input="x")
    responses = openai_client(recorded(RESPONSES_STREAM)).responses
    with responses.create(model="gpt-4.1-nano", input="hi", stream=True) as rs:
        events = list(rs)
    out.append(events[-1].response.id)
    return out


def test_service_down_spools_then_delivers_once_survives_restart_and_dedupes_reexports(tmp_path, capsys):
    data = tmp_path / "data"
    key = default_key(data, capsys)
    port = free_port()
    memory = InMemorySpanExporter()
    with instrumented_exporter(tmp_path, f"http://127.0.0.1:{port}", key, also=memory) as (exporter, _):
        with track_context(use_case_name="offline_first", user_id="dora"):
            started = time.monotonic()
            ids = make_calls()  # nothing listens on the port: the app must not notice
            app_seconds = time.monotonic() - started
        assert not exporter.force_flush(300), "delivered although no service runs"
        assert exporter.spool.pending_batches() >= 1
        assert exporter.delivered_events == 0 and exporter.dropped_events == 0

        with ServiceThread(data, port=port) as service:  # the service comes up later, same data dir
            assert exporter.force_flush(15_000)
            assert exporter.delivered_events == 4
            assert exporter.spool.pending_batches() == 0
            rows = stored_requests(data)
            assert len(rows) == 4
            assert {r["use_case_name"] for r in rows} == {"offline_first"}
            assert {r["user_id"] for r in rows} == {"dora"}
            before = {r["provider_response_id"]: (r["request_id"], r["units"], r["cost_total"]) for r in rows}
            assert all(cost > 0 for _, _, cost in before.values())
            assert service.base_url.endswith(f":{port}")
    assert app_seconds < 5, f"the app waited {app_seconds:.1f}s on an absent service"

    with running_service(data) as service:  # restarted (another port): the data is still there
        assert service.api_key == key
        for pid in ids:
            r = httpx.get(
                f"{service.base_url}/api/v1/requests/provider/system.openai/{pid}/result",
                headers={"xProxy-api-key": key},
                timeout=5,
            )
            assert r.status_code == 200, r.text
            assert r.json()["xproxy_result"]["request_id"] == before[pid][0]

        # The same spans exported again (say, by a collector retry), in either wire form:
        spans = [s for s in memory.get_finished_spans() if s.instrumentation_scope.name == "payi_otel"]
        assert len(spans) == 4
        for mode in ("single", "bulk"):
            again = PayiSpanExporter(
                base_url=service.base_url, api_key=key, ingest_mode=mode, spool_dir=tmp_path / f"spool-{mode}", **FAST
            )
            try:
                again.export(spans)
                assert again.force_flush(15_000)
                assert again.delivered_events == 4 and again.rejected_events == 0
            finally:
                again.shutdown()
        after = {
            r["provider_response_id"]: (r["request_id"], r["units"], r["cost_total"]) for r in stored_requests(data)
        }
        assert after == before  # recognised as duplicates: nothing stored or counted twice

        capsys.readouterr()
        assert cli.main(["report", "--data-dir", str(data), "--format", "json"]) == 0
        total = json.loads(capsys.readouterr().out)["total"]
        assert total["requests"] == 4
        assert total["cost_usd"] == pytest.approx(sum(c for _, _, c in before.values()))


# --- more seams: async tasks, Azure, price-as and per-call headers, cached tokens ------------------


@track(use_case_name="async_agent")
async def agent_turn(user: str, chat: Interaction, responses: Interaction) -> tuple[str, str]:
    async with track_context(user_id=user):
        stream = await openai_client(chat, is_async=True).chat.completions.create(
            model=chat.request_body["model"], messages=MESSAGES, stream=True
        )
        chunks = [c async for c in stream]
        await asyncio.sleep(0)  # let the other task run in between
        events = [
            e
            async for e in await openai_client(responses, is_async=True).responses.create(
                model=responses.request_body["model"], input="hi", stream=True
            )
        ]
    return chunks[0].id, events[-1].response.id


async def test_concurrent_async_tasks_keep_their_own_context(tmp_path):
    with pipeline(tmp_path) as p:
        a, b = await asyncio.gather(
            agent_turn("ann", recorded(STREAM), recorded(RESPONSES_STREAM, 0)),
            agent_turn("ben", recorded(STREAM_CM), recorded(RESPONSES_STREAM, 1)),
        )
        p.flush()
        results = {pid: p.result("system.openai", pid) for pid in (*a, *b)}
        rows = {r["provider_response_id"]: r for r in p.rows()}
    assert len(rows) == 4
    for user, ids in (("ann", a), ("ben", b)):
        assert {results[i]["user_id"] for i in ids} == {user}
        assert len({results[i]["use_case_id"] for i in ids}) == 1
    assert results[a[0]]["use_case_id"] != results[b[0]]["use_case_id"]
    for _pid, row in rows.items():
        assert row["units"]["text"]["input"] > 0 and row["units"]["text"]["output"] > 0, row
        assert row["cost_total"] > 0
    stream = recorded(RESPONSES_STREAM, 0)
    assert rows[a[1]]["units"] == text_units(recorded_usage(stream))


def test_azure_deployment_is_priced_as_its_mapped_model(tmp_path):
    interaction = recorded(CASSETTES / "traceloop__openllmetry/azure/test_chat.yaml", 1)
    parts = interaction.uri.split("/openai/")[0]
    http = httpx2.Client(transport=Cassette([interaction]).transport("httpx2"))
    client = openai.AzureOpenAI(
        api_key="test", api_version="2024-02-01", azure_endpoint=parts, azure_deployment="openllmetry-testing",
        http_client=http, max_retries=0,
    )  # fmt: skip
    with pipeline(tmp_path, azure_deployments={"openllmetry-testing": "gpt-4.1-mini"}) as p:
        completion = client.chat.completions.create(model="openllmetry-testing", messages=MESSAGES)
        p.flush()
        result = p.result("system.azureopenai", completion.id)
        (row,) = p.rows()
    assert row["category"] == "system.azureopenai"
    assert row["resource"] == "gpt-4.1-mini"
    assert row["units"] == text_units(recorded_usage(interaction))
    assert result["cost"]["total"]["base"] > 0


def test_price_as_and_per_call_headers_reach_the_service(tmp_path):
    with pipeline(tmp_path) as p:
        with track_context(use_case_name="priced_as", user_id="outer", price_as_resource="gpt-4o"):
            completion = openai_client(recorded(CHAT)).chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                extra_headers={"xProxy-User-ID": "per_call", "xProxy-Request-Tags": "urgent"},
            )
        plain = openai_client(recorded(STOP)).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        p.flush()
        priced_as = p.result("system.openai", completion.id)
        rows = {r["provider_response_id"]: r for r in p.rows()}
    row = rows[completion.id]
    assert row["resource"] == "gpt-4o"
    assert row["properties"]["system.original_resource"] == "gpt-4o-mini"
    assert priced_as["user_id"] == "per_call"
    assert priced_as["request_tags"] == ["urgent"]
    # the same usage priced as gpt-4o costs more than as gpt-4o-mini
    assert row["units"] == rows[plain.id]["units"]
    assert row["cost_total"] > rows[plain.id]["cost_total"] > 0


def test_cached_prompt_tokens_are_a_separate_cheaper_unit(tmp_path):
    cached, uncached = recorded(CACHED, 1), recorded(CACHED, 0)
    assert recorded_usage(cached)["prompt_tokens_details"]["cached_tokens"] == 1024
    with pipeline(tmp_path) as p:
        for interaction in (uncached, cached):
            openai_client(interaction).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        p.flush()
        rows = {r["provider_response_id"]: r for r in p.rows()}
    row_cached, row_uncached = rows[response_id(cached)], rows[response_id(uncached)]
    assert row_cached["units"] == text_units(recorded_usage(cached))
    assert row_cached["units"]["text_cache_read"] == {"input": 1024, "output": 0}
    assert row_cached["cost_input"] < row_uncached["cost_input"]  # same prompt size, most of it cached


def test_stream_without_usage_is_stored_as_incomplete_not_as_free(tmp_path, capsys):
    interaction = recorded(OTEL / "test_chat_completion_streaming_not_complete.yaml")
    with pipeline(tmp_path) as p:
        with track_context(use_case_name="no_usage"):
            chunks = list(
                openai_client(interaction).chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True)
            )
        p.flush()
        result = p.result("system.openai", chunks[0].id)
        (row,) = p.rows()
        report = p.report(capsys, "use_case")
    assert row["properties"]["system.usage_incomplete"] == "true"
    assert row["properties"]["system.usage_incomplete.reason"]
    assert row["cost_total"] is None and result["cost"] is None  # unknown usage is not $0
    assert report["total"]["unpriced_requests"] == 1
    assert report["total"]["cost_usd"] is None
    assert any("usage not reported" in w for w in result["warnings"])
    assert row["http_status_code"] == 200 and not row["failed"]


def test_a_stream_the_caller_stops_early_arrives_once_and_unpriced(tmp_path):
    with pipeline(tmp_path) as p:
        stream = openai_client(recorded(STREAM)).chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True)
        first = next(iter(stream))
        stream.close()
        p.flush()
        (row,) = p.rows()
    assert row["provider_response_id"] == first.id
    assert row["properties"]["system.usage_incomplete"] == "true"
    assert row["cost_total"] is None


@pytest.mark.parametrize("export_content", [True, False])
def test_captured_message_content_is_stored_only_when_exported(export_content, tmp_path):
    with running_service(tmp_path / "data") as service:
        exporter = PayiSpanExporter(
            base_url=service.base_url, api_key=service.api_key, spool_dir=tmp_path / "spool",
            export_content=export_content, **FAST,
        )  # fmt: skip
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        instrumentor = OpenAIInstrumentor()
        instrumentor.instrument(tracer_provider=provider, skip_dep_check=True, capture_content=True)
        try:
            raw = openai_client(recorded(CHAT)).chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MESSAGES
            )
            completion = raw.parse()
            assert exporter.force_flush(15_000)
        finally:
            instrumentor.uninstrument()
            provider.shutdown()
        (row,) = stored_requests(service.data_dir)
    assert row["provider_response_id"] == completion.id
    assert row["units"] == text_units(recorded_usage(recorded(CHAT)))
    data = row["provider_data"] or {}
    if export_content:
        assert "Say this is a test" in data["provider_request_json"]
        assert completion.choices[0].message.content in json.dumps(data["provider_response_json"])
    else:
        assert "provider_request_json" not in data and "provider_response_json" not in data
