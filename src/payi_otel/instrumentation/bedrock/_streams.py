"""Stream handlers for ``converse_stream`` and ``invoke_model_with_response_stream``.

Both plug into the one stream proxy (:mod:`payi_otel.stream`), which ends the span exactly once
however the caller leaves the stream (exhausted, ``break`` + ``close()``, error, garbage collection).
The handlers only look at events:

* ConverseStream events are dicts (``messageStart``, ``contentBlockDelta``, ``messageStop``,
  ``metadata``); usage and the guardrail trace are in ``metadata``, the last event.
* InvokeModelWithResponseStream events are ``{"chunk": {"bytes": b"<model JSON>"}}``. Decoding every
  chunk would cost microseconds per event, so the first chunk is always decoded (an Anthropic
  ``message_start`` carries the input tokens, a Titan stream may be a single chunk) and tells the
  stream's shape:

  - Anthropic messages (``message_start``) and Amazon Nova (``messageStart``, Converse-shaped events)
    stream text deltas, which are passed over by their prefix unless a tool-use block is open; every
    other chunk (block starts and stops, tool-input deltas, the stop reason, the final counts) is decoded;
  - other families: only a chunk whose bytes mention ``invocationMetrics`` (the final billed counts and
    guardrail traces) is decoded.

Tool calls are recorded per content block, in block order; streamed arguments are written like the
non-streamed response's (compact JSON; what arrived when it does not parse).

A stream that ends before its usage arrived is recorded with the usage seen so far (Anthropic's input
tokens from ``message_start``) and ``payi.usage.complete = false``.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from payi_otel.core import COMPLETED, ERROR, Call
from payi_otel.instrumentation._long_context import long_context_threshold
from payi_otel.units import Usage

from ._errors import fail
from ._usage import (
    add_guardrail_units,
    anthropic_usage,
    body_usage,
    converse_usage,
    guardrail_trace,
    mark_large_context,
)

_NO_USAGE_COMPLETED = "stream ended without a usage event"
# Keys of the chunk that carries a stream's final counts: the billed metrics, Nova's metadata, Titan's
# last chunk (its output total).
_FINAL_KEYS = ("amazon-bedrock-invocationMetrics", "metadata", "totalOutputTextTokenCount")
# Chunks of messages-shaped invoke streams that are passed over unread while no tool-use block is open.
_ANTHROPIC_SKIP = b'{"type":"content_block_delta"'
_CONVERSE_SKIP = (b'{"contentBlockDelta"', b'{"contentBlockStop"')
_NOTHING = (b"\xff",)  # a prefix no JSON chunk has: every chunk is read while a tool-use block is open


def _tool_call(name: str, arguments: str) -> dict[str, str]:
    """A streamed tool call, its arguments written as the non-streamed response's are."""
    if not arguments:
        return {"name": name, "arguments": "{}"}
    with contextlib.suppress(ValueError):  # cut off mid-stream: what arrived
        arguments = json.dumps(json.loads(arguments), separators=(",", ":"))
    return {"name": name, "arguments": arguments}


class _BedrockStream:
    """What both stream kinds share: usage, guardrails, the ending."""

    __slots__ = ("call", "final", "first", "guardrail", "open_tool", "reasons", "resource", "tools", "usage")

    def __init__(self, call: Call, resource: str | None) -> None:
        self.call = call
        self.resource = resource  # the priced model (its long-context threshold)
        self.first = True
        self.usage: Usage | None = None
        self.final = False  # the usage seen is the provider's final report
        self.guardrail: Any = None
        self.reasons: list[str] = []
        self.tools: dict[int, list[str]] = {}  # content block index -> [name, arguments so far]
        self.open_tool: Any = None  # index of the tool-use block being streamed

    def _open(self, index: Any) -> None:
        """A tool-use block starts: its chunks must be read."""
        self.open_tool = index

    def _close(self) -> None:
        self.open_tool = None

    def on_end(self, call: Call, outcome: str, error: BaseException | None) -> None:
        rec = call.record
        rec.stream_outcome = outcome
        usage = self.usage
        if self.guardrail is not None:
            if usage is None:
                usage = Usage()
            add_guardrail_units(usage, self.guardrail)
        mark_large_context(usage, long_context_threshold(self.resource))
        rec.usage = usage
        if not self.final:
            rec.usage_incomplete_reason = (
                _NO_USAGE_COMPLETED if outcome == COMPLETED else f"stream ended before usage was reported ({outcome})"
            )
        if self.reasons:
            rec.finish_reasons = self.reasons
        if self.tools:
            rec.tool_calls = [_tool_call(n, a) for _, (n, a) in sorted(self.tools.items())]
        if outcome == ERROR and error is not None:
            fail(call, error)
        else:
            call.end()

    def _converse_content(self, event: dict[str, Any]) -> None:
        """Tool uses and the stop reason of a Converse-shaped event (``converse_stream``, Nova invoke)."""
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            tool = (start.get("start") or {}).get("toolUse")
            if tool is not None:
                index = start.get("contentBlockIndex", 0)
                self.tools[index] = [tool.get("name") or "", ""]
                self._open(index)
        elif "contentBlockDelta" in event:
            delta = event["contentBlockDelta"]
            use = (delta.get("delta") or {}).get("toolUse")
            if use is not None:
                slot = self.tools.get(delta.get("contentBlockIndex", 0))
                if slot is not None:
                    slot[1] += use.get("input") or ""
        elif "contentBlockStop" in event:
            self._close()
        elif "messageStop" in event:
            reason = event["messageStop"].get("stopReason")
            if reason:
                self.reasons.append(reason)


