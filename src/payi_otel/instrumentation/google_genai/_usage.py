"""Gemini ``usage_metadata`` -> :class:`payi_otel.units.Usage`.

Totals follow the GenAI semantic conventions: input = ``prompt_token_count`` (cached content included)
+ ``tool_use_prompt_token_count``; output = ``candidates_token_count`` + ``thoughts_token_count``.
Pay-i units per modality (through :func:`payi_otel.units.to_units`):

* ``<unit>.input`` = the modality's prompt (and tool-use prompt) tokens minus its cached tokens, with
  TEXT -> ``text``, IMAGE -> ``vision``, AUDIO -> ``audio``, VIDEO -> ``video``, DOCUMENT -> ``document``;
* ``<unit>_cache_read.input`` = the modality's ``cache_tokens_details`` (``text_cache_read`` for TEXT, or
  all of ``cached_content_token_count`` when no details are given);
* ``<unit>.output`` = the modality's ``candidates_tokens_details``; ``reasoning.output`` = thoughts;
* every token unit gets ``_large_context`` when the prompt exceeds the model's long-context threshold
  (:mod:`payi_otel.instrumentation._long_context`).

Every reader accepts SDK objects and plain dicts (snake_case), and never raises on a missing field.
"""

from __future__ import annotations

from typing import Any

from payi_otel.instrumentation._long_context import long_context_threshold
from payi_otel.units import Units, Usage

# Gemini modality -> Pay-i unit. Unknown modalities count as text (they are in the totals).
_MODALITY_UNITS = {"TEXT": "text", "IMAGE": "vision", "AUDIO": "audio", "VIDEO": "video", "DOCUMENT": "document"}


def _g(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _unit_of(modality: Any) -> str:
    name = getattr(modality, "value", modality)
    return _MODALITY_UNITS.get(str(name).upper(), "text") if name is not None else "text"


def _by_unit(details: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in details or ():
        unit = _unit_of(_g(item, "modality"))
        counts[unit] = counts.get(unit, 0) + _int(_g(item, "token_count"))
    return counts


def usage_from_metadata(u: Any, model: str | None) -> Usage | None:
    """The usage of one ``generate_content`` response (or the last one of a stream)."""
    if u is None:
        return None
    prompt = _g(u, "prompt_token_count")
    candidates = _g(u, "candidates_token_count")
    thoughts = _int(_g(u, "thoughts_token_count"))
    tool_use = _int(_g(u, "tool_use_prompt_token_count"))
    if prompt is None and candidates is None and not thoughts and not tool_use:
        return None  # e.g. a stream chunk that carries only the traffic type
    cached = _int(_g(u, "cached_content_token_count"))
    usage = Usage(
        input_tokens=_int(prompt) + tool_use,
        output_tokens=_int(candidates) + thoughts,
        cache_read_tokens=cached,
        reasoning_tokens=thoughts,
    )
    prompt_units = _by_unit(_g(u, "prompt_tokens_details"))
    for unit, count in _by_unit(_g(u, "tool_use_prompt_tokens_details")).items():
        prompt_units[unit] = prompt_units.get(unit, 0) + count
    cache_units = _by_unit(_g(u, "cache_tokens_details"))
    modalities: Units = {}
    for unit, count in prompt_units.items():
        if unit != "text":
            modalities[unit] = {"input": max(count - cache_units.get(unit, 0), 0)}
    for unit, count in cache_units.items():
        if unit != "text":
            modalities[f"{unit}_cache_read"] = {"input": count}
    for unit, count in _by_unit(_g(u, "candidates_tokens_details")).items():
        if unit != "text":
            modalities.setdefault(unit, {})["output"] = count
    if modalities:
        usage.modalities = modalities
    threshold = long_context_threshold(model)
    usage.large_context = threshold is not None and _int(prompt) > threshold
    return usage


def embedding_usage(result: Any, model: str | None) -> Usage | None:
    """``embed_content``: ``usage_metadata`` (embedContent), else the per-embedding token statistics of
    Vertex ``predict``; the Gemini API's batchEmbedContents reports none."""
    usage = usage_from_metadata(_g(result, "usage_metadata"), model)
    if usage is not None:
        return usage
    total = None
    for embedding in _g(result, "embeddings") or ():
        count = _g(_g(embedding, "statistics"), "token_count")
        if isinstance(count, (int, float)) and not isinstance(count, bool):
            total = (total or 0) + int(count)
    return Usage(input_tokens=total, output_tokens=0) if total is not None else None


__all__ = ["embedding_usage", "usage_from_metadata"]
