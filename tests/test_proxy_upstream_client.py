"""The proxy's client to the upstreams, as the real service meets real local servers: connections kept and
reused, only the caller's headers forwarded, broken or unreachable upstreams answered 502 and stored with
their reservations released, a silent upstream timed out."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from service_support import running_service, stored_requests
from test_proxy import CONTRIB, TRACELOOP, create_limit, openai_client, proxied, recorded

from payi_otel.service.proxy.client import UPSTREAM_ERRORS, UpstreamClient
from payi_otel.service.proxy.upstreams import Upstreams
from payi_otel.service.server import ServiceThread

CHAT = TRACELOOP / "openai/test_chat.yaml"
STREAM = CONTRIB / "openai/test_chat_completion_streaming.yaml"


@contextmanager
def raw_upstream(answer: bytes | None) -> Iterator[str]:
    """A server on 127.0.0.1 that reads each request, writes ``answer`` and closes the connection (a broken
    upstream); ``None``: it never answers (until the server stops). Yields its base URL."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
                while length and len(body) < int(length.group(1)):
                    body += conn.recv(65536)
                if answer is None:
                    stop.wait()
                else:
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


@contextmanager
def service_to(tmp_path: Path, upstream_url: str) -> Iterator[ServiceThread]:
    with running_service(tmp_path / "service", upstreams=Upstreams({"PAYI_OTEL_UPSTREAM_OPENAI": upstream_url})) as svc:
        yield svc


def reserved(svc: ServiceThread, limit: str) -> float | None:
    store = svc.app.state.store
    return store.reserved_amount(store.authenticate(svc.api_key).id, limit)  # type: ignore[no-any-return]


def test_calls_one_after_another_share_one_upstream_connection(tmp_path: Path) -> None:
    chat, stream = recorded(CHAT), recorded(STREAM)
    with proxied(tmp_path) as (svc, upstream):
        for interaction in (chat, stream, chat):
            upstream.answer(interaction)
        client = openai_client(svc)
        client.chat.completions.create(**chat.request_body)
        assert len(list(client.chat.completions.create(**stream.request_body))) == len(stream.sse_events())
        client.chat.completions.create(**chat.request_body)
    assert len(upstream.requests) == 3
    assert len({seen.client for seen in upstream.requests}) == 1  # a whole answer and a whole stream freed it


def test_the_provider_gets_the_callers_headers_and_nothing_the_client_would_add(tmp_path: Path) -> None:
    interaction = recorded(CHAT)
    with proxied(tmp_path) as (svc, upstream):
        upstream.answer(interaction)
        body = json.dumps(interaction.request_body).encode()
        sent = httpx.post(
            f"{svc.base_url}/api/v1/proxy/openai/v1/chat/completions?api-version=1",
            content=body,
            headers={"xProxy-api-key": svc.api_key, "authorization": "Bearer sk-provider", "x-custom": "kept"},
        )
        assert sent.status_code == 200, sent.text
    [seen] = upstream.requests
    caller = {k.lower(): v for k, v in sent.request.headers.items()}
    expected = {k: v for k, v in caller.items() if not k.startswith("xproxy-") and k not in ("connection", "host")}
    expected["accept-encoding"] = "identity"  # the proxy reads what it forwards
    expected["host"] = upstream.base_url.split("//")[1]
    assert seen.headers == expected
    assert (seen.query, seen.body) == ("api-version=1", body)


@pytest.mark.parametrize(
    "answer",
    [
        b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"id": ',  # cut short
        b"not an HTTP answer\r\n\r\n",
    ],
)
def test_an_upstream_that_breaks_its_answer_gets_a_502_stored_and_the_reservation_released(
    tmp_path: Path, answer: bytes
) -> None:
    interaction = recorded(CHAT)
    with raw_upstream(answer) as url, service_to(tmp_path, url) as svc:
        limit = create_limit(svc, "budget", 10.0, "block")
        client = openai_client(svc, **{"xProxy-Limit-IDs": limit})
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(**{**interaction.request_body, "model": "gpt-4o-mini"})
        assert failed.value.status_code == 502
        assert failed.value.response.json()["xproxy_error"]["code"] == "provider_error"
        assert reserved(svc, limit) == 0.0
    [row] = stored_requests(tmp_path / "service")
    assert row["http_status_code"] == 502 and row["failed"] == 1


def test_a_stream_the_upstream_breaks_reaches_the_caller_so_far_and_is_stored_failed(tmp_path: Path) -> None:
    first = recorded(STREAM).sse_events()[0]
    event = b"data: " + json.dumps(first).encode() + b"\n\n"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    answer = head + b"%x\r\n" % len(event) + event + b"\r\n"  # then the connection closes: no last chunk
    with raw_upstream(answer) as url, service_to(tmp_path, url) as svc:
        limit = create_limit(svc, "budget", 10.0, "block")
        headers = {"xProxy-api-key": svc.api_key, "xProxy-Limit-IDs": limit}
        received = b""
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream(
                "POST",
                f"{svc.base_url}/api/v1/proxy/openai/v1/chat/completions",
                headers=headers,
                json={**recorded(STREAM).request_body, "model": "gpt-4o-mini"},
            ) as response,
        ):
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received += chunk
        assert received == event
        deadline = time.monotonic() + 10  # stored after the caller saw the stream break
        while not stored_requests(tmp_path / "service") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert reserved(svc, limit) == 0.0
    [row] = stored_requests(tmp_path / "service")
    assert row["http_status_code"] == 502 and row["failed"] == 1


def test_an_unreachable_upstream_gets_a_502_and_the_next_call_still_works(tmp_path: Path) -> None:
    interaction = recorded(CHAT)
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]  # nobody listens there once the probe is closed
    with service_to(tmp_path, f"http://127.0.0.1:{closed_port}") as svc:
        with pytest.raises(openai.APIStatusError) as failed:
            openai_client(svc).chat.completions.create(**interaction.request_body)
        assert failed.value.status_code == 502
        assert "could not be reached" in failed.value.response.json()["xproxy_error"]["message"]
    [row] = stored_requests(tmp_path / "service")
    assert row["http_status_code"] == 502


async def test_a_silent_upstream_is_given_up_after_the_read_timeout() -> None:
    import aiohttp

    client = UpstreamClient(aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=0.3))
    try:
        with raw_upstream(None) as url:
            started = time.monotonic()
            with pytest.raises(UPSTREAM_ERRORS):
                await client.send(url, "v1/chat/completions", b"", [(b"content-type", b"application/json")], b"{}")
            assert 0.25 < time.monotonic() - started < 5
    finally:
        await client.aclose()
