"""OpenAI and Azure OpenAI instrumentation (openai 1.30 through 3.x).

What is wrapped is the table in :func:`_targets`: resource-class methods patched in their defining
modules (so every client, and the SDK's ``with_raw_response`` / ``with_streaming_response`` wrappers
that call them, go through us), feature-probed and version-bounded. What a call means is described
by an :class:`_Operation` (operation name, where usage lives, how a stream is read); the span itself
belongs to :mod:`payi_otel.core`.

Units (through :func:`payi_otel.units.to_units`):

* chat / legacy completions / Responses: ``text.input`` = prompt - cached - cache writes - audio in;
  ``text_cache_read.input`` = cached; ``text_cache_write.input`` = cache writes;
  ``text.output`` = completion - reasoning - audio out; ``reasoning.output``; ``audio.input/output``.
* embeddings: ``text.input`` = prompt tokens.
* images: token-billed models (usage reported) -> ``text.input`` (prompt text tokens),
  ``vision.input`` (input image tokens), ``vision.output`` (generated image tokens);
  per-image models (no usage) -> ``image.output`` = number of images returned.
* audio transcriptions/translations: token usage -> ``audio.input`` (+ ``text.input``/``text.output``);
  duration-billed results and speech report no tokens and are marked ``payi.usage.complete=false``.
"""

from __future__ import annotations

import inspect
import logging
import os
import weakref
from typing import Any, Callable, Collection, Mapping

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from payi_otel.core import COMPLETED, ERROR, Call, CallRecord, SpanCore, split_proxy_headers
from payi_otel.instrumentation._stainless import error_info
from payi_otel.instrumentation._wrapping import Target, WrapSet
from payi_otel.settings import parse_bool
from payi_otel.stream import AsyncStreamProxy, StreamProxy
from payi_otel.units import Usage

logger = logging.getLogger(__name__)

_instruments = ("openai >= 1.30, < 4",)  # the oldest release the test matrix has passed on

PROVIDER_OPENAI = "openai"
PROVIDER_AZURE = "azure.ai.openai"
CATEGORY_OPENAI = "system.openai"
CATEGORY_AZURE = "system.azureopenai"

ENV_AZURE_DEPLOYMENTS = "PAYI_AZURE_DEPLOYMENTS"
ENV_INJECT_STREAM_USAGE = "PAYI_OPENAI_INJECT_STREAM_USAGE"

_NO_USAGE_IN_STREAM = "no usage in stream (stream_options.include_usage was not requested)"
_NOT_GIVEN_NAMES = frozenset({"NotGiven", "Omit"})


# --- configuration --------------------------------------------------------------------------
def parse_azure_deployments(value: str, source: str = ENV_AZURE_DEPLOYMENTS) -> dict[str, str]:
    """Parse ``"dep=model,dep2=model2"``; raises ValueError naming ``source`` and the rule."""
    mapping: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        dep, sep, model = item.partition("=")
        if not sep or not dep.strip() or not model.strip():
            raise ValueError(
                f"{source}: entry {item!r} is invalid; expected comma-separated 'deployment=model' pairs, "
                "e.g. 'my-gpt4o=gpt-4o,embed=text-embedding-3-small'"
            )
        mapping[dep.strip()] = model.strip()
    return mapping


def _env_setting(name: str, parse: Callable[[str], Any], default: Any) -> Any:
    """An environment setting; a bad value is logged (naming the variable and the rule) and the default
    used, so that a typo never turns the instrumentation off under ``opentelemetry-instrument``."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        logger.error("%s; using the default (%r)", exc, default)
        return default


def _azure_mapping(value: Any) -> dict[str, str]:
    if value is None:
        return _env_setting(ENV_AZURE_DEPLOYMENTS, parse_azure_deployments, {})
    if isinstance(value, str):
        return parse_azure_deployments(value, "azure_deployments")
    if isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    raise ValueError("azure_deployments: must be a mapping of deployment name to model name (str -> str)")


def _given(value: Any) -> bool:
    return value is not None and type(value).__name__ not in _NOT_GIVEN_NAMES


def _g(obj: Any, name: str) -> Any:
    """Attribute or key access, for SDK models and plain dicts alike."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


