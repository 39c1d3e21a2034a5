"""The one stream proxy: finalizes a provider stream's span exactly once, however the stream ends.

A :class:`StreamProxy` / :class:`AsyncStreamProxy` wraps a provider stream (``wrapt.ObjectProxy``, so
``isinstance(proxy, openai.Stream)`` still holds and every other attribute passes through) and feeds
each chunk to a :class:`StreamHandler` supplied by the instrumentor. All bookkeeping (exactly-once
finalization, outcome, the span made current around each read) lives in one :class:`_Tracker`, shared
by both; the two proxy classes only adapt the iteration and close/context-manager protocols. The
wrapped object need not be an iterator: it is asked for one at the first read, as a ``for`` loop would.

The stream ends on exhaustion (``completed``), an error while iterating (``error``), ``close()`` /
``aclose()`` or leaving a ``with`` block (``closed_early``; ``error`` if the block raised), or garbage
collection of an abandoned stream, or the program's exit while it still holds the stream (``abandoned``).

The call's span is current only while a chunk is being read (so requests a lazy stream makes while it
is iterated nest under it), never while the caller holds the stream. Which chunk is the first token is
the handler's decision (:meth:`payi_otel.core.Call.first_token`).

:class:`StreamManagerProxy` / :class:`AsyncStreamManagerProxy` serve SDK helpers that return a manager
(``with client.messages.stream(...) as stream``): entering the proxy starts the span, enters the
wrapped manager (which sends the request) with the span current, and returns what the provider module
makes of the entered object (usually a stream proxy around it); leaving ends that stream's span.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import weakref
from collections.abc import Callable, Iterator
from contextvars import Token
from typing import TYPE_CHECKING, Any, Protocol

import wrapt
from opentelemetry import context as otel_context

from payi_otel import finished
from payi_otel.core import ABANDONED, CLOSED_EARLY, COMPLETED, ERROR, Call
from payi_otel.fastcontext import enter as _enter
from payi_otel.fastcontext import leave as _leave
from payi_otel.fastcontext import runner as _runner

logger = logging.getLogger(__name__)

_Token = Token[otel_context.Context]

if TYPE_CHECKING:  # generic only in wrapt's type stubs, not at run time in every wrapt release
    _ProxyBase = wrapt.ObjectProxy[Any]
else:
    _ProxyBase = wrapt.ObjectProxy


class StreamHandler(Protocol):
    """Provider-specific hooks. Both must be cheap and must not raise (errors are swallowed).

    A handler may also define ``bind(use)``: it is called once, when the stream is proxied, with a function
    that replaces the ``on_chunk`` the proxy calls for the chunks that follow (for a handler whose work per
    chunk shrinks once it has seen some chunk, e.g. the first token: no flag tested per chunk after it)."""

    def on_chunk(self, chunk: Any) -> object:
        """Look at one chunk; return False to hide it from the caller (e.g. an injected usage chunk); any
        other result (None included) passes it on, so a C method such as ``list.append`` can serve.

        Call ``call.first_token()`` on the first chunk that counts as output."""

    def on_end(self, call: Call, outcome: str, error: BaseException | None) -> None:
        """Write what was seen into ``call.record`` and end ``call`` (``end`` or ``fail``)."""


def _sync_next(source: Any) -> Any:
    nxt = getattr(source, "__next__", None)
    return nxt if nxt is not None else iter(source).__next__


def _async_next(source: Any) -> Any:
    """Where ``__anext__`` is itself an async generator function (aiobotocore's ``EventStream``), read
    as ``async for`` does: ``__aiter__().__anext__``."""
    nxt = getattr(source, "__anext__", None)
    if nxt is None or inspect.isasyncgenfunction(nxt):
        return source.__aiter__().__anext__
    return nxt


class _Tracker:
    """Per-stream bookkeeping, on a plain slotted object (proxy attribute access is slow on the hot path).

    Per chunk: the read through a method bound once, with the call's context current (synchronous streams:
    entering a context of the stream's own; asynchronous ones: one ``ContextVar`` set and reset around the
    read, which spans an ``await``), and the handler's ``on_chunk``."""

    __slots__ = ("__weakref__", "call", "context", "done", "handler", "next", "on_chunk", "run", "source")

    def __init__(self, call: Call, handler: StreamHandler, source: Any) -> None:
        self.call = call
        self.handler = handler
        self.on_chunk: Callable[[Any], object] = handler.on_chunk
        self.source = source
        self.next: Any = None  # the source's reader, resolved at the first read
        self.context = call.context
        self.run: Callable[..., Any] | None = None  # a synchronous stream's runner, made at its first read
        self.done = False
        bind = getattr(handler, "bind", None)
        if bind is not None:
            bind(self.use)
        _unfinished.add(self)

    def use(self, on_chunk: Callable[[Any], object]) -> None:
        """The handler's reader for the chunks that follow (see :class:`StreamHandler`)."""
        self.on_chunk = on_chunk

    def finish(self, outcome: str, error: BaseException | None = None) -> None:
        """End the stream's span, exactly once."""
        if self.done:
            return
        self.done = True
        _unfinished.discard(self)
        try:
            self.handler.on_end(self.call, outcome, error)
        except Exception:
            logger.debug("stream finalization failed", exc_info=True)
            self.call.end()

    def read_failed(self, error: BaseException) -> None:
        """Reading the stream raised ``error`` (an error event, a dropped connection): the call failed after
        its response had begun, a client-side failure (status 299), unless the error carries a provider
        error status of its own."""
        rec = self.call.record
        if rec.status_code is not None and rec.status_code < 400:
            rec.status_code = None
        self.finish(ERROR, error)

    def first_sync(self) -> Any:
        """The first read of a synchronous stream: resolve the source's reader, then read."""
        self.next = _sync_next(self.source)
        return self.next()

    async def astep(self) -> Any:
        enter, leave = _enter, _leave
        while True:
            token = enter(self.context)
            try:
                nxt = self.next
                if nxt is None:
                    nxt = self.next = _async_next(self.source)
                chunk = await nxt()
            except StopAsyncIteration:
                self.finish(COMPLETED)
                raise
            except BaseException as exc:
                self.read_failed(exc)
                raise
            finally:
                leave(token)  # across the await: checked
            try:
                if self.on_chunk(chunk) is not False:
                    return chunk
            except Exception:
                logger.debug("stream chunk processing failed", exc_info=True)
                return chunk


