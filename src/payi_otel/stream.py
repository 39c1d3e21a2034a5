"""The one stream proxy: finalizes a provider stream's span exactly once, however the stream ends.

A :class:`StreamProxy` / :class:`AsyncStreamProxy` wraps a provider stream (``wrapt.ObjectProxy``, so
``isinstance(proxy, openai.Stream)`` still holds and every other attribute passes through) and feeds
each chunk to a :class:`StreamHandler` supplied by the instrumentor. All bookkeeping (first-token time,
exactly-once finalization, outcome) lives in one :class:`_Tracker`, shared by both; the two proxy
classes only adapt the iteration and close/context-manager protocols.

The stream ends on exhaustion (``completed``), an error while iterating (``error``), ``close()`` /
``aclose()`` or leaving a ``with`` block (``closed_early``; ``error`` if the block raised), or garbage
collection of an abandoned stream (``abandoned``). No OpenTelemetry context is attached while the
caller holds the stream; with ``activate_first`` the call's span is current while the first chunk is
fetched, for lazy streams (generators) that send their HTTP request only then.
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


class _Tracker:
    """Per-stream bookkeeping, on a plain slotted object (proxy attribute access is slow on the hot path)."""

    __slots__ = ("_next", "call", "done", "first", "handler", "next", "on_chunk")

    def __init__(self, call: Call, handler: StreamHandler, next_: Any, activate_first: str | None = None) -> None:
        self.call = call
        self.handler = handler
        self.on_chunk = handler.on_chunk
        self.next = next_
        self._next = next_
        self.first = True
        self.done = False
        if activate_first == "sync":
            self.next = self._first_next
        elif activate_first == "async":
            self.next = self._afirst_next

    def _first_next(self) -> Any:
        """The first read, with the call's span current; later reads call the stream directly."""
        self.next = self._next
        token = self.call.activate()
        try:
            return self._next()
        finally:
            self.call.deactivate(token)

    async def _afirst_next(self) -> Any:
        self.next = self._next
        token = self.call.activate()
        try:
            return await self._next()
        finally:
            self.call.deactivate(token)

    def accept(self, chunk: Any) -> bool:
        """Bookkeeping for one chunk; False hides it from the caller."""
        if self.first:
            self.first = False
            self.call.first_token()
        try:
            return self.on_chunk(chunk)
        except Exception:
            logger.debug("stream chunk processing failed", exc_info=True)
            return True

    def finish(self, outcome: str, error: BaseException | None = None) -> None:
        """End the stream's span, exactly once."""
        if self.done:
            return
        self.done = True
        try:
            self.handler.on_end(self.call, outcome, error)
        except Exception:
            logger.debug("stream finalization failed", exc_info=True)
            self.call.end()

    def step(self) -> Any:
        while True:
            try:
                chunk = self.next()
            except StopIteration:
                self.finish(COMPLETED)
                raise
            except BaseException as exc:
                self.finish(ERROR, exc)
                raise
            if self.accept(chunk):
                return chunk

    async def astep(self) -> Any:
        while True:
            try:
                chunk = await self.next()
            except StopAsyncIteration:
                self.finish(COMPLETED)
                raise
            except BaseException as exc:
                self.finish(ERROR, exc)
                raise
            if self.accept(chunk):
                return chunk


class _StreamBookkeeping(wrapt.ObjectProxy):
    """What the sync and async proxies share: the tracker and the non-iteration endings."""

    def __init__(
        self, wrapped: Any, call: Call, handler: StreamHandler, next_: Any, activate_first: str | None = None
    ) -> None:
        super().__init__(wrapped)
        self._self_t = _Tracker(call, handler, next_, activate_first)

    @property
    def payi_finished(self) -> bool:
        return self._self_t.done

    def payi_close(self) -> None:
        """End the span as closed early (for helpers that close the underlying response directly)."""
        self._self_t.finish(CLOSED_EARLY)

    def _exit_outcome(self, exc: BaseException | None) -> None:
        self._self_t.finish(ERROR if exc is not None else CLOSED_EARLY, exc)

    def __del__(self) -> None:
        tracker = self._self_t
        if not tracker.done:
            tracker.finish(ABANDONED)


class StreamProxy(_StreamBookkeeping):
    """Proxy for a synchronous stream (iterator, optionally ``close()`` and context manager)."""

    def __init__(self, wrapped: Any, call: Call, handler: StreamHandler, *, activate_first: bool = False) -> None:
        nxt = getattr(wrapped, "__next__", None)
        next_ = nxt if nxt is not None else iter(wrapped).__next__
        super().__init__(wrapped, call, handler, next_, "sync" if activate_first else None)

    def __iter__(self) -> StreamProxy:
        return self

    def __next__(self) -> Any:
        return self._self_t.step()

    def close(self) -> Any:
        try:
            closer = getattr(self.__wrapped__, "close", None)
            return closer() if closer is not None else None
        finally:
            self._self_t.finish(CLOSED_EARLY)

    def __enter__(self) -> StreamProxy:
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

    def __init__(self, wrapped: Any, call: Call, handler: StreamHandler, *, activate_first: bool = False) -> None:
        nxt = getattr(wrapped, "__anext__", None)
        next_ = nxt if nxt is not None else wrapped.__aiter__().__anext__
        super().__init__(wrapped, call, handler, next_, "async" if activate_first else None)

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    def __anext__(self) -> Any:
        return self._self_t.astep()

    async def _payi_close_inner(self, *names: str) -> Any:
        try:
            for name in names:
                closer = getattr(self.__wrapped__, name, None)
                if closer is not None:
                    result = closer()
                    return await result if hasattr(result, "__await__") else result
            return None
        finally:
            self._self_t.finish(CLOSED_EARLY)

    async def close(self) -> Any:
        return await self._payi_close_inner("close", "aclose")

    async def aclose(self) -> Any:
        return await self._payi_close_inner("aclose", "close")

    async def __aenter__(self) -> AsyncStreamProxy:
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