# --- usage extractors -------------------------------------------------------------------------
def _chat_usage(u: Any) -> Usage | None:
    """Chat completions / legacy completions / embeddings usage (prompt_tokens, completion_tokens)."""
    if u is None:
        return None
    if isinstance(u, dict):
        prompt, completion = u.get("prompt_tokens"), u.get("completion_tokens")
        ptd, ctd = u.get("prompt_tokens_details"), u.get("completion_tokens_details")
    else:  # SDK model: plain attribute reads
        prompt, completion = getattr(u, "prompt_tokens", None), getattr(u, "completion_tokens", None)
        ptd, ctd = getattr(u, "prompt_tokens_details", None), getattr(u, "completion_tokens_details", None)
    usage = Usage(input_tokens=prompt, output_tokens=completion if completion is not None else 0)
    if ptd is not None:
        usage.cache_read_tokens = _int(_g(ptd, "cached_tokens"))
        usage.cache_write_tokens = _int(_g(ptd, "cache_write_tokens"))
        usage.input_audio_tokens = _int(_g(ptd, "audio_tokens"))
    if ctd is not None:
        usage.reasoning_tokens = _int(_g(ctd, "reasoning_tokens"))
        usage.output_audio_tokens = _int(_g(ctd, "audio_tokens"))
    return usage


def _responses_usage(u: Any) -> Usage | None:
    """Responses API usage (input_tokens, output_tokens, *_details)."""
    if u is None:
        return None
    itd = _g(u, "input_tokens_details")
    otd = _g(u, "output_tokens_details")
    return Usage(
        input_tokens=_g(u, "input_tokens"),
        output_tokens=_g(u, "output_tokens"),
        cache_read_tokens=_int(_g(itd, "cached_tokens")),
        cache_write_tokens=_int(_g(itd, "cache_write_tokens")),
        reasoning_tokens=_int(_g(otd, "reasoning_tokens")),
    )


def _image_usage(u: Any) -> Usage | None:
    """gpt-image usage: input text + image tokens, output image tokens."""
    if u is None:
        return None
    itd = _g(u, "input_tokens_details")
    out = _int(_g(u, "output_tokens"))
    return Usage(
        input_tokens=_g(u, "input_tokens"),
        output_tokens=out,
        input_image_tokens=_int(_g(itd, "image_tokens")),
        output_image_tokens=out,
    )


def _audio_usage(u: Any) -> Usage | None:
    """Transcription usage; only the token-billed kind has tokens (``type == "tokens"``)."""
    if u is None or _g(u, "input_tokens") is None:
        return None
    itd = _g(u, "input_token_details")
    return Usage(
        input_tokens=_g(u, "input_tokens"),
        output_tokens=_g(u, "output_tokens"),
        input_audio_tokens=_int(_g(itd, "audio_tokens")),
    )


def _embedding_usage(u: Any) -> Usage | None:
    if u is None:
        return None
    return Usage(input_tokens=_g(u, "prompt_tokens"), output_tokens=0)


# --- result readers (non-streamed) -----------------------------------------------------------
def _tool_call(name: Any, arguments: Any) -> dict[str, str]:
    return {"name": name or "", "arguments": arguments if isinstance(arguments, str) else str(arguments or "")}


def _read_chat(rec: CallRecord, result: Any, capture: bool) -> None:
    """Chat completions and legacy completions (SDK objects)."""
    rec.response_id = getattr(result, "id", None) or None
    rec.response_model = getattr(result, "model", None) or None
    rec.usage = _chat_usage(getattr(result, "usage", None))
    reasons: list[str] = []
    tools: list[dict[str, str]] = []
    outputs: list[dict[str, Any]] = []
    for choice in getattr(result, "choices", None) or ():
        reason = choice.finish_reason
        if reason:
            reasons.append(reason)
        message = getattr(choice, "message", None)
        if message is not None:
            for tc in getattr(message, "tool_calls", None) or ():  # absent before openai 1.26
                fn = getattr(tc, "function", None)
                if fn is not None:
                    tools.append(_tool_call(fn.name, fn.arguments))
            fc = getattr(message, "function_call", None)
            if fc is not None:
                tools.append(_tool_call(fc.name, fc.arguments))
        if capture:
            text = getattr(choice, "text", None)  # legacy completions
            content = _g(message, "content") if message is not None else text
            outputs.append({"role": "assistant", "content": content, "finish_reason": reason})
    rec.finish_reasons = reasons or None
    rec.tool_calls = tools or None
    if capture:
        rec.output_messages = outputs