_unfinished: weakref.WeakSet[_Tracker] = weakref.WeakSet()  # the streams not finished yet


def _end_streams_left_at_exit() -> None:
    """At exit, the streams the program still holds unfinished (see :mod:`payi_otel.finished`), as abandoned."""
    for tracker in list(_unfinished):
        tracker.finish(ABANDONED)


finished.add_exit_ender(_end_streams_left_at_exit)
# Usually before the tracer provider's own exit handler (registered earlier) shuts its exporters down; the Pay-i
# exporter also asks for it when it shuts down, whichever comes first.
atexit.register(finished.end_calls_left_at_exit)


class _StreamBookkeeping(_ProxyBase):
    """What the sync and async proxies share: the tracker and the non-iteration endings."""

    __slots__ = ("_self_t",)

    def __init__(self, wrapped: Any, call: Call, handler: StreamHandler) -> None:
        super().__init__(wrapped)
        self._self_t = _Tracker(call, handler, wrapped)

    @property
    def payi_finished(self) -> bool:
        return self._self_t.done

    def payi_close(self) -> None:
        """End the span as closed early (for helpers that close the underlying response directly)."""
        self._self_t.finish(CLOSED_EARLY)

    def payi_exit(self, exc: BaseException | None) -> None:
        """End the span for a ``with`` block left normally (closed early) or by ``exc`` (error)."""
        self._self_t.finish(ERROR if exc is not None else CLOSED_EARLY, exc)

    def __del__(self) -> None:
        try:  # a proxy whose __init__ failed has no tracker
            tracker = object.__getattribute__(self, "_self_t")
        except AttributeError:
            return
        if not tracker.done:
            tracker.finish(ABANDONED)


# The tracker of a proxy, read through its slot's descriptor: ``proxy._self_t`` goes through the proxy's
# attribute hook (a wrapt proxy type defines ``__getattr__``), several times the cost, on every chunk.
_tracker: Callable[[_StreamBookkeeping], _Tracker] = _StreamBookkeeping.__dict__["_self_t"].__get__


