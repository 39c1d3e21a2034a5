"""The one stream proxy: finalizes a provider stream's span exactly once, however the stream ends.

A :class:`StreamProxy` / :class:`AsyncStreamProxy` wraps a provider stream (``wrapt.ObjectProxy``, so
``isinstance(proxy, openai.Stream)`` still holds and every other attribute passes through) and feeds
each chunk to a :class:`StreamHandler` supplied by the instrumentor. All bookkeeping (first-token time,
exactly-once finalization, outcome) lives in :class:`_StreamBookkeeping`, shared by both; the two
classes only adapt the iteration protocols.

The stream ends on exhaustion (``completed``), an error while iterating (``error``), ``close()`` /
``aclose()`` or leaving a ``with`` block (``closed_early``; ``error`` if the block raised), or garbage
collection of an abandoned stream (``abandoned``). No OpenTelemetry context is attached while the
caller holds the stream.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import wrapt

from payi_otel.core import ABANDONED, CLOSED_EARLY, COMPLETED, ERROR, Call

logger = logging.getLogger(__name__)


class StreamHandler(Protocol):
    """Provider-specific hooks. Both must be cheap and must not raise (errors are swallowed)."""

    def on_chunk(self, chunk: Any) -> bool:
        """Look at one chunk; return False to hide it from the caller (e.g. an injected usage chunk)."""

    def on_end(self, call: Call, outcome: str, error: BaseException | None) -> None:
        """Write what was seen into ``call.record`` and end ``call`` (``end`` or ``fail``)."""


class _StreamBookkeeping(wrapt.ObjectProxy):
    """Shared state and the exactly-once finalizer."""

    def __init__(self, wrapped: Any, call: Call, handler: StreamHandler) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_on_chunk = handler.on_chunk
        self._self_handler = handler
        self._self_first = True
        self._self_done = False

    def _payi_chunk(self, chunk: Any) -> bool:
        if self._self_first:
            self._self_first = False
            self._self_call.first_token()
        try:
            return self._self_on_chunk(chunk)
        except Exception:
            logger.debug("stream chunk processing failed", exc_info=True)
            return True

    def _payi_finish(self, outcome: str, error: BaseException | None = None) -> None:
        if self._self_done:
            return
        self._self_done = True
        try:
            self._self_handler.on_end(self._self_call, outcome, error)
        except Exception:
            logger.debug("stream finalization failed", exc_info=True)
            self._self_call.end()

    @property
    def payi_finished(self) -> bool:
        return self._self_done

    def payi_close(self) -> None:
        """End the span as closed early (for helpers that close the underlying response directly)."""
        self._payi_finish(CLOSED_EARLY)

    def _exit_outcome(self, exc: BaseException | None) -> None:
        self._payi_finish(ERROR if exc is not None else CLOSED_EARLY, exc)

    def __del__(self) -> None:
        if not self._self_done:
            self._payi_finish(ABANDONED)

    def __copy__(self) -> Any:  # pragma: no cover - streams are not copyable
        raise TypeError("streams cannot be copied")

    def __reduce_ex__(self, protocol: int) -> Any:  # pragma: no cover
        raise TypeError("streams cannot be pickled")


class StreamProxy(_StreamBookkeeping):
    """Proxy for a synchronous stream (iterator, optionally ``close()`` and context manager)."""

    def __init__(self, wrapped: Any, call: Call, handler: StreamHandler) -> None:
        super().__init__(wrapped, call, handler)
        nxt = getattr(wrapped, "__next__", None)
        self._self_next = nxt if nxt is not None else iter(wrapped).__next__

    def __iter__(self) -> "StreamProxy":
        return self

    def __next__(self) -> Any:
        while True:
            try:
                chunk = self._self_next()
            except StopIteration:
                self._payi_finish(COMPLETED)
                raise
            except BaseException as exc:
                self._payi_finish(ERROR, exc)
                raise
            if self._payi_chunk(chunk):
                return chunk

    def close(self) -> Any:
        try:
            closer = getattr(self.__wrapped__, "close", None)
            return closer() if closer is not None else None
        finally:
            self._payi_finish(CLOSED_EARLY)

    def __enter__(self) -> "StreamProxy":
        enter = getattr(self.__wrapped__, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            exit_ = getattr(self.__wrapped__, "__exit__", None)
            return exit_(exc_type, exc, tb) if exit_ is not None else None
        finally:
            self._exit_outcome(exc)


class AsyncStreamProxy(_StreamBookkeeping):
    """Proxy for an asynchronous stream (async iterator, ``close()``/``aclose()``, async context manager)."""

    def __init__(self, wrapped: Any, call: Call, handler: StreamHandler) -> None:
        super().__init__(wrapped, call, handler)
        nxt = getattr(wrapped, "__anext__", None)
        self._self_next = nxt if nxt is not None else wrapped.__aiter__().__anext__

    def __aiter__(self) -> "AsyncStreamProxy":
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                chunk = await self._self_next()
            except StopAsyncIteration:
                self._payi_finish(COMPLETED)
                raise
            except BaseException as exc:
                self._payi_finish(ERROR, exc)
                raise
            if self._payi_chunk(chunk):
                return chunk

    async def _payi_close_inner(self, *names: str) -> Any:
        try:
            for name in names:
                closer = getattr(self.__wrapped__, name, None)
                if closer is not None:
                    result = closer()
                    return await result if hasattr(result, "__await__") else result
            return None
        finally:
            self._payi_finish(CLOSED_EARLY)

    async def close(self) -> Any:
        return await self._payi_close_inner("close", "aclose")

    async def aclose(self) -> Any:
        return await self._payi_close_inner("aclose", "close")

    async def __aenter__(self) -> "AsyncStreamProxy":
        enter = getattr(self.__wrapped__, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            exit_ = getattr(self.__wrapped__, "__aexit__", None)
            return await exit_(exc_type, exc, tb) if exit_ is not None else None
        finally:
            self._exit_outcome(exc)


def is_stream_proxy(obj: Any) -> bool:
    return isinstance(obj, _StreamBookkeeping)


__all__ = ["AsyncStreamProxy", "StreamHandler", "StreamProxy", "is_stream_proxy"]
