"""What is wrapped in the anthropic SDK, and what one call means.

Resource-class methods are patched in their defining modules (so every client kind, and the SDK's
``with_raw_response`` / ``with_streaming_response`` wrappers that call them, go through us),
feature-probed: ``messages.create`` (also ``stream=True``), ``messages.parse``, ``messages.stream()``
managers, the same in ``beta.messages`` (and the Bedrock and Vertex copies of it), the prompt-caching beta
of older releases and legacy text completions. ``count_tokens`` is not a billed call and is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from payi_otel.core import ERROR, Call, CallRecord, SpanCore, split_proxy_headers
from payi_otel.instrumentation._long_context import long_context_threshold
from payi_otel.instrumentation._proxy_route import before_provider_call, route_target
from payi_otel.instrumentation._stainless import ClientInfos, RawResponses
from payi_otel.instrumentation._wrapping import Target
from payi_otel.instrumentation.anthropic._streams import (
    AsyncMessageStreamProxy,
    MessageEvents,
    MessageStreamProxy,
)
from payi_otel.instrumentation.anthropic._usage import g, split_vision, tool_calls_of, usage_of
from payi_otel.instrumentation.anthropic._vision import request_image_tokens
from payi_otel.stream import AsyncStreamManagerProxy, AsyncStreamProxy, StreamManagerProxy, StreamProxy

logger = logging.getLogger(__name__)

# (client class names, gen_ai.provider.name, Pay-i category, resource prefix)
_CLIENT_KINDS: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (("AnthropicBedrock", "AsyncAnthropicBedrock", "AnthropicBedrockMantle", "AsyncAnthropicBedrockMantle"),
     "aws.bedrock", "system.aws.bedrock", ""),
    (("AnthropicVertex", "AsyncAnthropicVertex"), "gcp.vertex_ai", "system.google.vertex", "anthropic."),
)  # fmt: skip
_DEFAULT_KIND = ("anthropic", "system.anthropic", "")

_LEGACY_NO_USAGE = "legacy text completions report no token usage"


class ClientInfo:
    __slots__ = ("address", "category", "port", "prefix", "provider", "uri", "url")

    def __init__(self, client: Any, url: Any, kinds: tuple[tuple[tuple[type, ...], tuple[str, str, str]], ...]):
        self.url = url
        self.provider, self.category, self.prefix = _DEFAULT_KIND
        for classes, kind in kinds:
            if isinstance(client, classes):
                self.provider, self.category, self.prefix = kind
                break
        self.address = getattr(url, "host", None) or None
        port = getattr(url, "port", None)
        self.port = port if isinstance(port, int) else None
        self.uri = str(url) if url is not None else None


class State:
    """Configuration and caches shared by the operations of one instrumentation."""

    def __init__(self, core: SpanCore, version: str) -> None:
        import anthropic

        self.core = core
        self.module_tag = f"anthropic/{version}"
        self.raw = RawResponses("anthropic")
        self.stream_types = (anthropic.Stream, anthropic.AsyncStream)
        kinds = []
        for names, provider, category, prefix in _CLIENT_KINDS:
            classes = tuple(c for c in (getattr(anthropic, n, None) for n in names) if isinstance(c, type))
            if classes:
                kinds.append((classes, (provider, category, prefix)))
        self.kinds = client_kinds = tuple(kinds)
        self.client_info = ClientInfos(lambda client, url: ClientInfo(client, url, client_kinds)).get


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Operation:
    """One Anthropic surface: ``chat`` (messages) or ``text_completion`` (legacy completions)."""

    def __init__(self, state: State, operation: str) -> None:
        self.state = state
        self.operation = operation

    # -- request side ---------------------------------------------------------------------------
    def prepare(self, instance: Any, kwargs: dict[str, Any], stream: bool) -> tuple[CallRecord, dict[str, Any], int]:
        """The call's record, the kwargs to send, and the tokens of the request's images (0: none)."""
        state = self.state
        info = state.client_info(getattr(instance, "_client", None))
        model = kwargs.get("model")
        model = model if isinstance(model, str) else None
        layer = None
        headers = kwargs.get("extra_headers")
        if headers:
            layer, remaining = split_proxy_headers(headers)
            if len(remaining) != len(headers):
                kwargs = {**kwargs, "extra_headers": remaining}
        # CallRecord's leading fields, positionally (payi_otel.record.REQUEST_FIELDS)
        rec = CallRecord(info.provider, self.operation, info.category, model, None,
                         f"{info.prefix}{model}" if info.prefix and model else None, None, info.address, info.port,
                         info.uri, state.module_tag, stream)  # fmt: skip
        if layer is not None:
            rec.business_layer = layer
        max_tokens = kwargs.get("max_tokens", kwargs.get("max_tokens_to_sample"))
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            rec.max_tokens = max_tokens
        temperature, top_p = kwargs.get("temperature"), kwargs.get("top_p")
        if temperature is not None:
            rec.temperature = _number(temperature)
        if top_p is not None:
            rec.top_p = _number(top_p)
        messages = kwargs.get("messages")
        if state.core.capture_content:
            prompt = messages if messages is not None else kwargs.get("prompt")
            if isinstance(prompt, (str, list, tuple)):
                rec.input_messages = prompt
        # only the Anthropic API itself can go through the proxy (Bedrock and Vertex clients sign requests)
        kwargs = before_provider_call(rec, kwargs, "anthropic" if info.category == _DEFAULT_KIND[1] else None)
        return rec, kwargs, request_image_tokens(messages) if messages is not None else 0

    def start(self, rec: CallRecord, image_tokens: int) -> Call:
        call = self.state.core.start(rec)
        call.data = image_tokens  # read when the call ends (:func:`_end`)
        return call

    def begin(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Call | None, dict[str, Any]]:
        rec, kwargs, image_tokens = self.prepare(instance, kwargs, kwargs.get("stream") is True)
        return self.start(rec, image_tokens), kwargs

    # -- response side (also the RawReader of raw responses) --------------------------------------
    def finish(self, call: Call, result: Any) -> Any:
        if isinstance(result, self.state.raw.types):
            return self.state.raw.adopt(self, call, result)
        if self.is_stream_result(result):
            response = getattr(result, "response", None)
            call.record.status_code = getattr(response, "status_code", 200)
            return self.wrap_stream(call, result)
        call.record.status_code = 200  # the SDK raises for any other status
        self.read(call.record, result, self.state.core.capture_content)
        self.end(call)
        return result

    def is_stream_result(self, result: Any) -> bool:
        return isinstance(result, self.state.stream_types)

    def wrap_stream(self, call: Call, stream: Any) -> Any:
        handler: Any = MessageEvents(call, _end) if self.operation == "chat" else _CompletionEvents(call)
        return (AsyncStreamProxy if hasattr(stream, "__anext__") else StreamProxy)(stream, call, handler)

    def read(self, rec: CallRecord, result: Any, capture: bool) -> None:
        rec.response_id = g(result, "id") or None
        rec.response_model = g(result, "model") or None
        reason = g(result, "stop_reason")
        if reason:
            rec.finish_reasons = [reason]
        if self.operation != "chat":
            rec.usage_incomplete_reason = _LEGACY_NO_USAGE
            return
        rec.usage = usage_of(g(result, "usage"), long_context_threshold(rec.request_model))
        rec.tool_calls = tool_calls_of(g(result, "content"))
        if capture:
            texts = [g(b, "text") for b in g(result, "content") or () if g(b, "type") == "text"]
            rec.output_messages = [{"role": "assistant", "content": "".join(t for t in texts if t)}]

    def end(self, call: Call) -> None:
        _end(call, None)

    # -- messages.stream() managers ---------------------------------------------------------------
    def manager(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        """Wrapper of ``messages.stream()``: the request is sent when the returned manager is entered."""
        try:
            rec, kwargs, image_tokens = self.prepare(instance, kwargs, True)
        except Exception:
            logger.debug("instrumentation failed before the call; calling through", exc_info=True)
            return wrapped(*args, **kwargs)
        manager = wrapped(*args, **kwargs)
        if hasattr(manager, "__aenter__"):
            return AsyncStreamManagerProxy(manager, lambda: self.start(rec, image_tokens), self._open_async)
        return StreamManagerProxy(manager, lambda: self.start(rec, image_tokens), self._open)

    def _open(self, call: Call, message_stream: Any) -> Any:
        return MessageStreamProxy(message_stream, call, self._manager_events(call, message_stream))

    def _open_async(self, call: Call, message_stream: Any) -> Any:
        return AsyncMessageStreamProxy(message_stream, call, self._manager_events(call, message_stream))

    @staticmethod
    def _manager_events(call: Call, message_stream: Any) -> MessageEvents:
        response = getattr(message_stream, "response", None)
        call.record.status_code = getattr(response, "status_code", 200)
        return MessageEvents(call, _end)


def _end(call: Call, error: BaseException | None) -> None:
    usage = call.record.usage
    if call.data and usage is not None:
        split_vision(usage, call.data)
    if error is not None:
        call.fail(error)
    else:
        call.end()


class _CompletionEvents:
    """Legacy text-completion events: no usage is reported; the first ``completion`` text is the first token."""

    __slots__ = ("call", "reason")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.reason: str | None = None

    def on_chunk(self, event: Any) -> bool:
        if g(event, "completion"):
            self.call.first_token()
        self.reason = g(event, "stop_reason") or self.reason
        return True

    def on_end(self, call: Call, outcome: str, error: BaseException | None) -> None:
        call.record.stream_outcome = outcome
        call.record.usage_incomplete_reason = _LEGACY_NO_USAGE
        if self.reason:
            call.record.finish_reasons = [self.reason]
        _end(call, error if outcome == ERROR else None)


# Messages resources: (module, sync class); the async class is "Async" + the sync name.
_MESSAGES = (
    "anthropic.resources.messages.messages",  # 0.4x+ package layout
    "anthropic.resources.messages",  # 0.40-era module (and the package's re-export)
    "anthropic.resources.beta.messages.messages",
    "anthropic.resources.beta.prompt_caching.messages",  # prompt-caching beta (removed in later releases)
    "anthropic.lib.bedrock._beta_messages",  # copies of the beta methods, bound at class creation
    "anthropic.lib.vertex._beta_messages",
)


def targets(state: State) -> list[Target]:
    rows: list[Target] = []
    chat = Operation(state, "chat")
    for module in _MESSAGES:
        for cls in ("Messages", "AsyncMessages"):
            rows.append(Target(module, cls, "create", chat))
            rows.append(Target(module, cls, "parse", chat))
            rows.append(Target(module, cls, "stream", chat.manager, raw=True))
    legacy = Operation(state, "text_completion")
    for cls in ("Completions", "AsyncCompletions"):
        rows.append(Target("anthropic.resources.completions", cls, "create", legacy))
    rows.extend(state.raw.targets())
    rows.append(route_target("anthropic"))
    return rows


__all__ = ["Operation", "State", "targets"]
