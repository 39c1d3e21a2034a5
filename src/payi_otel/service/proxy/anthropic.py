"""Anthropic through the proxy: ``/v1/messages``, streamed or not."""

from __future__ import annotations

from typing import Any

from payi_otel.instrumentation.anthropic._usage import delta_usage, g, usage_of
from payi_otel.service.proxy.base import (
    CallResult,
    ProxiedCall,
    estimate_input_tokens,
    model_of,
    positive_int,
    wants_stream,
)


class _StreamReader:
    def __init__(self, call: ProxiedCall) -> None:
        self.result = CallResult(model=call.model)

    def feed(self, event: str | None, data: Any) -> bool:
        if not isinstance(data, dict):
            return False
        kind = data.get("type") or event
        if kind == "message_start":
            message = data.get("message")
            model, rid = g(message, "model"), g(message, "id")
            self.result.model = model if isinstance(model, str) else self.result.model
            self.result.response_id = rid if isinstance(rid, str) else None
            self.result.usage = usage_of(g(message, "usage"))
        elif kind == "message_delta":
            self.result.usage = delta_usage(self.result.usage, data.get("usage"))
        return kind == "message_stop"


class AnthropicProvider:
    name = "anthropic"
    category = "system.anthropic"

    def call(self, path: str, body: Any, size: int) -> ProxiedCall | None:
        if path != "v1/messages" or not isinstance(body, dict):
            return None
        return ProxiedCall(
            category=self.category,
            operation="messages",
            model=model_of(body),
            stream=wants_stream(body),
            input_bound=estimate_input_tokens(size),
            output_bound=positive_int(body.get("max_tokens")),
        )

    def result(self, call: ProxiedCall, body: Any) -> CallResult:
        model, rid = g(body, "model"), g(body, "id")
        return CallResult(
            model=model if isinstance(model, str) else call.model,
            response_id=rid if isinstance(rid, str) else None,
            usage=usage_of(g(body, "usage")),
        )

    def stream_reader(self, call: ProxiedCall) -> _StreamReader:
        return _StreamReader(call)

    def is_stream_end(self, data: bytes) -> bool:
        return False