def _chunks(proxy: StreamProxy, t: _Tracker) -> Iterator[Any]:
    """What iterating a synchronous stream proxy yields: each chunk read with the call's context current,
    shown to the handler, then passed on. A generator: resuming one per chunk costs a fraction of a Python
    ``__next__`` reached through the proxy type's slot. It holds ``proxy``, so the stream lives as long as
    an iterator of it (``it = iter(stream)``); leaving it (``break``) leaves the stream open, as for the
    SDK's own iterators: a later ``for`` or ``next()`` goes on from the next chunk.

    Each read runs in the stream's own copy of the caller's contextvars, with the call's context current
    (:func:`payi_otel.fastcontext.runner`, taken at the first read): the span is current only inside the
    read, and entering the copy costs next to nothing, where setting and resetting the context around each
    read would cost about as much as everything else here."""
    run = t.run
    if run is None:
        run = t.run = _runner(t.context)
    while True:
        try:
            chunk = run(t.next or t.first_sync)
        except StopIteration:
            t.finish(COMPLETED)
            return
        except BaseException as exc:
            t.read_failed(exc)
            raise
        try:
            if t.on_chunk(chunk) is False:
                continue
        except Exception:
            logger.debug("stream chunk processing failed", exc_info=True)
        yield chunk


class StreamProxy(_StreamBookkeeping):
    """Proxy for a synchronous stream (iterable, optionally ``close()`` and context manager)."""

    def __iter__(self) -> Iterator[Any]:
        return _chunks(self, _tracker(self))

    def __next__(self) -> Any:
        for chunk in _chunks(self, _tracker(self)):
            return chunk
        raise StopIteration

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
            self.payi_exit(exc)


class AsyncStreamProxy(_StreamBookkeeping):
    """Proxy for an asynchronous stream (async iterable, ``close()``/``aclose()``, async context manager)."""

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    def __anext__(self) -> Any:
        return _tracker(self).astep()

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
            self.payi_exit(exc)


# --- stream managers ---------------------------------------------------------------------------
StartCall = Callable[[], "Call | None"]
OpenStream = Callable[[Call, Any], Any]


class _ManagerBookkeeping(_ProxyBase):
    """What the sync and async manager proxies share: starting the call and ending the entered stream."""

    def __init__(self, wrapped: Any, start: StartCall, open_stream: OpenStream) -> None:
        super().__init__(wrapped)
        self._self_start = start
        self._self_open = open_stream
        self._self_stream: Any = None

    def _payi_begin(self) -> tuple[Call | None, _Token | None]:
        try:
            call = self._self_start()
        except Exception:
            logger.debug("instrumentation failed before entering a stream manager", exc_info=True)
            call = None
        return call, (call.activate() if call is not None else None)

    def _payi_entered(self, call: Call | None, token: _Token | None, entered: Any) -> Any:
        if call is None or token is None:
            return entered
        call.deactivate(token)
        try:
            stream = self._self_open(call, entered)
        except Exception:
            logger.debug("could not instrument an entered stream", exc_info=True)
            call.end()
            return entered
        self._self_stream = stream
        return stream

    @staticmethod
    def _payi_failed(call: Call | None, token: _Token | None, exc: BaseException) -> None:
        if call is not None and token is not None:
            call.deactivate(token)
            call.fail(exc)

    def _payi_left(self, exc: BaseException | None) -> None:
        stream, self._self_stream = self._self_stream, None
        finish = getattr(stream, "payi_exit", None)
        if finish is not None:
            try:
                finish(exc)
            except Exception:
                logger.debug("could not end a stream manager's stream", exc_info=True)


class StreamManagerProxy(_ManagerBookkeeping):
    """Proxy for a synchronous stream manager: ``with manager as stream``."""

    def __enter__(self) -> Any:
        call, token = self._payi_begin()
        try:
            entered = self.__wrapped__.__enter__()
        except BaseException as exc:
            self._payi_failed(call, token, exc)
            raise
        return self._payi_entered(call, token, entered)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            self._payi_left(exc)


class AsyncStreamManagerProxy(_ManagerBookkeeping):
    """Proxy for an asynchronous stream manager: ``async with manager as stream``."""

    async def __aenter__(self) -> Any:
        call, token = self._payi_begin()
        try:
            entered = await self.__wrapped__.__aenter__()
        except BaseException as exc:
            self._payi_failed(call, token, exc)
            raise
        return self._payi_entered(call, token, entered)

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            self._payi_left(exc)


def is_stream_proxy(obj: Any) -> bool:
    return isinstance(obj, _StreamBookkeeping)


__all__ = [
    "AsyncStreamManagerProxy",
    "AsyncStreamProxy",
    "StreamHandler",
    "StreamManagerProxy",
    "StreamProxy",
    "is_stream_proxy",
]
