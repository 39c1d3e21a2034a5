"""One Bedrock runtime call: its record before the request, and what the response adds.

:class:`BedrockCalls` is the :class:`~payi_otel.instrumentation._wrapping.Operation` of
``_make_api_call(operation_name, api_params)``: :meth:`begin` builds the :class:`~payi_otel.core.CallRecord`
in the caller's context (business context included), or declines calls that are not Bedrock runtime
inference; :meth:`finish` reads the response (or hands a stream to the stream proxy) and returns what the
caller gets; :meth:`afinish` (aiobotocore) first awaits the ``invoke_model`` body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from payi_otel.core import Call, CallRecord, SpanCore
from payi_otel.enforcement import enabled as enforcement_enabled
from payi_otel.instrumentation._enforce import check_limits, request_size
from payi_otel.instrumentation._long_context import long_context_threshold
from payi_otel.stream import AsyncStreamProxy, StreamProxy
from payi_otel.units import Usage

from ._body import Body, aread_body, read_body
from ._errors import fail
from ._resources import is_embedding_model, resolve
from ._streams import ConverseStream, InvokeStream
from ._usage import (
    add_guardrail_units,
    body_usage,
    converse_usage,
    guardrail_trace,
    header_usage,
    mark_large_context,
)

logger = logging.getLogger(__name__)

PROVIDER = "aws.bedrock"
CATEGORY = "system.aws.bedrock"
SERVICE = "bedrock-runtime"

CONVERSE = "Converse"
CONVERSE_STREAM = "ConverseStream"
INVOKE = "InvokeModel"
INVOKE_STREAM = "InvokeModelWithResponseStream"
OPERATIONS = frozenset({CONVERSE, CONVERSE_STREAM, INVOKE, INVOKE_STREAM})

_NO_USAGE = "Bedrock reported no token counts (no X-Amzn-Bedrock-*-Token-Count headers, none in the body)"


# The request side every call of one client, model and operation shares: CallRecord's leading fields
# (payi_otel.record.REQUEST_FIELDS), passed positionally.


class _Request:
    """What a call of ``operation`` on ``model`` through ``url`` knows before its parameters are read."""

    __slots__ = ("embeddings", "fields", "operation", "threshold")

    def __init__(self, url: str | None, model: str | None, operation: str, module_tag: str) -> None:
        resource, scope = resolve(model) if model else (None, None)
        self.operation = operation
        self.embeddings = operation == INVOKE and resource is not None and is_embedding_model(resource)
        self.threshold = long_context_threshold(resource)  # input tokens above which the prompt is large
        parts = urlsplit(url) if url else None
        self.fields = (PROVIDER, "embeddings" if self.embeddings else "chat", CATEGORY, model, None, resource, scope,
                       parts.hostname if parts else None, parts.port if parts else None, url, module_tag,
                       operation in (CONVERSE_STREAM, INVOKE_STREAM))  # fmt: skip


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _scrub(value: Any) -> Any:
    """Request content fit for a span: binary parts (images, documents) become a size note."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    if hasattr(value, "read"):  # a file-like body: never consumed for telemetry
        return "<stream>"
    return value


def _tool_call(name: Any, arguments: Any) -> dict[str, str]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, separators=(",", ":"), default=str)
    return {"name": str(name or ""), "arguments": args}


def _message_tools(content: Any) -> list[dict[str, str]]:
    """Tool uses of a Converse / Nova message (``toolUse``) or an Anthropic message (``tool_use``)."""
    tools = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        use = block.get("toolUse")
        if isinstance(use, dict):
            tools.append(_tool_call(use.get("name"), use.get("input")))
        elif block.get("type") == "tool_use":
            tools.append(_tool_call(block.get("name"), block.get("input")))
    return tools


def _invoke_reasons(doc: dict[str, Any]) -> list[str]:
    for key in ("stop_reason", "stopReason", "finish_reason", "completionReason"):
        value = doc.get(key)
        if isinstance(value, str):
            return [value]
    reasons = []
    for key, field in (("results", "completionReason"), ("generations", "finish_reason"),
                       ("outputs", "stop_reason"), ("choices", "finish_reason")):  # fmt: skip
        for item in doc.get(key) or ():
            if isinstance(item, dict) and isinstance(item.get(field), str):
                reasons.append(item[field])
    return reasons


