"""Reading a span's attribute values for the mapping (:mod:`.mapping`): numbers, flags and lists as
instrumentations write them, token usage from the semantic conventions (and their older spellings),
and the tool calls in a span's output messages. Pure, no I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from payi_otel import attributes as A
from payi_otel.units import Usage, to_units

__all__ = [
    "OTHER_COUNTS",
    "OutputTools",
    "first",
    "flag",
    "function_calls",
    "integer",
    "semconv_units",
    "strings",
    "ttft_ms",
]


def first(attrs: Mapping[str, Any], key: str) -> Any:
    """Attribute ``key`` under its current spelling or any older one in ``attributes.LEGACY``."""
    value = attrs.get(key)
    if value is None:
        for old in A.LEGACY.get(key, ()):
            value = attrs.get(old)
            if value is not None:
                break
    return value


def integer(value: Any) -> int | None:
    if type(value) is int:  # the common case, first
        return value
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    elif not isinstance(value, (tuple, list)):  # one number, say: best effort, never an error
        value = (value,)
    out = []
    for item in value:
        item = str(item).strip()
        if item:
            out.append(item)
    return out


def flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return None


# Usage field -> the attribute that reports it, read with its older spellings (None: one spelling only).
_SEMCONV_COUNTS = (
    ("cache_read_tokens", A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, True),
    ("reasoning_tokens", A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, True),
    ("input_audio_tokens", A.GEN_AI_USAGE_INPUT_AUDIO_TOKENS, True),
    ("output_audio_tokens", A.GEN_AI_USAGE_OUTPUT_AUDIO_TOKENS, True),
    ("input_image_tokens", A.GEN_AI_USAGE_INPUT_IMAGE_TOKENS, False),
    ("output_image_tokens", A.GEN_AI_USAGE_OUTPUT_IMAGE_TOKENS, False),
)


def _spellings(key: str) -> tuple[str, ...]:
    return (key, *A.LEGACY.get(key, ()))


# Every attribute that reports a count beyond the input and output totals and cache reads, in every spelling.
OTHER_COUNTS = frozenset(
    {
        *_spellings(A.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS),
        A.ANTHROPIC_CACHE_WRITE_1H_TOKENS,
        *(name for _, key, legacy in _SEMCONV_COUNTS[1:] for name in (_spellings(key) if legacy else (key,))),
    }
)


def semconv_units(attrs: Mapping[str, Any], tools: OutputTools | None) -> dict[str, dict[str, int]]:
    """Pay-i units from the semantic-convention token counts (current and older spellings), through
    :func:`~payi_otel.units.to_units`. (The mapping reads spans that report totals and cache reads at most
    through :func:`.key_plans.simple_units`, which gives the same units directly.)"""
    cache_write = integer(first(attrs, A.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS)) or 0
    cache_write_1h = integer(attrs.get(A.ANTHROPIC_CACHE_WRITE_1H_TOKENS)) or 0  # the anthropic SDK's split
    usage = Usage(
        input_tokens=integer(first(attrs, A.GEN_AI_USAGE_INPUT_TOKENS)),
        output_tokens=integer(first(attrs, A.GEN_AI_USAGE_OUTPUT_TOKENS)),
        cache_write_tokens=max(cache_write - cache_write_1h, 0),
        cache_write_1h_tokens=min(cache_write_1h, cache_write) if cache_write else cache_write_1h,
        web_search_requests=tools.web_searches if tools is not None else 0,
    )
    for field, key, legacy in _SEMCONV_COUNTS:
        count = integer(first(attrs, key) if legacy else attrs.get(key))
        if count:
            setattr(usage, field, count)
    return to_units(usage)


class OutputTools:
    """Tool calls in a foreign span's ``gen_ai.output.messages`` (present when it captured content):
    the calls the model asked the client to make, and the web searches the provider ran itself."""

    __slots__ = ("calls", "web_searches")

    def __init__(self, raw: Any) -> None:
        self.calls: list[dict[str, Any]] = []
        self.web_searches = 0
        try:
            messages = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            return
        for message in messages if isinstance(messages, list) else ():
            parts = message.get("parts") if isinstance(message, Mapping) else None
            for part in parts if isinstance(parts, list) else ():
                if not isinstance(part, Mapping) or part.get("type") != "tool_call" or not part.get("name"):
                    continue
                if str(part.get("id") or "").startswith(A.ANTHROPIC_SERVER_TOOL_ID_PREFIX):
                    self.web_searches += part["name"] == "web_search"
                    continue
                arguments = part.get("arguments")
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments if arguments is not None else {})
                self.calls.append({"name": str(part["name"]), "arguments": arguments})


def function_calls(raw: Any) -> list[dict[str, Any]]:
    """The span core's ``payi.function_calls`` (a JSON list of ``{"name", "arguments"}``)."""
    if not raw:
        return []
    try:
        calls = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return []
    out = []
    for call in calls if isinstance(calls, list) else ():
        if isinstance(call, Mapping) and call.get("name"):
            arguments = call.get("arguments")
            if arguments is not None and not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            out.append({"name": str(call["name"]), "arguments": arguments})
    return out


def ttft_ms(attrs: Mapping[str, Any]) -> int | None:
    """Time to first token: the span core's milliseconds, else util-genai's ``time_to_first_chunk`` seconds."""
    ttft = integer(attrs.get(A.PAYI_TIME_TO_FIRST_TOKEN_MS))
    if ttft is not None:
        return ttft
    seconds = attrs.get(A.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0:
        return round(seconds * 1000)
    return None
