"""Stream handlers for ``converse_stream`` and ``invoke_model_with_response_stream``.

Both plug into the one stream proxy (:mod:`payi_otel.stream`), which ends the span exactly once
however the caller leaves the stream (exhausted, ``break`` + ``close()``, error, garbage collection).
The handlers only look at events:

* ConverseStream events are dicts (``messageStart``, ``contentBlockDelta``, ``messageStop``,
  ``metadata``); usage and the guardrail trace are in ``metadata``, the last event.
* InvokeModelWithResponseStream events are ``{"chunk": {"bytes": b"<model JSON>"}}``. Decoding every
  chunk would cost microseconds per event, so a chunk is decoded only when it is the first one (an
  Anthropic ``message_start`` carries the input tokens, a Titan stream may be a single chunk) or when
  its bytes mention ``invocationMetrics`` (the final billed counts, and guardrail traces).

A stream that ends before its usage arrived is recorded with the usage seen so far (Anthropic's input
tokens from ``message_start``) and ``payi.usage.complete = false``.
"""

from __future__ import annotations

import json
from typing import Any

from payi_otel.core import COMPLETED, ERROR, Call
from payi_otel.units import Usage

from ._errors import fail
from ._usage import add_guardrail_units, body_usage, converse_usage, guardrail_trace, mark_large_context

_NO_USAGE_COMPLETED = "stream ended without a usage event"
# Keys of the chunk that carries a stream's final counts: the billed metrics, Nova's metadata, Titan's
# last chunk (its output total).
_FINAL_KEYS = ("amazon-bedrock-invocationMetrics", "metadata", "totalOutputTextTokenCount")


def _tool_call(name: str, arguments: str) -> dict[str, str]:
    return {"name": name, "arguments": arguments}


class _BedrockStream:
    """What both stream kinds share: usage, guardrails, the ending."""

    __slots__ = ("call", "family", "final", "first", "guardrail", "reasons", "tools", "usage")

    def __init__(self, call: Call, model_family: str) -> None:
        self.call = call
        self.family = model_family
        self.first = True
        self.usage: Usage | None = None
        self.final = False  # the usage seen is the provider's final report
        self.guardrail: Any = None
        self.reasons: list[str] = []
        self.tools: dict[int, list[str]] = {}

    def on_end(self, call: Call, outcome: str, error: BaseException | None) -> None:
        rec = call.record
        rec.stream_outcome = outcome
        usage = self.usage
        if self.guardrail is not None:
            if usage is None:
                usage = Usage()
            add_guardrail_units(usage, self.guardrail)
        mark_large_context(usage, self.family)
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


class ConverseStream(_BedrockStream):
    """``converse_stream`` events."""

    __slots__ = ()

    def on_chunk(self, event: Any) -> bool:
        delta = event.get("contentBlockDelta")
        if delta is not None:
            if self.first:
                self.first = False
                self.call.first_token()
            inner = delta.get("delta")
            if inner is not None and "toolUse" in inner:
                slot = self.tools.get(delta.get("contentBlockIndex", 0))
                if slot is not None:
                    slot[1] += inner["toolUse"].get("input") or ""
            return True
        if "metadata" in event:
            metadata = event["metadata"]
            usage = converse_usage(metadata.get("usage"))
            if usage is not None:
                self.usage, self.final = usage, True
            self.guardrail = guardrail_trace(metadata)
        elif "contentBlockStart" in event:
            start = event["contentBlockStart"]
            tool = (start.get("start") or {}).get("toolUse")
            if tool is not None:
                self.tools[start.get("contentBlockIndex", 0)] = [tool.get("name") or "", ""]
        elif "messageStop" in event:
            reason = event["messageStop"].get("stopReason")
            if reason:
                self.reasons.append(reason)
        return True


class InvokeStream(_BedrockStream):
    """``invoke_model_with_response_stream`` chunks (model-native JSON in ``chunk.bytes``)."""

    __slots__ = ()

    def on_chunk(self, event: Any) -> bool:
        chunk = event.get("chunk")
        if chunk is None:
            return True
        data = chunk.get("bytes")
        if self.first:
            self.first = False
            self.call.first_token()
            self._absorb(data)
        elif data is not None and data.rfind(b"nvocationMetrics") >= 0:  # not `in`: bytes.__contains__
            self._absorb(data)  # first tries the needle as an int, a caught TypeError per chunk
        return True

    def _absorb(self, data: Any) -> None:
        try:
            doc = json.loads(data)
        except (TypeError, ValueError):
            return
        if not isinstance(doc, dict):
            return
        if doc.get("type") == "message_start":  # Anthropic: input tokens and the message id, early
            message = doc.get("message") or {}
            if message.get("id"):
                self.call.record.response_model = message.get("model") or None
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


__all__ = ["ConverseStream", "InvokeStream"]