# Where an InvokeModel body bounds its output tokens, per model family (Anthropic / Mistral / Cohere,
# Llama, AI21 / Cohere Command, Titan, Nova).
_INVOKE_OUTPUT_KEYS = (("max_tokens",), ("max_gen_len",), ("maxTokens",), ("textGenerationConfig", "maxTokenCount"),
                       ("inferenceConfig", "max_new_tokens"))  # fmt: skip


def _invoke_document(params: Mapping[str, Any]) -> Any:
    body = params.get("body")
    if isinstance(body, (bytes, bytearray, str)):
        try:
            return json.loads(body)
        except ValueError:
            return None
    return None


def _input_bound(params: Mapping[str, Any]) -> int:
    """An upper bound of the input tokens: the request's size in bytes (an InvokeModel body as sent)."""
    body = params.get("body")
    if isinstance(body, (bytes, bytearray)):
        return len(body)
    if isinstance(body, str):
        return len(body.encode())
    return request_size({k: v for k, v in params.items() if k != "modelId"})


def _output_bound(operation: str, params: Mapping[str, Any]) -> int | None:
    """The output tokens the request allows (None: it sets no bound)."""
    converse = operation in (CONVERSE, CONVERSE_STREAM)
    document: Any = params if converse else _invoke_document(params)
    for path in (("inferenceConfig", "maxTokens"),) if converse else _INVOKE_OUTPUT_KEYS:
        value = document
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


