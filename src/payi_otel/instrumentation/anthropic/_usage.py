"""Anthropic usage, tool calls and finish reasons, from SDK objects or plain dicts.

Units (through :func:`payi_otel.units.to_units`):

* ``text.input`` = ``input_tokens`` (Anthropic's count already excludes the cache);
  ``text_cache_read.input`` = ``cache_read_input_tokens``;
  ``text_cache_write.input`` / ``text_cache_write_1h.input`` = ``cache_creation.ephemeral_5m_input_tokens`` /
  ``ephemeral_1h_input_tokens`` (``cache_creation_input_tokens`` as 5-minute writes when the split is absent);
  ``text.output`` = ``output_tokens`` (thinking included: it is billed as output);
* ``web_search_request.output`` = ``server_tool_use.web_search_requests``;
* every token unit gets ``_large_context`` when the prompt (input + cache read + cache write) is above
  the model's long-context threshold (:mod:`payi_otel.instrumentation._long_context`: 200k tokens for
  Sonnet 4.5 / 4.6 and Opus 4.6, 100k for Haiku 5.5, none for models priced flat);
* ``vision.input``: when the request holds images, the tokens Anthropic bills for them (:mod:`._vision`),
  taken out of ``text.input``;
* with server-side compaction the response reports ``usage.iterations``: the call's usage is the sum of
  the iterations run by the request's model (``advisor_message`` iterations are another model's).
"""

from __future__ import annotations

import json
from typing import Any

from payi_otel import fastjson
from payi_otel.units import Usage

_OTHER_MODEL_ITERATIONS = frozenset({"advisor_message"})


def g(obj: Any, name: str) -> Any:
    """Attribute or key access, for SDK models and plain dicts alike."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


_MISSING = object()


def newer_field(obj: Any, name: str) -> Any:
    """:func:`g` for a field that older SDK releases do not know and most responses lack (``iterations``).

    An SDK model (pydantic 2) keeps its fields in ``__dict__`` and the ones its release does not know in
    ``__pydantic_extra__``: both are read directly. ``getattr`` of a field the model lacks goes through
    pydantic's ``__getattr__`` and a raised ``AttributeError`` (about 3 us on every call)."""
    if obj is None or isinstance(obj, dict):
        return g(obj, name)
    extra: Any = getattr(obj, "__pydantic_extra__", _MISSING)
    fields = getattr(obj, "__dict__", None)
    if extra is _MISSING or fields is None:
        return getattr(obj, name, None)
    value = fields.get(name, _MISSING)
    if value is not _MISSING:
        return value
    return extra.get(name) if extra else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _prompt_parts(u: Any) -> tuple[int, int, int, int]:
    """(input, cache read, 5-minute cache write, 1-hour cache write) of one usage entry."""
    split = g(u, "cache_creation")
    if split is not None:
        write_5m, write_1h = _int(g(split, "ephemeral_5m_input_tokens")), _int(g(split, "ephemeral_1h_input_tokens"))
    else:
        write_5m, write_1h = _int(g(u, "cache_creation_input_tokens")), 0
    return _int(g(u, "input_tokens")), _int(g(u, "cache_read_input_tokens")), write_5m, write_1h


def usage_of(u: Any, threshold: int | None = None) -> Usage | None:
    """The call's :class:`Usage` from an Anthropic ``usage`` object (``None`` when absent); ``threshold``:
    the model's long-context threshold (None: priced flat)."""
    if u is None:
        return None
    iterations = newer_field(u, "iterations")
    entries = [it for it in iterations if g(it, "type") not in _OTHER_MODEL_ITERATIONS] if iterations else [u]
    text_in = cache_read = write_5m = write_1h = output = 0
    largest_prompt = 0
    for entry in entries:
        i, r, w5, w1 = _prompt_parts(entry)
        text_in, cache_read, write_5m, write_1h = text_in + i, cache_read + r, write_5m + w5, write_1h + w1
        output += _int(g(entry, "output_tokens"))
        largest_prompt = max(largest_prompt, i + r + w5 + w1)
    reported_input = g(u, "input_tokens") is not None or bool(iterations)
    return Usage(
        input_tokens=text_in + cache_read + write_5m + write_1h if reported_input else None,
        output_tokens=output,
        cache_read_tokens=cache_read,
        cache_write_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        web_search_requests=_int(g(g(u, "server_tool_use"), "web_search_requests")),
        large_context=threshold is not None and largest_prompt > threshold,
    )


def delta_usage(current: Usage | None, u: Any, threshold: int | None = None) -> Usage | None:
    """Usage after a ``message_delta`` event: its counts are cumulative and overlay ``message_start``'s
    (older API versions send only ``output_tokens``); with ``iterations`` they are the whole report."""
    update = usage_of(u, threshold)
    if update is None:
        return current
    if current is None or newer_field(u, "iterations"):
        return update
    current.merge(update)
    current.large_context = threshold is not None and (current.input_tokens or 0) > threshold
    return current


def split_vision(usage: Usage, image_tokens: int) -> None:
    """Count ``image_tokens`` of the prompt as ``vision`` instead of ``text`` (at most the uncached input)."""
    uncached = (usage.input_tokens or 0) - usage.cache_read_tokens - usage.cache_write_tokens
    usage.input_image_tokens = max(min(image_tokens, uncached - usage.cache_write_1h_tokens), 0)


def tool_arguments(value: Any) -> str:
    """A tool call's input as Pay-i records it: ``json.dumps`` of the input object (parsed JSON)."""
    return fastjson.dumps(value if value is not None else {})


def streamed_arguments(partial_json: str, start_input: Any) -> str:
    """Arguments of a streamed ``tool_use`` block, written like a non-streamed one's."""
    if not partial_json:
        return tool_arguments(start_input)
    try:
        return tool_arguments(json.loads(partial_json))
    except ValueError:
        return partial_json  # cut off mid-stream: what arrived


def tool_calls_of(content: Any) -> list[dict[str, str]] | None:
    """Every ``tool_use`` block of a message's content, in content order (index 0 included)."""
    calls = [
        {"name": g(block, "name") or "", "arguments": tool_arguments(g(block, "input"))}
        for block in content or ()
        if g(block, "type") == "tool_use"
    ]
    return calls or None


__all__ = ["delta_usage", "g", "split_vision", "streamed_arguments", "tool_calls_of", "usage_of"]
