"""Stream handlers: read OpenAI stream chunks / events as they pass through the stream proxy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from payi_otel.core import COMPLETED, ERROR, Call, CallRecord
from payi_otel.units import Usage

from ._content import streamed_output
from ._results import end_call, read_responses, tool_call
from ._usage import chat_usage, pick

_NO_USAGE_IN_STREAM = "no usage in stream (stream_options.include_usage was not requested)"


class StreamEnd:
    """Common end of every OpenAI stream: outcome, usage completeness, Azure resource fallback."""

    __slots__ = ("call", "usage")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.usage: Usage | None = None

    def on_end(self, call: Call, outcome: str, error: BaseException | None) -> None:
        rec = call.record
        rec.stream_outcome = outcome
        rec.usage = self.usage
        self._fill(rec)
        if self.usage is None or not self.usage.reported:
            rec.usage_incomplete_reason = (
                self._missing_reason()
                if outcome == COMPLETED
                else f"stream ended before usage was reported ({outcome})"
            )
        end_call(call, error if outcome == ERROR else None)

    def _fill(self, rec: CallRecord) -> None:
        pass

    def _missing_reason(self) -> str:
        return "no usage in stream"


class ChatStream(StreamEnd):
    """chat.completions and legacy completions chunks; assembles tool calls by index (0 included).

    ``on_chunk`` runs for every chunk on the caller's thread: the head of the chunk is read inline and the
    first token is reported to the call once (``token``), not on every chunk."""

    __slots__ = ("capture", "first", "hide_usage_chunk", "reasons", "rec", "texts", "token", "tools")

    def __init__(self, call: Call, hide_usage_chunk: bool) -> None:
        super().__init__(call)
        self.rec = call.record
        self.hide_usage_chunk = hide_usage_chunk
        self.capture = call.capture_content
        self.first = True
        self.token = False  # the first token was reported
        self.reasons: dict[int, str] = {}
        self.tools: dict[tuple[int, int], list[str]] = {}  # (choice, tool index) -> [name, arguments, id]
        self.texts: dict[int, list[str]] = {}

    def _head(self, chunk: Any) -> bool:
        """Id, model and usage of a chunk; False for the usage-only chunk the caller did not ask for."""
        if self.first and chunk.id:
            self.first = False
            self.rec.response_id = chunk.id
            self.rec.response_model = chunk.model or None
        usage = getattr(chunk, "usage", None)  # absent before openai 1.26
        if usage is not None:
            self.usage = chat_usage(usage)
            if self.hide_usage_chunk and not chunk.choices:
                return False
        return True

    def _first_token(self) -> None:
        self.token = True
        self.call.first_token()

    def on_chunk(self, chunk: Any) -> bool:
        # _head, called only when it has work: before the id is known, and on a usage chunk
        if (self.first or getattr(chunk, "usage", None) is not None) and not self._head(chunk):
            return False
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                self.reasons[choice.index] = choice.finish_reason
            delta = choice.delta
            if getattr(delta, "tool_calls", None):
                self._tool_deltas(choice.index, delta.tool_calls)
                if not self.token:
                    self._first_token()
            if getattr(delta, "function_call", None) is not None:
                self._function_delta(choice.index, delta.function_call)
                if not self.token:
                    self._first_token()
            if delta.content:
                if not self.token:  # the role-only first chunk is not a token
                    self._first_token()
                if self.capture:
                    self.texts.setdefault(choice.index, []).append(delta.content)
        return True

    def _tool_deltas(self, choice_index: int, tool_calls: Any) -> None:
        for tc in tool_calls:
            slot = self.tools.get((choice_index, tc.index))
            if slot is None:
                slot = self.tools[(choice_index, tc.index)] = ["", "", ""]
            if tc.id:
                slot[2] = tc.id
            fn = tc.function
            if fn is not None:
                if fn.name:
                    slot[0] += fn.name
                if fn.arguments:
                    slot[1] += fn.arguments

    def _function_delta(self, choice_index: int, fc: Any) -> None:
        slot = self.tools.setdefault((choice_index, -1), ["", "", ""])
        if fc.name:
            slot[0] += fc.name
        if fc.arguments:
            slot[1] += fc.arguments

    def _fill(self, rec: CallRecord) -> None:
        if self.reasons:
            rec.finish_reasons = [self.reasons[i] for i in sorted(self.reasons)]
        if self.tools:
            rec.tool_calls = [tool_call(slot[0], slot[1]) for _, slot in sorted(self.tools.items())]
        if self.capture:
            rec.output_messages = streamed_output(self.texts, self.tools, self.reasons)

    def _missing_reason(self) -> str:
        return _NO_USAGE_IN_STREAM


class CompletionStream(ChatStream):
    """Legacy completions chunks: choices carry ``text`` instead of a delta."""

    __slots__ = ()

    def on_chunk(self, chunk: Any) -> bool:
        if (self.first or getattr(chunk, "usage", None) is not None) and not self._head(chunk):
            return False
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                self.reasons[choice.index] = choice.finish_reason
            if choice.text:
                if not self.token:
                    self._first_token()
                if self.capture:
                    self.texts.setdefault(choice.index, []).append(choice.text)
        return True


_RESPONSE_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesStream(StreamEnd):
    """Responses API events: the terminal event carries the full response, usage included."""

    __slots__ = ("capture", "rec")

    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self.rec = call.record
        self.capture = call.capture_content

    def on_chunk(self, event: Any) -> bool:
        etype = getattr(event, "type", None)
        if isinstance(etype, str) and etype.endswith(".delta"):
            self.call.first_token()  # response.created / in_progress / output_item.added carry no output
        elif etype in _RESPONSE_FINAL_EVENTS:
            response = event.response
            read_responses(self.rec, response, self.capture)
            self.usage = self.rec.usage
        elif etype == "response.created":
            response = event.response
            self.rec.response_id = pick(response, "id") or None
            self.rec.response_model = pick(response, "model") or None
        return True


class UsageStream(StreamEnd):
    """Other event streams (images, audio): any event carrying ``usage`` is the report."""

    __slots__ = ("usage_of",)

    def __init__(self, call: Call, usage_of: Callable[[Any], Usage | None]) -> None:
        super().__init__(call)
        self.usage_of = usage_of

    def on_chunk(self, event: Any) -> bool:
        self.call.first_token()  # every event of these streams is output (a partial image, a text delta)
        usage = getattr(event, "usage", None)
        if usage is not None:
            self.usage = self.usage_of(usage) or self.usage
        return True
