"""One wrapped OpenAI surface: begin (request side, span start) and finish (result, stream or raw response)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from payi_otel.core import Call, CallRecord, SpanCore, split_proxy_headers
from payi_otel.instrumentation._proxy_route import before_provider_call
from payi_otel.instrumentation._stainless import ClientInfos, RawResponses
from payi_otel.messages import Message
from payi_otel.stream import AsyncStreamProxy, StreamProxy
from payi_otel.units import Usage

from ._content import system_instructions, text_input
from ._request import (
    PROVIDER_AZURE,
    ClientInfo,
    call_is_stream,
    request_params,
    with_include_usage,
)
from ._results import end_call
from ._streams import ChatStream, CompletionStream, ResponsesStream, UsageStream
from ._usage import chat_usage

logger = logging.getLogger(__name__)


class State:
    """Configuration and caches shared by the operations of one instrumentation."""

    def __init__(self, core: SpanCore, azure_deployments: dict[str, str], inject_stream_usage: bool, version: str):
        self.core = core
        self.azure_deployments = azure_deployments
        self.inject_stream_usage = inject_stream_usage
        self.module_tag = f"openai/{version}"
        self.raw = RawResponses("openai")
        self.client_info = ClientInfos(ClientInfo).get


class OpenAIOperation:
    """One OpenAI surface: its GenAI operation name, usage reader and stream reader."""

    def __init__(
        self,
        state: State,
        operation: str,
        read: Callable[[CallRecord, Any, bool], None],
        stream_kind: str | None,
        input_key: str | None,
        is_async: bool,
        stream_usage: Callable[[Any], Usage | None] | None = None,
        content_in: Callable[[Any], list[Message] | None] = text_input,
    ) -> None:
        self.state = state
        self.operation = operation
        self.read = read
        self.stream_kind = stream_kind  # "chat"/"completions" (include_usage applies), "responses", "events", None
        self.input_key = input_key
        self.is_async = is_async
        self.stream_usage = stream_usage
        self.content_in = content_in  # request content -> input messages (only with capture on)

    def begin(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Call | None, dict[str, Any]]:
        state = self.state
        info = state.client_info(getattr(instance, "_client", None))
        model = kwargs.get("model")
        if not isinstance(model, str):
            model = info.deployment
        stream = kwargs.get("stream") is True
        layer = None
        headers = kwargs.get("extra_headers")
        if headers:
            layer, remaining = split_proxy_headers(headers)
            if len(remaining) != len(headers):
                kwargs = {**kwargs, "extra_headers": remaining}
        hide = False
        if (
            stream
            and self.stream_kind in ("chat", "completions")
            and state.inject_stream_usage
            and (info.accepts_stream_options)
        ):
            kwargs, hide = with_include_usage(kwargs)
        # CallRecord's leading fields, positionally (payi_otel.record.REQUEST_FIELDS)
        rec = CallRecord(info.provider, self.operation, info.category, model, None, None, None, info.address,
                         info.port, info.uri, state.module_tag, stream)  # fmt: skip
        if layer is not None:
            rec.business_layer = layer
        if info.provider == PROVIDER_AZURE and state.azure_deployments:
            rec.resource = state.azure_deployments.get(model or "") or state.azure_deployments.get(
                info.deployment or ""
            )
        request_params(rec, kwargs)
        kwargs = before_provider_call(rec, kwargs, "azure.openai" if info.provider == PROVIDER_AZURE else "openai")
        core = state.core
        if core.capture_content and self.input_key is not None:
            rec.input_messages = self.content_in(kwargs.get(self.input_key))
            if self.stream_kind == "responses":
                rec.system_instructions = system_instructions(kwargs.get("instructions"))
        call = core.start(rec)
        call.data = hide
        return call, kwargs

    def finish(self, call: Call, result: Any) -> Any:
        if isinstance(result, self.state.raw.types):
            return self.state.raw.adopt(self, call, result)
        if self.is_stream_result(result):
            response = getattr(result, "response", None)
            call.record.status_code = getattr(response, "status_code", 200)
            return self.wrap_stream(call, result)
        rec = call.record
        rec.status_code = 200  # the SDK raises for any other status
        self.read(rec, result, self.state.core.capture_content)
        end_call(call)
        return result

    def is_stream_result(self, result: Any) -> bool:
        return self.stream_kind is not None and call_is_stream(result)

    def wrap_stream(self, call: Call, stream: Any) -> Any:
        if self.stream_kind == "chat":
            handler: Any = ChatStream(call, bool(call.data))
        elif self.stream_kind == "completions":
            handler = CompletionStream(call, bool(call.data))
        elif self.stream_kind == "responses":
            handler = ResponsesStream(call)
        else:
            handler = UsageStream(call, self.stream_usage or chat_usage)
        proxy_cls = AsyncStreamProxy if hasattr(stream, "__anext__") else StreamProxy
        return proxy_cls(stream, call, handler)

    def end(self, call: Call) -> None:
        end_call(call)
