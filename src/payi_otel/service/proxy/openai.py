"""OpenAI and Azure OpenAI through the proxy: chat completions, Responses, embeddings, image generation."""

from __future__ import annotations

import re
from typing import Any

from payi_otel.instrumentation.openai._usage import chat_usage, embedding_usage, image_usage, pick, responses_usage
from payi_otel.service.proxy.base import (
    CallResult,
    ProxiedCall,
    estimate_input_tokens,
    model_of,
    positive_int,
    wants_stream,
)
from payi_otel.units import Usage

_OPERATIONS = {
    "chat/completions": "chat",
    "responses": "responses",
    "embeddings": "embeddings",
    "images/generations": "images",
}
# Paths below the provider's base: OpenAI ``v1/<api>``; Azure ``openai/deployments/<deployment>/<api>``
# or ``openai/v1/<api>``.
_OPENAI_PATH = re.compile(r"^v1/(?P<api>chat/completions|responses|embeddings|images/generations)$")
_AZURE_PATH = re.compile(
    r"^openai/(?:deployments/(?P<deployment>[A-Za-z0-9._-]{1,64})|v1)/"
    r"(?P<api>chat/completions|responses|embeddings|images/generations)$"
)
_FINAL_RESPONSE_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _output_bound(operation: str, body: dict[str, Any]) -> int | None:
    if operation == "chat":
        per_choice = positive_int(body.get("max_completion_tokens")) or positive_int(body.get("max_tokens"))
        return None if per_choice is None else per_choice * (positive_int(body.get("n")) or 1)
    if operation == "responses":
        return positive_int(body.get("max_output_tokens"))
    if operation == "embeddings":
        return 0
    return None


def _result(operation: str, body: Any) -> CallResult:
    usage_obj = pick(body, "usage")
    usage: Usage | None
    if operation == "chat":
        usage = chat_usage(usage_obj)
    elif operation == "responses":
        usage = responses_usage(usage_obj)
    elif operation == "embeddings":
        usage = embedding_usage(usage_obj)
    else:
        usage = image_usage(usage_obj)
        data = pick(body, "data")
        if usage is None and isinstance(data, list):
            usage = Usage(images=len(data))
    model, rid = pick(body, "model"), pick(body, "id")
    return CallResult(
        model=model if isinstance(model, str) else None, response_id=rid if isinstance(rid, str) else None, usage=usage
    )


class _StreamReader:
    def __init__(self, call: ProxiedCall) -> None:
        self.call = call
        self.result = CallResult(model=call.model)

    def feed(self, event: str | None, data: Any) -> bool:
        if not isinstance(data, dict):
            return False
        if self.call.operation == "responses":
            kind = data.get("type") or event
            response = data.get("response")
            if isinstance(response, dict):
                read = _result("responses", response)
                self.result.model = read.model or self.result.model
                self.result.response_id = read.response_id or self.result.response_id
                self.result.usage = read.usage or self.result.usage
            return kind in _FINAL_RESPONSE_EVENTS
        model, rid = data.get("model"), data.get("id")
        if isinstance(model, str):
            self.result.model = model
        if isinstance(rid, str):
            self.result.response_id = rid
        usage = chat_usage(data.get("usage"))
        if usage is not None:
            self.result.usage = usage
            return True  # the usage chunk (stream_options.include_usage) ends the stream
        choices = data.get("choices")
        # a finish_reason chunk is the last one when no usage chunk follows
        return isinstance(choices, list) and any(isinstance(c, dict) and c.get("finish_reason") for c in choices)


class OpenAIProvider:
    """``/api/v1/proxy/openai/v1/...`` (``azure=False``) or ``/api/v1/proxy/azure.openai/openai/...``."""

    def __init__(self, *, azure: bool) -> None:
        self.azure = azure
        self.name = "azure.openai" if azure else "openai"
        self.category = "system.azureopenai" if azure else "system.openai"
        self._path = _AZURE_PATH if azure else _OPENAI_PATH

    def call(self, path: str, body: Any, size: int) -> ProxiedCall | None:
        match = self._path.match(path)
        if match is None or not isinstance(body, dict):
            return None
        operation = _OPERATIONS[match.group("api")]
        deployment = match.groupdict().get("deployment")
        return ProxiedCall(
            category=self.category,
            operation=operation,
            model=model_of(body) or deployment,
            stream=wants_stream(body),
            input_bound=estimate_input_tokens(size),
            output_bound=_output_bound(operation, body),
        )

    def result(self, call: ProxiedCall, body: Any) -> CallResult:
        read = _result(call.operation, body)
        read.model = read.model or call.model
        return read

    def stream_reader(self, call: ProxiedCall) -> _StreamReader:
        return _StreamReader(call)

    def is_stream_end(self, data: bytes) -> bool:
        return data.strip() == b"[DONE]"