def _read_responses(rec: CallRecord, result: Any, capture: bool) -> None:
    rec.response_id = _g(result, "id") or None
    rec.response_model = _g(result, "model") or None
    rec.usage = _responses_usage(_g(result, "usage"))
    status = _g(result, "status")
    if status == "incomplete":
        reason = _g(_g(result, "incomplete_details"), "reason")
        rec.finish_reasons = [reason or "incomplete"]
    elif status:
        rec.finish_reasons = [status]
    tools = []
    for item in _g(result, "output") or ():
        if _g(item, "type") == "function_call":
            tools.append(_tool_call(_g(item, "name"), _g(item, "arguments")))
    rec.tool_calls = tools or None
    if capture:
        text = getattr(result, "output_text", None)
        rec.output_messages = [{"role": "assistant", "content": text}]


def _read_embeddings(rec: CallRecord, result: Any, capture: bool) -> None:
    rec.response_model = _g(result, "model") or None
    rec.usage = _embedding_usage(_g(result, "usage"))


def _read_images(rec: CallRecord, result: Any, capture: bool) -> None:
    usage = _image_usage(_g(result, "usage"))
    if usage is None:
        data = _g(result, "data")
        if data is not None:
            usage = Usage(images=len(data))
    rec.usage = usage


def _read_audio(rec: CallRecord, result: Any, capture: bool) -> None:
    usage_obj = _g(result, "usage")
    rec.usage = _audio_usage(usage_obj)
    if rec.usage is None:
        seconds = _g(usage_obj, "seconds")
        rec.usage_incomplete_reason = (
            f"duration-billed audio ({seconds} s); no token usage reported"
            if seconds is not None
            else "provider reports no usage for this operation"
        )
    if capture and isinstance(_g(result, "text"), str):
        rec.output_messages = [{"role": "assistant", "content": _g(result, "text")}]


# --- stream handlers ------------------------------------------------------------------------
class _StreamEnd:
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
                self._missing_reason() if outcome == COMPLETED else f"stream ended before usage was reported ({outcome})"
            )
        _end(call, error if outcome == ERROR else None)

    def _fill(self, rec: CallRecord) -> None:
        pass

    def _missing_reason(self) -> str:
        return "no usage in stream"


class _ChatStream(_StreamEnd):
    """chat.completions and legacy completions chunks; assembles tool calls by index (0 included)."""

    __slots__ = ("hide_usage_chunk", "capture", "first", "reasons", "tools", "texts", "rec")

    def __init__(self, call: Call, hide_usage_chunk: bool) -> None:
        super().__init__(call)
        self.rec = call.record
        self.hide_usage_chunk = hide_usage_chunk
        self.capture = call.capture_content
        self.first = True
        self.reasons: dict[int, str] = {}
        self.tools: dict[tuple[int, int], list[str]] = {}
        self.texts: dict[int, list[str]] = {}

    def _head(self, chunk: Any) -> bool:
        """Id, model and usage of a chunk; False for the usage-only chunk the caller did not ask for."""
        if self.first and chunk.id:
            self.first = False
            self.rec.response_id = chunk.id
            self.rec.response_model = chunk.model or None
        usage = getattr(chunk, "usage", None)  # absent before openai 1.26
        if usage is not None:
            self.usage = _chat_usage(usage)
            if self.hide_usage_chunk and not chunk.choices:
                return False
        return True

    def on_chunk(self, chunk: Any) -> bool:
        if not self._head(chunk):
            return False
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                self.reasons[choice.index] = choice.finish_reason
            delta = choice.delta
            if getattr(delta, "tool_calls", None):
                self._tool_deltas(choice.index, delta.tool_calls)
                self.call.first_token()
            if getattr(delta, "function_call", None) is not None:
                self._function_delta(choice.index, delta.function_call)
                self.call.first_token()
            if delta.content:
                self.call.first_token()  # the role-only first chunk is not a token
                if self.capture:
                    self.texts.setdefault(choice.index, []).append(delta.content)
        return True

    def _tool_deltas(self, choice_index: int, tool_calls: Any) -> None:
        for tc in tool_calls:
            slot = self.tools.get((choice_index, tc.index))
            if slot is None:
                slot = self.tools[(choice_index, tc.index)] = ["", ""]
            fn = tc.function
            if fn is not None:
                if fn.name:
                    slot[0] += fn.name
                if fn.arguments:
                    slot[1] += fn.arguments

    def _function_delta(self, choice_index: int, fc: Any) -> None:
        slot = self.tools.setdefault((choice_index, -1), ["", ""])
        if fc.name:
            slot[0] += fc.name
        if fc.arguments:
            slot[1] += fc.arguments

    def _fill(self, rec: CallRecord) -> None:
        if self.reasons:
            rec.finish_reasons = [self.reasons[i] for i in sorted(self.reasons)]
        if self.tools:
            rec.tool_calls = [_tool_call(n, a) for _, (n, a) in sorted(self.tools.items())]
        if self.capture:
            rec.output_messages = [
                {"role": "assistant", "content": "".join(parts), "finish_reason": self.reasons.get(i)}
                for i, parts in sorted(self.texts.items())
            ]

    def _missing_reason(self) -> str:
        return _NO_USAGE_IN_STREAM


