"""Answer botocore (boto3) requests from recorded traffic, at the HTTP layer only.

botocore emits ``before-send.<service>.<operation>`` just before it would send a request; a handler
that returns an ``AWSResponse`` answers it instead of the network. Everything above that (parameter
validation, serialization, signing, retries, response parsing, event-stream decoding) is the real
botocore::

    replay = BotocoreReplay(Cassette.load("tests/cassettes/.../test_converse.yaml"))
    client = boto3.client("bedrock-runtime", region_name="us-east-1", ...)
    replay.attach(client)

Requests are matched to the next unused recorded interaction with the same method and path (percent
escapes undone on both sides). AWS event streams (``application/vnd.amazon.eventstream``) are served
one frame per read, as they arrive from the network; :func:`encode_frame` builds frames for tests that
need an event the recordings lack (an exception mid-stream, for example).
"""

from __future__ import annotations

import binascii
import io
import json
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from botocore.awsrequest import AWSResponse

from payi_otel.testing.replay import Cassette, Interaction, ReplayMiss


def split_frames(body: bytes) -> list[bytes]:
    """The frames of an AWS event-stream body (each starts with its own total length)."""
    frames = []
    offset = 0
    while offset + 4 <= len(body):
        (length,) = struct.unpack_from("!I", body, offset)
        if length < 16 or offset + length > len(body):
            break
        frames.append(body[offset : offset + length])
        offset += length
    if offset < len(body):
        frames.append(body[offset:])
    return frames


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream frame with string headers (e.g. ``:message-type`` = ``exception``)."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack("!B", len(raw_name)) + raw_name
        encoded += b"\x07" + struct.pack("!H", len(raw_value)) + raw_value  # 7: string header
    total = 16 + len(encoded) + len(payload)
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + encoded + payload
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


def exception_frame(exception_type: str, message: str) -> bytes:
    payload = json.dumps({"message": message}).encode()
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return encode_frame(headers, payload)


class ReplayRaw:
    """A raw HTTP body as botocore reads it: ``stream()`` for event streams, ``read()`` for the rest."""

    def __init__(self, body: bytes, frames: list[bytes] | None = None) -> None:
        self._frames = frames
        self._buffer = io.BytesIO(body)
        self.closed = False
        self.frames_served = 0

    def stream(self, **_: Any) -> Iterator[bytes]:
        if self._frames is None:
            data = self._buffer.read()
            if data:
                yield data
            return
        for frame in self._frames:
            if self.closed:
                return
            self.frames_served += 1
            yield frame

    def read(self, amt: int | None = None, **_: Any) -> bytes:
        return self._buffer.read(-1 if amt is None else amt)

    def at_eof(self) -> bool:
        return self._buffer.tell() >= len(self._buffer.getbuffer())

    def readinto(self, b: Any) -> int:
        return self._buffer.readinto(b)

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._buffer.tell()

    def close(self) -> None:
        self.closed = True


class _AsyncContent:
    """The ``content`` of an aiohttp response, as aiobotocore reads it."""

    def __init__(self, raw: ReplayRaw) -> None:
        self._raw = raw

    async def read(self, n: int = -1) -> bytes:
        return ReplayRaw.read(self._raw, None if n is None or n < 0 else n)

    def at_eof(self) -> bool:
        return self._raw.at_eof()

    async def iter_chunks(self) -> AsyncIterator[tuple[bytes, bool]]:
        for chunk in self._raw.stream():
            yield chunk, True


class AsyncReplayRaw(ReplayRaw):
    """A raw body as aiobotocore reads it (aiohttp's shape: ``await read()``, ``content``)."""

    def __init__(self, body: bytes, frames: list[bytes] | None = None, url: str = "") -> None:
        super().__init__(body, frames)
        self.content = _AsyncContent(self)
        self.url = url

    async def read(self, amt: int | None = None, **_: Any) -> bytes:  # type: ignore[override]
        return super().read(amt)


def _same_path(a: str, b: str) -> bool:
    return unquote(a).rstrip("/") == unquote(b).rstrip("/")


class BotocoreReplay:
    """Serves a cassette's AWS interactions to botocore clients through ``before-send``."""

    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette
        self._used: set[int] = set()
        self._lock = threading.Lock()
        self.requests: list[Any] = []
        self.raws: list[ReplayRaw] = []

    def next_for(self, method: str, path: str) -> Interaction:
        with self._lock:
            for i, interaction in enumerate(self.cassette.interactions):
                if i not in self._used and interaction.method == method and _same_path(interaction.path, path):
                    self._used.add(i)
                    return interaction
        raise ReplayMiss(f"{self.cassette.name}: no unused recorded interaction for {method} {path}")

    def respond(self, request: Any, interaction: Interaction, *, asynchronous: bool = False) -> AWSResponse:
        is_stream = (interaction.header("content-type") or "").startswith("application/vnd.amazon.eventstream")
        frames = split_frames(interaction.body) if is_stream else None
        headers: dict[str, str] = {}
        for name, value in interaction.headers:
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        if asynchronous:
            from aiobotocore.awsrequest import AioAWSResponse
            from botocore.awsrequest import HeadersDict

            raw: ReplayRaw = AsyncReplayRaw(interaction.body, frames, request.url)
            self.raws.append(raw)
            response: AWSResponse = AioAWSResponse(request.url, interaction.status, HeadersDict(headers), raw)
            return response
        raw = ReplayRaw(interaction.body, frames)
        self.raws.append(raw)
        # AWSResponse turns a plain mapping into HTTPHeaders itself; its stubs ask for HTTPHeaders.
        return AWSResponse(request.url, interaction.status, headers, raw)  # type: ignore[arg-type]

    def _before_send(self, request: Any, **_: Any) -> AWSResponse:
        self.requests.append(request)
        interaction = self.next_for(request.method, urlsplit(request.url).path)
        return self.respond(request, interaction)

    def _before_send_async(self, request: Any, **_: Any) -> AWSResponse:
        self.requests.append(request)
        interaction = self.next_for(request.method, urlsplit(request.url).path)
        return self.respond(request, interaction, asynchronous=True)

    def attach(self, client: Any) -> Any:
        """Answer every request ``client`` (boto3/botocore, or aiobotocore) sends from the cassette."""
        is_async = type(client).__module__.startswith("aiobotocore") or any(
            c.__module__.startswith("aiobotocore") for c in type(client).__mro__
        )
        client.meta.events.register("before-send", self._before_send_async if is_async else self._before_send)
        return client


__all__ = ["AsyncReplayRaw", "BotocoreReplay", "ReplayRaw", "encode_frame", "exception_frame", "split_frames"]