class BedrockCalls:
    """Configuration shared by every instrumented Bedrock runtime client."""

    def __init__(self, core: SpanCore, module_tag: str) -> None:
        self.core = core
        self.module_tag = module_tag
        # (endpoint url, model id, operation) -> the request side those calls share (emptied when full)
        self._requests: dict[tuple[str | None, str | None, str], _Request] = {}
        # botocore client class -> whether it is a bedrock-runtime client. botocore makes a class per client
        # for one service model, so the class decides it: one dictionary lookup per call instead of three
        # properties (emptied when full: a process that makes a client per request keeps the fast path).
        self._runtime_classes: dict[type, bool] = {}

    # -- request side ---------------------------------------------------------------------------
    def begin(self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Call | None, dict[str, Any]]:
        """The call's span, or None when this is not a Bedrock runtime inference call."""
        if len(args) >= 2:
            operation, params = args[0], args[1]
        else:
            operation, params = kwargs.get("operation_name", args[0] if args else None), kwargs.get("api_params")
        if operation not in OPERATIONS or not isinstance(params, dict):
            return None, kwargs  # another operation: one set lookup
        runtime = self._runtime_classes.get(type(client))
        if runtime is None:
            runtime = client.meta.service_model.service_name == SERVICE
            if len(self._runtime_classes) >= 256:
                self._runtime_classes.clear()
            self._runtime_classes[type(client)] = runtime
        if not runtime:
            return None, kwargs
        return self._start(client, operation, params), kwargs

    def _start(self, client: Any, operation: str, params: Mapping[str, Any]) -> Call:
        model = params.get("modelId")
        model = model if isinstance(model, str) else None
        key = (getattr(client.meta, "endpoint_url", None), model, operation)
        request = self._requests.get(key)
        if request is None:
            request = _Request(key[0], model, operation, self.module_tag)
            if len(self._requests) >= 256:
                self._requests.clear()
            self._requests[key] = request
        rec = CallRecord(*request.fields)
        config = params.get("inferenceConfig")
        if isinstance(config, dict):
            max_tokens = config.get("maxTokens")
            if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
                rec.max_tokens = max_tokens
            rec.temperature = _number(config.get("temperature"))
            rec.top_p = _number(config.get("topP"))
        if enforcement_enabled():  # the bounds' closure only when limits are enforced
            embeddings = request.embeddings
            check_limits(rec, lambda: (_input_bound(params), 0 if embeddings else _output_bound(operation, params)))
        if self.core.capture_content:
            if operation in (CONVERSE, CONVERSE_STREAM):
                rec.input_messages = _scrub({"system": params.get("system"), "messages": params.get("messages")})
            else:
                body = params.get("body")
                rec.input_messages = body.decode("utf-8", "replace") if isinstance(body, bytes) else _scrub(body)
        call = self.core.start(rec)
        call.data = request
        return call

    # -- response side --------------------------------------------------------------------------
    async def afinish(self, call: Call, result: Any) -> Any:
        """aiobotocore: an ``invoke_model`` body can only be read by awaiting, so read it first."""
        body = await aread_body(result) if call.data.operation == INVOKE and isinstance(result, dict) else None
        return self.finish(call, result, body)

    def finish(self, call: Call, result: Any, body: Body | None = None) -> Any:
        """``body``: the invoke_model body already read (async clients read it before)."""
        rec = call.record
        meta = result.get("ResponseMetadata") or {}
        rec.status_code = meta.get("HTTPStatusCode", 200)
        rec.response_id = meta.get("RequestId") or None
        request: _Request = call.data
        operation = request.operation
        if operation == CONVERSE:
            self._converse(call, request, result)
        elif operation == INVOKE:
            self._invoke(call, request, result, meta.get("HTTPHeaders"), body)
        else:
            key = "stream" if operation == CONVERSE_STREAM else "body"
            stream = result.get(key)
            if stream is None:
                call.end()
                return result
            handler_cls = ConverseStream if operation == CONVERSE_STREAM else InvokeStream
            proxy_cls = AsyncStreamProxy if hasattr(stream, "__anext__") else StreamProxy
            result[key] = proxy_cls(stream, call, handler_cls(call, rec.resource))
        return result

    def _converse(self, call: Call, request: _Request, result: dict[str, Any]) -> None:
        rec = call.record
        usage = converse_usage(result.get("usage"))
        if "trace" in result:  # guardrails ran (or a trace was asked for)
            usage = _with_guardrails(usage, guardrail_trace(result))
        rec.usage = usage
        mark_large_context(usage, request.threshold)
        reason = result.get("stopReason")
        if isinstance(reason, str):
            rec.finish_reasons = [reason]
        message = (result.get("output") or {}).get("message") or {}
        rec.tool_calls = _message_tools(message.get("content")) or None
        if self.core.capture_content:
            rec.output_messages = [_scrub(message)]
        call.end()

    def _invoke(self, call: Call, request: _Request, result: dict[str, Any], headers: Any, body: Body | None) -> None:
        rec = call.record
        data, error = body if body is not None else read_body(result)
        doc: Any = None
        if data[:1] == b"{":
            try:
                doc = json.loads(data)
            except ValueError:
                doc = None
        usage = header_usage(headers if isinstance(headers, Mapping) else None)
        if usage is None:
            usage = body_usage(doc)
        rec.usage = _with_guardrails(usage, guardrail_trace(doc))
        mark_large_context(rec.usage, request.threshold)
        if rec.usage is None or not rec.usage.reported:
            rec.usage_incomplete_reason = _NO_USAGE
        if isinstance(doc, dict):
            rec.response_model = doc.get("model") if isinstance(doc.get("model"), str) else None
            rec.finish_reasons = _invoke_reasons(doc) or None
            content = doc.get("content")
            if content is None:
                content = ((doc.get("output") or {}).get("message") or {}).get("content")
            rec.tool_calls = _message_tools(content) or None
        if call.capture_content:
            rec.output_messages = [data.decode("utf-8", "replace")]
        if error is not None:
            fail(call, error)
        else:
            call.end()


def _with_guardrails(usage: Usage | None, guardrail: Any) -> Usage | None:
    if guardrail is None:
        return usage
    target = usage if usage is not None else Usage()
    return target if add_guardrail_units(target, guardrail) or usage is not None else None


__all__ = ["OPERATIONS", "BedrockCalls"]