class ConverseStream(_BedrockStream):
    """``converse_stream`` events."""

    __slots__ = ()

    def on_chunk(self, event: Any) -> bool:
        if "contentBlockDelta" in event:
            if self.first:
                self.first = False
                self.call.first_token()
            if self.open_tool is not None:
                self._converse_content(event)
        elif "metadata" in event:
            metadata = event["metadata"]
            usage = converse_usage(metadata.get("usage"))
            if usage is not None:
                self.usage, self.final = usage, True
            self.guardrail = guardrail_trace(metadata)
        else:
            self._converse_content(event)
        return True


class InvokeStream(_BedrockStream):
    """``invoke_model_with_response_stream`` chunks (model-native JSON in ``chunk.bytes``)."""

    __slots__ = ("shape_skip", "skip")

    def __init__(self, call: Call, resource: str | None) -> None:
        super().__init__(call, resource)
        self.shape_skip: Any = None  # text-chunk prefix(es) of a messages-shaped stream (module doc)
        self.skip: Any = None  # what is passed over unread now: shape_skip, or nothing while a tool block is open

    def on_chunk(self, event: Any) -> bool:
        chunk = event.get("chunk")
        if chunk is None:
            return True
        data = chunk.get("bytes")
        skip = self.skip
        if skip is not None:  # messages-shaped: one prefix test per text chunk
            if not data.startswith(skip):
                self._absorb(data)
        elif self.first:
            self.first = False
            self.call.first_token()
            doc = self._absorb(data)
            if doc is not None:
                if doc.get("type") == "message_start":
                    self.shape_skip = self.skip = _ANTHROPIC_SKIP
                elif "messageStart" in doc:
                    self.shape_skip = self.skip = _CONVERSE_SKIP
        elif data is not None and data.rfind(b"nvocationMetrics") >= 0:  # not `in`: bytes.__contains__
            self._absorb(data)  # first tries the needle as an int, a caught TypeError per chunk
        return True

    def _open(self, index: Any) -> None:
        self.open_tool = index
        self.skip = _NOTHING

    def _close(self) -> None:
        self.open_tool = None
        self.skip = self.shape_skip

    def _absorb(self, data: Any) -> dict[str, Any] | None:
        try:
            doc = json.loads(data)
        except (TypeError, ValueError):
            return None
        if not isinstance(doc, dict):
            return None
        kind = doc.get("type")
        if kind is None:
            self._converse_content(doc)  # Nova; a no-op for the other families
        elif kind == "message_start":  # Anthropic: input tokens and the model, early
            message = doc.get("message") or {}
            if message.get("id"):
                self.call.record.response_model = message.get("model") or None
        elif kind != "message_stop":
            self._anthropic_event(doc, kind)
            return doc
        usage = body_usage(doc)
        if usage is not None:
            final = any(key in doc for key in _FINAL_KEYS)
            if final or not self.final:
                self.usage, self.final = usage, final
        guardrail = guardrail_trace(doc)
        if guardrail is not None:
            self.guardrail = guardrail
        reason = doc.get("completionReason") or doc.get("stop_reason")
        if isinstance(reason, str):
            self.reasons.append(reason)
        return doc

    def _anthropic_event(self, doc: dict[str, Any], kind: str) -> None:
        """Anthropic block events (tool uses) and ``message_delta`` (stop reason, running usage)."""
        if kind == "content_block_delta":
            delta = doc.get("delta") or {}
            slot = self.tools.get(doc.get("index", 0)) if delta.get("type") == "input_json_delta" else None
            if slot is not None:
                slot[1] += delta.get("partial_json") or ""
        elif kind == "content_block_start":
            block = doc.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = doc.get("index", 0)
                start_input = block.get("input")
                self.tools[index] = [block.get("name") or "", json.dumps(start_input) if start_input else ""]
                self._open(index)
        elif kind == "content_block_stop":
            self._close()
        elif kind == "message_delta":
            reason = (doc.get("delta") or {}).get("stop_reason")
            if isinstance(reason, str):
                self.reasons.append(reason)
            u = doc.get("usage")
            update = anthropic_usage(u) if isinstance(u, dict) and not self.final else None
            if update is not None:  # cumulative counts over message_start's; the final metrics replace them
                if self.usage is None:
                    self.usage = update
                else:
                    self.usage.merge(update)


__all__ = ["ConverseStream", "InvokeStream"]