class _CompletionStream(_ChatStream):
    """Legacy completions chunks: choices carry ``text`` instead of a delta."""

    __slots__ = ()

    def on_chunk(self, chunk: Any) -> bool:
        if not self._head(chunk):
            return False
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                self.reasons[choice.index] = choice.finish_reason
            if choice.text:
                self.call.first_token()
                if self.capture:
                    self.texts.setdefault(choice.index, []).append(choice.text)
        return True


_RESPONSE_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class _ResponsesStream(_StreamEnd):
    """Responses API events: the terminal event carries the full response, usage included."""

    __slots__ = ("rec", "capture")

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
            _read_responses(self.rec, response, self.capture)
            self.usage = self.rec.usage
        elif etype == "response.created":
            response = event.response
            self.rec.response_id = _g(response, "id") or None
            self.rec.response_model = _g(response, "model") or None
        return True


class _UsageStream(_StreamEnd):
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


def _end(call: Call, error: BaseException | None = None) -> None:
    rec = call.record
    if rec.provider == PROVIDER_AZURE and rec.resource is None:
        rec.resource = rec.response_model
    if error is not None:
        call.fail(error)
    else:
        call.end()


# --- raw responses (with_raw_response / with_streaming_response) -----------------------------
class _RawPending:
    """A raw response whose body has not been read yet: ends the span when it is parsed or closed."""

    __slots__ = ("op", "call", "proxy", "__weakref__")

    def __init__(self, op: "_Operation", call: Call) -> None:
        self.op = op
        self.call = call
        self.proxy: Any = None

    def parsed(self, result: Any) -> Any:
        if self.proxy is not None or self.call.ended:
            return result
        if self.op.is_stream_result(result):
            self.proxy = self.op.wrap_stream(self.call, result)
            return self.proxy
        self.op.read(self.call.record, result, self.call.capture_content)
        _end(self.call)
        return result

    def closed(self) -> None:
        if self.proxy is not None:
            self.proxy.payi_close()
        elif not self.call.ended:
            self.call.record.usage_incomplete_reason = "raw response closed before its body was parsed"
            _end(self.call)

    @staticmethod
    def abandoned(call: Call) -> None:
        if not call.ended:
            call.record.usage_incomplete_reason = "raw response discarded before its body was parsed"
            _end(call)


_pending: "weakref.WeakKeyDictionary[Any, _RawPending]" = weakref.WeakKeyDictionary()


