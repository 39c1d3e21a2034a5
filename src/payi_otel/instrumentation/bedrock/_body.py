"""``invoke_model`` bodies, read once and handed back replayable.

The body of an ``invoke_model`` response is a one-shot ``StreamingBody``. To read the usage in it, the
instrumentation reads it whole (it is one JSON document) and puts a new ``botocore`` ``StreamingBody``
over the same bytes in its place, so the caller reads exactly what it would have: ``read()``,
``read(n)`` in chunks, ``iter_lines()``, ``iter_chunks()``, ``with``, ``close()``. If reading fails
part way, the caller gets the bytes that did arrive and then the same exception, from its own read.
An async body (aiobotocore) is left to the caller untouched; its usage comes from the headers.
"""

from __future__ import annotations

import inspect
import io
from typing import Any

from botocore.response import StreamingBody


class _Replay(io.BytesIO):
    """The bytes read, then the read error (if any) raised once at the end, as the network did."""

    def __init__(self, data: bytes, error: BaseException | None) -> None:
        super().__init__(data)
        self._error = error

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if self._error is not None and (not chunk or size is None or size < 0):
            error, self._error = self._error, None
            raise error
        return chunk


def replayable(data: bytes, error: BaseException | None = None) -> StreamingBody:
    return StreamingBody(_Replay(data, error), len(data) if error is None else None)


def read_body(result: dict[str, Any]) -> tuple[bytes, BaseException | None]:
    """Read ``result["body"]`` whole and replace it with a replayable body over the same bytes."""
    body = result.get("body")
    if body is None or not hasattr(body, "read") or inspect.iscoroutinefunction(body.read):
        return b"", None  # nothing to read, or an async body (aiobotocore): headers only
    parts: list[bytes] = []
    error: BaseException | None = None
    try:
        while True:
            chunk = body.read(65536)
            if not chunk:
                break
            parts.append(chunk)
    except Exception as exc:  # the caller sees it from its own read
        error = exc
    data = b"".join(parts)
    result["body"] = replayable(data, error)
    return data, error


__all__ = ["read_body", "replayable"]
