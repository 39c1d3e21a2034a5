"""The proxy's upstream connections: a request's head and body leave in one write, sent before the
response is read; and a whole request through the real client to a real local upstream."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpcore
import orjson
from proxy_upstream import RecordedUpstream

from payi_otel.service.proxy.client import UpstreamClient, _CoalescingStream, chunks, decoder
from payi_otel.testing.replay import Cassette

CHAT = Path(__file__).parent / "cassettes/traceloop__openllmetry/openai/test_chat.yaml"


class _Recording(httpcore.AsyncNetworkStream):
    """A connection that keeps what is written to it, in order with the reads and the close."""

    def __init__(self, answer: bytes) -> None:
        self.log: list[tuple[str, bytes]] = []
        self.answer = answer

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.log.append(("write", buffer))

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.log.append(("read", b""))
        answer, self.answer = self.answer, b""
        return answer

    async def aclose(self) -> None:
        self.log.append(("close", b""))


def test_writes_leave_together_before_the_read() -> None:
    inner = _Recording(b"HTTP/1.1 200 OK\r\n\r\n")

    async def exchange() -> bytes:
        stream = _CoalescingStream(inner)
        await stream.write(b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n")
        await stream.write(b"")
        await stream.write(b"{}")
        assert inner.log == []  # nothing has left yet
        answer = await stream.read(65536)
        await stream.write(b"unsent")
        await stream.aclose()
        return answer

    assert anyio.run(exchange) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert inner.log == [
        ("write", b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"),
        ("read", b""),
        ("close", b""),  # what was written after the last read is dropped with its connection
    ]


def test_request_through_the_client_to_a_local_upstream() -> None:
    interaction = Cassette.load(CHAT).interactions[0]  # a gzip-encoded recorded answer
    request = orjson.dumps(interaction.request_body)

    async def call(base: str) -> list[tuple[int, bytes]]:
        client = UpstreamClient()
        answers = []
        try:
            for _ in range(2):  # the second call reuses the kept-alive connection
                response = await client.send(base, "v1/chat/completions", b"a=1", [(b"x-key", b"k")], request)
                decode = decoder(response.headers)
                assert decode is not None
                answers.append((response.status, b"".join([c async for c in chunks(response, decode)])))
                await response.aclose()
        finally:
            await client.aclose()
        return answers

    with RecordedUpstream() as upstream:
        upstream.repeat = interaction
        answers = anyio.run(call, upstream.base_url)
    assert [(status, orjson.loads(content)) for status, content in answers] == [(200, interaction.json())] * 2
    assert [(r.path, r.query, r.body, r.headers["x-key"]) for r in upstream.requests] == [
        ("/v1/chat/completions", "a=1", request, "k")
    ] * 2
