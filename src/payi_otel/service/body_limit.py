"""Request body size limit of the local service (an ASGI middleware in front of every route).

A body larger than the limit is refused with 413 and Pay-i's error body before it is read: at
once when ``Content-Length`` announces it, otherwise (chunked bodies) as soon as the bytes read
pass the limit. Nothing over the limit is ever held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from payi_otel import protocol as P
from payi_otel.service.errors import PayiApiError

ENV_MAX_BODY_BYTES = "PAYI_OTEL_MAX_BODY_BYTES"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def max_body_bytes_from_env() -> int:
    """``PAYI_OTEL_MAX_BODY_BYTES`` (an integer >= 1024), or the default; ValueError naming the rule."""
    raw = os.environ.get(ENV_MAX_BODY_BYTES, "").strip()
    if not raw:
        return P.DEFAULT_MAX_BODY_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_MAX_BODY_BYTES}={raw!r}: must be an integer number of bytes >= 1024") from None
    if value < 1024:
        raise ValueError(f"{ENV_MAX_BODY_BYTES}={raw!r}: must be an integer number of bytes >= 1024")
    return value


def too_large(limit: int) -> PayiApiError:
    return PayiApiError(
        413, "request_too_large", f"body: at most {limit} bytes per request ({ENV_MAX_BODY_BYTES} on the service)"
    )


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413 in Pay-i's error shape."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await self._refuse(send)
                    return
                await self.app(scope, receive, send)  # the server reads exactly that many bytes
                return
        # No length announced (chunked): read the body here, up to the limit, then hand it on.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        error = too_large(self.limit)
        body = orjson.dumps(error.body())
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