def _raw_parse_hook(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    result = wrapped(*args, **kwargs)
    if not _pending.data:  # no raw response in flight: the common case costs one dict truth test
        return result
    pending = _pending.get(instance)
    if pending is None:
        return result
    try:
        return pending.parsed(result)
    except Exception:
        logger.debug("could not read a parsed raw response", exc_info=True)
        return result


def _raw_close_hook(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    if _pending.data:
        pending = _pending.pop(instance, None)
        if pending is not None:
            try:
                pending.closed()
            except Exception:
                logger.debug("could not finish a closed raw response", exc_info=True)
    return wrapped(*args, **kwargs)


def _helper_close_hook(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    """Stream helpers (``chat.completions.stream()``, ``responses.stream()``) close the HTTP response
    directly; end our stream's span first so it is not left to garbage collection."""
    raw_stream = getattr(instance, "_raw_stream", None)
    close = getattr(raw_stream, "payi_close", None)
    if close is not None:
        try:
            close()
        except Exception:
            logger.debug("could not close instrumented stream", exc_info=True)
    return wrapped(*args, **kwargs)


def _raw_types() -> tuple[type, ...]:
    types: list[type] = []
    try:
        from openai._legacy_response import LegacyAPIResponse

        types.append(LegacyAPIResponse)
    except ImportError:  # pragma: no cover
        pass
    try:
        from openai._response import BaseAPIResponse

        types.append(BaseAPIResponse)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


# --- operations ------------------------------------------------------------------------------
class _ClientInfo:
    __slots__ = ("url", "provider", "category", "address", "port", "uri", "deployment", "accepts_stream_options")

    def __init__(self, client: Any, url: Any) -> None:
        self.url = url
        azure = _is_azure(client)
        self.provider = PROVIDER_AZURE if azure else PROVIDER_OPENAI
        self.category = CATEGORY_AZURE if azure else CATEGORY_OPENAI
        self.address = getattr(url, "host", None) or None
        port = getattr(url, "port", None)
        self.port = port if isinstance(port, int) else None
        self.uri = str(url) if url is not None else None
        self.deployment = getattr(client, "_azure_deployment", None) if azure else None
        # Azure accepts stream_options from API version 2024-09-01(-preview) on; older versions reject it.
        api_version = str(getattr(client, "_api_version", "") or "") if azure else ""
        self.accepts_stream_options = not azure or api_version[:10] >= "2024-09-01"


# SDK classes for isinstance checks, loaded by OpenAIInstrumentor._instrument (openai is installed then).
_azure_classes: tuple[type, ...] = ()
_stream_types: tuple[type, ...] = ()


def _load_sdk_types() -> None:
    global _azure_classes, _stream_types
    from openai import AsyncAzureOpenAI, AsyncStream, AzureOpenAI, Stream

    _azure_classes = (AzureOpenAI, AsyncAzureOpenAI)
    _stream_types = (Stream, AsyncStream)


def _is_azure(client: Any) -> bool:
    return isinstance(client, _azure_classes)


class _State:
    """Configuration and caches shared by the operations of one instrumentation."""

    def __init__(self, core: SpanCore, azure_deployments: dict[str, str], inject_stream_usage: bool, version: str):
        self.core = core
        self.azure_deployments = azure_deployments
        self.inject_stream_usage = inject_stream_usage
        self.module_tag = f"openai/{version}"
        self.raw_types = _raw_types()
        self._clients: "weakref.WeakKeyDictionary[Any, _ClientInfo]" = weakref.WeakKeyDictionary()

    def client_info(self, client: Any) -> _ClientInfo:
        url = getattr(client, "base_url", None)
        try:
            info = self._clients.get(client)
        except TypeError:
            return _ClientInfo(client, url)
        if info is None or info.url is not url:
            info = self._clients[client] = _ClientInfo(client, url)
        return info


class _Operation:
    """One OpenAI surface: its GenAI operation name, usage reader and stream reader."""

    def __init__(
        self,
        state: _State,
        operation: str,
        read: Callable[[CallRecord, Any, bool], None],
        stream_kind: str | None,
        input_key: str | None,
        is_async: bool,
        stream_usage: Callable[[Any], Usage | None] | None = None,
    ) -> None:
        self.state = state
        self.operation = operation
        self.read = read
        self.stream_kind = stream_kind  # "chat"/"completions" (include_usage applies), "responses", "events", None
        self.input_key = input_key
        self.is_async = is_async
        self.stream_usage = stream_usage

    def begin(self, instance: Any, kwargs: dict[str, Any]) -> tuple[Call | None, dict[str, Any]]:
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
        if stream and self.stream_kind in ("chat", "completions") and state.inject_stream_usage and (
            info.accepts_stream_options
        ):
            kwargs, hide = _with_include_usage(kwargs)
        rec = CallRecord(
            provider=info.provider,
            operation=self.operation,
            category=info.category,
            request_model=model,
            server_address=info.address,
            server_port=info.port,
            provider_uri=info.uri,
            instrumented_module=state.module_tag,
            stream=stream,
            business_layer=layer,
        )
        if info.provider == PROVIDER_AZURE and state.azure_deployments:
            rec.resource = state.azure_deployments.get(model or "") or state.azure_deployments.get(
                info.deployment or ""
            )
        _request_params(rec, kwargs)
        core = state.core
        if core.capture_content and self.input_key is not None:
            rec.input_messages = _capturable(kwargs.get(self.input_key))
        call = core.start(rec)
        call.data = hide
        return call, kwargs

    def finish(self, call: Call, result: Any) -> Any:
        if isinstance(result, self.state.raw_types):
            return self._raw(call, result)
        if self.is_stream_result(result):
            response = getattr(result, "response", None)
            call.record.status_code = getattr(response, "status_code", 200)
            return self.wrap_stream(call, result)
        call.record.status_code = 200  # the SDK raises for any other status
        self.read(call.record, result, call.capture_content)
        _end(call)
        return result

    def is_stream_result(self, result: Any) -> bool:
        return self.stream_kind is not None and call_is_stream(result)

    def wrap_stream(self, call: Call, stream: Any) -> Any:
        if self.stream_kind == "chat":
            handler: Any = _ChatStream(call, bool(call.data))
        elif self.stream_kind == "completions":
            handler = _CompletionStream(call, bool(call.data))
        elif self.stream_kind == "responses":
            handler = _ResponsesStream(call)
        else:
            handler = _UsageStream(call, self.stream_usage or _chat_usage)
        proxy_cls = AsyncStreamProxy if hasattr(stream, "__anext__") else StreamProxy
        return proxy_cls(stream, call, handler)

    def _raw(self, call: Call, raw: Any) -> Any:
        rec = call.record
        status = getattr(raw, "status_code", None)
        if isinstance(status, int):
            rec.status_code = status
        # with_raw_response (LegacyAPIResponse): the SDK has already read a non-streamed body.
        if not rec.stream and type(raw).__name__ == "LegacyAPIResponse":
            try:
                parsed = raw.parse()
            except Exception:
                logger.debug("could not parse raw response for usage", exc_info=True)
                rec.usage_incomplete_reason = "raw response body could not be parsed"
            else:
                if parsed is not None and not isinstance(parsed, (str, bytes)):
                    self.read(rec, parsed, call.capture_content)
            _end(call)
            return raw
        pending = _RawPending(self, call)
        _pending[raw] = pending
        weakref.finalize(raw, _RawPending.abandoned, call)
        return raw


def call_is_stream(result: Any) -> bool:
    return isinstance(result, _stream_types)


def _with_include_usage(kwargs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Ask for the usage chunk on a copy of kwargs unless the caller made an explicit choice."""
    options = kwargs.get("stream_options")
    if not _given(options):
        return {**kwargs, "stream_options": {"include_usage": True}}, True
    if isinstance(options, Mapping) and "include_usage" not in options:
        return {**kwargs, "stream_options": {**options, "include_usage": True}}, True
    return kwargs, False


def _request_params(rec: CallRecord, kwargs: dict[str, Any]) -> None:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = kwargs.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            rec.max_tokens = value
            break
    temperature = kwargs.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        rec.temperature = float(temperature)
    top_p = kwargs.get("top_p")
    if isinstance(top_p, (int, float)) and not isinstance(top_p, bool):
        rec.top_p = float(top_p)


def _capturable(value: Any) -> Any:
    """Request content to record; never consumes a caller's iterator."""
    if isinstance(value, (str, list, tuple, dict)):
        return value
    return None


def _targets(state: _State) -> list[Target]:
    def op(operation: str, read: Any, stream_kind: str | None, input_key: str | None, is_async: bool, **kw: Any):
        return _Operation(state, operation, read, stream_kind, input_key, is_async, **kw)

    rows: list[Target] = []

    def both(module: str, sync_cls: str, methods: tuple[str, ...], make: Callable[[bool], _Operation], **bounds):
        for is_async, cls in ((False, sync_cls), (True, "Async" + sync_cls)):
            operation = make(is_async)
            rows.extend(Target(module, cls, m, operation, **bounds) for m in methods)

    chat = lambda a: op("chat", _read_chat, "chat", "messages", a)  # noqa: E731
    both("openai.resources.chat.completions.completions", "Completions", ("create", "parse"), chat, since="1.40")
    both("openai.resources.chat.completions", "Completions", ("create",), chat)
    # Before 1.50 beta.chat.completions.parse calls chat.completions.create (already wrapped): one span, not two.
    both("openai.resources.beta.chat.completions", "Completions", ("parse",), chat, since="1.50")
    responses = lambda a: op("chat", _read_responses, "responses", "input", a)  # noqa: E731
    both("openai.resources.responses.responses", "Responses", ("create", "parse"), responses, since="1.66")
    both("openai.resources.responses", "Responses", ("create",), responses, since="1.66")
    both("openai.resources.embeddings", "Embeddings", ("create",), lambda a: op(
        "embeddings", _read_embeddings, None, "input", a))
    both("openai.resources.completions", "Completions", ("create",), lambda a: op(
        "text_completion", _read_chat, "completions", "prompt", a))
    images = lambda name: lambda a: op(name, _read_images, "events", "prompt", a, stream_usage=_image_usage)  # noqa: E731
    both("openai.resources.images", "Images", ("generate",), images("image_generation"))
    both("openai.resources.images", "Images", ("edit",), images("image_edit"))
    audio = lambda name: lambda a: op(name, _read_audio, "events", None, a, stream_usage=_audio_usage)  # noqa: E731
    both("openai.resources.audio.transcriptions", "Transcriptions", ("create",), audio("audio_transcription"))
    both("openai.resources.audio.translations", "Translations", ("create",), audio("audio_translation"))
    both("openai.resources.audio.speech", "Speech", ("create",), lambda a: op(
        "audio_speech", _read_audio, None, "input", a))
    # Raw responses: end the span when the caller parses (or closes) the body.
    for module, cls, method, hook in (
        ("openai._legacy_response", "LegacyAPIResponse", "_parse", _raw_parse_hook),
        ("openai._response", "APIResponse", "_parse", _raw_parse_hook),
        ("openai._response", "AsyncAPIResponse", "_parse", _raw_parse_hook),
        ("openai._response", "APIResponse", "close", _raw_close_hook),
        ("openai._response", "AsyncAPIResponse", "close", _raw_close_hook),
        ("openai.lib.streaming.chat._completions", "ChatCompletionStream", "close", _helper_close_hook),
        ("openai.lib.streaming.chat._completions", "AsyncChatCompletionStream", "close", _helper_close_hook),
        ("openai.lib.streaming.responses._responses", "ResponseStream", "close", _helper_close_hook),
        ("openai.lib.streaming.responses._responses", "AsyncResponseStream", "close", _helper_close_hook),
    ):
        rows.append(Target(module, cls, method, hook, raw=True))
    return rows


def _sdk_accepts_stream_options() -> bool:
    """openai before 1.26 has no ``stream_options`` parameter: injecting it would raise TypeError in the caller."""
    try:
        from openai.resources.chat import Completions

        return "stream_options" in inspect.signature(Completions.create).parameters
    except Exception:  # pragma: no cover - an SDK we cannot read: do not touch the request
        return False


def _openai_version() -> str | None:
    try:
        from openai import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return None


class OpenAIInstrumentor(BaseInstrumentor):
    """Instruments OpenAI and Azure OpenAI clients (sync and async).

    ``instrument()`` keyword arguments: ``tracer_provider``, ``meter_provider``, ``capture_content``
    (bool; default from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``), ``azure_deployments``
    (``{"deployment": "model"}`` or ``"dep=model,..."``; default ``PAYI_AZURE_DEPLOYMENTS``) and
    ``inject_stream_usage`` (bool; default ``PAYI_OPENAI_INJECT_STREAM_USAGE``, true).
    """

    _wraps: WrapSet | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        _load_sdk_types()
        inject = kwargs.get("inject_stream_usage")
        if inject is None:
            inject = _env_setting(
                ENV_INJECT_STREAM_USAGE, lambda raw: parse_bool(raw, ENV_INJECT_STREAM_USAGE), True
            )
        else:
            inject = parse_bool(inject, "inject_stream_usage")
        inject = inject and _sdk_accepts_stream_options()
        azure = _azure_mapping(kwargs.get("azure_deployments"))
        version = _openai_version()
        core = SpanCore(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            capture_content=kwargs.get("capture_content"),
            error_info=error_info,
        )
        state = _State(core, azure, inject, version or "unknown")
        wraps = WrapSet()
        wraps.wrap(_targets(state), version)
        self._wraps = wraps

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._wraps is not None:
            self._wraps.unwrap()
            self._wraps = None


__all__ = ["OpenAIInstrumentor", "parse_azure_deployments"]
