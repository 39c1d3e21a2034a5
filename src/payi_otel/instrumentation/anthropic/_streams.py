"""Anthropic streams: the events of ``messages.create(stream=True)`` and of ``messages.stream()``.

One handler reads both: the raw events (``message_start``, ``content_block_start/delta``,
``message_delta``, ...) and the ``MessageStream`` events, which are the raw ones plus derived events
(``text``, ``input_json``, ...) that it ignores. Usage comes from ``message_start`` and is completed by
``message_delta``; tool calls are assembled per content index (index 0 included); the first token is the
first ``content_block_delta`` (not ``message_start`` or ``ping``).

The ``MessageStream`` proxies route the SDK's helpers (``text_stream``, ``until_done``,
``get_final_message``, ``get_final_text``) through the proxy's own iteration, so every way of reading a
managed stream is seen, and the stream ends when it is exhausted, not when the ``with`` block is left.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from payi_otel.core import COMPLETED, ERROR, Call
from payi_otel.instrumentation._long_context import long_context_threshold
from payi_otel.instrumentation.anthropic._usage import delta_usage, g, streamed_arguments, usage_of
from payi_otel.stream import AsyncStreamProxy, StreamProxy
from payi_otel.units import Usage


class MessageEvents:
    """The stream handler (:class:`payi_otel.stream.StreamHandler`) of one Anthropic message stream."""

    __slots__ = ("call", "end", "finished", "reason", "threshold", "tools", "usage", "waiting")

    def __init__(self, call: Call, end: Callable[[Call, BaseException | None], None]) -> None:
        self.call = call
        self.end = end
        self.usage: Usage | None = None
        self.tools: dict[int, list[Any]] = {}  # content index -> [name, partial json, start input]
        self.reason: str | None = None
        self.finished = False  # message_delta seen: the usage report is final
        self.waiting = True  # for the first content delta (the first token)
        self.threshold = long_context_threshold(call.record.request_model)

    def on_chunk(self, event: Any) -> bool:
        etype = event.type
        if etype == "content_block_delta":  # most events: one flag, and the delta only once a tool started
            if self.waiting:
                self.waiting = False
                self.call.first_token()
            if self.tools:
                delta = event.delta
                if delta.type == "input_json_delta":
                    slot = self.tools.get(event.index)
                    if slot is not None:
                        slot[1] += delta.partial_json
        elif etype == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                self.tools[event.index] = [block.name, "", g(block, "input")]
        elif etype == "message_delta":
            self.usage = delta_usage(self.usage, g(event, "usage"), self.threshold)
            self.reason = g(event.delta, "stop_reason") or self.reason
            self.finished = True
        elif etype == "message_start":
            message = event.message
            rec = self.call.record
            rec.response_id = g(message, "id") or None
            rec.response_model = g(message, "model") or None
            self.usage = usage_of(g(message, "usage"), self.threshold)
        return True

    def on_end(self, call: Call, outcome: str, error: BaseException | None) -> None:
        rec = call.record
        rec.stream_outcome = outcome
        rec.usage = self.usage
        if self.reason:
            rec.finish_reasons = [self.reason]
        if self.tools:
            rec.tool_calls = [
                {"name": name or "", "arguments": streamed_arguments(partial, start)}
                for _, (name, partial, start) in sorted(self.tools.items())
            ]
        if not self.finished:
            rec.usage_incomplete_reason = (
                "stream ended without a message_delta usage report"
                if outcome == COMPLETED
                else f"stream ended before its final usage report ({outcome})"
            )
        self.end(call, error if outcome == ERROR else None)


def _text_deltas(events: Iterator[Any]) -> Iterator[str]:
    for event in events:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            yield event.delta.text


async def _async_text_deltas(events: AsyncIterator[Any]) -> AsyncIterator[str]:
    async for event in events:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            yield event.delta.text


class MessageStreamProxy(StreamProxy):
    """A ``MessageStream`` whose helpers read through this proxy."""

    @property
    def text_stream(self) -> Iterator[str]:
        texts = getattr(self, "_self_texts", None)
        if texts is None:
            texts = self._self_texts = _text_deltas(self)
        return texts

    def until_done(self) -> None:
        for _ in self:
            pass

    def get_final_message(self) -> Any:
        self.until_done()
        return self.__wrapped__.get_final_message()

    def get_final_text(self) -> str:
        self.until_done()
        text: str = self.__wrapped__.get_final_text()
        return text


class AsyncMessageStreamProxy(AsyncStreamProxy):
    """An ``AsyncMessageStream`` whose helpers read through this proxy."""

    @property
    def text_stream(self) -> AsyncIterator[str]:
        texts = getattr(self, "_self_texts", None)
        if texts is None:
            texts = self._self_texts = _async_text_deltas(self)
        return texts

    async def until_done(self) -> None:
        async for _ in self:
            pass

    async def get_final_message(self) -> Any:
        await self.until_done()
        return await self.__wrapped__.get_final_message()

    async def get_final_text(self) -> str:
        await self.until_done()
        text: str = await self.__wrapped__.get_final_text()
        return text


__all__ = ["AsyncMessageStreamProxy", "MessageEvents", "MessageStreamProxy"]
