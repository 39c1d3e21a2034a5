"""Test helper: a real HTTP server on 127.0.0.1 standing in for a provider, answering recorded responses.

    with RecordedUpstream() as upstream:
        upstream.answer(cassette.interactions[0])          # the next request gets this response
        ... calls through the proxy (PAYI_OTEL_UPSTREAM_OPENAI=upstream.base_url) ...
        upstream.requests                                   # what arrived: method, path, headers, body

Responses are the recorded bytes (gzip kept with its content-encoding); SSE bodies are sent one event
per write, as a provider sends them. ``repeat`` answers every request with one interaction (load
tests), after ``delay`` seconds, with ``unique_ids`` each with its own response id;
``hold_after_first_event`` keeps a stream waiting after its first event until released.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import anyio

from payi_otel.service.server import AppThread
from payi_otel.testing.replay import Interaction

_DROP = frozenset({"content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True, slots=True)
class SeenRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    client: tuple[str, int] | None = None  # the caller's address and port: one per connection


def sse_parts(body: bytes) -> list[bytes]:
    """A recorded SSE body cut into its events (each with its blank line), else the whole body."""
    if b"\n\ndata:" not in body and b"\n\nevent:" not in body:
        return [body]
    parts = [p + b"\n\n" for p in body.split(b"\n\n") if p]
    if parts and not body.endswith(b"\n\n"):
        parts[-1] = parts[-1][:-2]
    return parts


class RecordedUpstream:
    def __init__(self) -> None:
        self.requests: list[SeenRequest] = []
        self._queue: deque[tuple[Interaction, int | None]] = deque()
        self.repeat: Interaction | None = None
        self.delay = 0.0  # seconds before each answer (calls overlap like real ones)
        self.unique_ids = False  # repeat: give each answer its own "id", as a provider does
        self._answers = 0
        self.hold_after_first_event: threading.Event | None = None
        self.first_event_sent = threading.Event()
        self._lock = threading.Lock()
        self._thread = AppThread(self)
        self.base_url = ""

    def answer(self, interaction: Interaction, status: int | None = None) -> None:
        """Answer the next request with ``interaction`` (with ``status`` instead of the recorded one)."""
        with self._lock:
            self._queue.append((interaction, status))

    def __enter__(self) -> RecordedUpstream:
        self._thread.start()
        self.base_url = self._thread.base_url
        return self

    def __exit__(self, *exc: object) -> None:
        if self.hold_after_first_event is not None:
            self.hold_after_first_event.set()
        self._thread.stop()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        with self._lock:
            self.requests.append(
                SeenRequest(
                    scope["method"],
                    scope["path"],
                    scope["query_string"].decode(),
                    headers,
                    body,
                    tuple(scope["client"]) if scope.get("client") else None,
                )
            )
            interaction, status = (self.repeat, None) if self.repeat is not None else self._queue.popleft()
        assert interaction is not None
        if self.delay:
            await anyio.sleep(self.delay)
        if self.unique_ids:
            with self._lock:
                self._answers += 1
                number = self._answers
            document = interaction.json()
            document["id"] = f"{document['id']}-{number}"
            interaction = replace(
                interaction,
                body=json.dumps(document).encode(),
                headers=tuple((k, v) for k, v in interaction.headers if k.lower() != "content-encoding"),
            )
        await send(
            {
                "type": "http.response.start",
                "status": status or interaction.status,
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in interaction.headers if k.lower() not in _DROP
                ],
            }
        )
        parts = sse_parts(interaction.body)
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})
            if i == 0 and len(parts) > 1:
                self.first_event_sent.set()
                hold = self.hold_after_first_event
                if hold is not None:
                    await anyio.to_thread.run_sync(hold.wait)


def main() -> None:
    """``python proxy_upstream.py CASSETTE [INDEX]``: answer every request with one recorded interaction
    until killed (benchmarks); prints ``listening on <base url>``."""
    import sys
    import time

    from payi_otel.testing.replay import Cassette

    upstream = RecordedUpstream()
    upstream.repeat = Cassette.load(sys.argv[1]).interactions[int(sys.argv[2]) if len(sys.argv) > 2 else 0]
    with upstream:
        print(f"listening on {upstream.base_url}", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
