"""``invoke_model`` bodies, read once and handed back replayable.

The body of an ``invoke_model`` response is a one-shot ``StreamingBody``. To read the usage in it, the
instrumentation reads it whole (it is one JSON document) and puts a new ``botocore`` ``StreamingBody``
over the same bytes in its place, so the caller reads exactly what it would have: ``read()``,
``read(n)`` in chunks, ``iter_lines()``, ``iter_chunks()``, ``with``, ``close()``. If reading fails
part way, the caller gets the bytes that did arrive and then the same exception, from its own read.
An aiobotocore body is read the same way (:func:`aread_body`) and replaced by an async body over the
bytes (``await read()``, ``read(n)``, ``async for`` lines and chunks, ``async with``).
"""

from __future__ import annotations

import inspect
import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a body is replaced: botocore is imported by then
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
    from botocore.response import StreamingBody

    # None = length unknown (no length check), which botocore accepts; its stubs ask for an int.
    return StreamingBody(_Replay(data, error), len(data) if error is None else None)  # type: ignore[arg-type]


Body = tuple[bytes, BaseException | None]


def read_body(result: dict[str, Any]) -> Body:
    """Read ``result["body"]`` whole and replace it with a replayable body over the same bytes."""
    body = result.get("body")
    if body is None or not hasattr(body, "read") or inspect.iscoroutinefunction(body.read):
        return b"", None  # nothing to read (an async body is read by aread_body)
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


async def aread_body(result: dict[str, Any]) -> Body | None:
    """:func:`read_body` for an aiobotocore body; None when it is not one this module can replace."""
    body = result.get("body")
    cls = _async_body_class()
    if cls is None or body is None or not inspect.iscoroutinefunction(getattr(body, "read", None)):
        return None
    error: BaseException | None = None
    try:
        data = await body.read()
    except Exception as exc:  # the caller sees it from its own read
        data, error = b"", exc
    result["body"] = cls(_Replay(data, error), len(data) if error is None else None)
    return data, error


_ASYNC_BODY: list[Any] = []


def _async_body_class() -> Any:
    """An aiobotocore body class over bytes (built once, from aiobotocore's own base class)."""
    if not _ASYNC_BODY:
        try:
            from aiobotocore.response import AioStreamingBodyBase
        except ImportError:
            _ASYNC_BODY.append(None)
            return None

        class AsyncReplayBody(AioStreamingBodyBase):  # type: ignore[misc]
            async def read(self, amt: int | None = None) -> bytes:
                chunk: bytes = self._raw_stream.read(-1 if amt is None else amt)
                self._amount_read += len(chunk)
                if amt is None or (not chunk and amt > 0):
                    self._verify_content_length()
                return chunk

            async def readinto(self, b: bytearray) -> int:
                chunk = await self.read(len(b))
                b[: len(chunk)] = chunk
                return len(chunk)

            def readable(self) -> bool:
                return True

            def close(self) -> None:
                self._raw_stream.close()

            async def aclose(self) -> None:
                self.close()

        _ASYNC_BODY.append(AsyncReplayBody)
    return _ASYNC_BODY[0]


__all__ = ["Body", "aread_body", "read_body", "replayable"]
