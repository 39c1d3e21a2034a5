"""Prompt sizes above which a model is priced at its long-context rates, per model.

The price catalog (genai-prices, which the local service prices with) lists these as tiered input
prices; a prompt above the tier's start is priced at the higher rate, and Pay-i expects the
``_large_context`` units then. Models not listed have one rate at any prompt size. The same model is
served under several names (``claude-sonnet-4-5-20250929``, ``claude-sonnet-4.5``, Vertex
``claude-sonnet-4-5@20250929``, Bedrock ``us.anthropic.claude-sonnet-4-5-20250929-v1:0``, Gemini
``models/gemini-2.5-pro``), so names are matched from their ``claude-`` / ``gemini-`` part on, with dots
read as dashes, against the longest listed prefix (as the catalog matches them); their speech (``-tts``)
and image variants are priced flat.
"""

from __future__ import annotations

# Normalized name prefix -> input tokens above which the long-context rates apply.
THRESHOLDS: dict[str, int] = {
    "claude-sonnet-4-5": 200_000,
    "claude-sonnet-4-6": 200_000,
    "claude-opus-4-6": 200_000,
    "claude-4-6-opus": 200_000,
    "claude-haiku-5-5": 100_000,
    "claude-5-5-haiku": 100_000,
    "gemini-1-5-pro": 128_000,
    "gemini-1-5-flash": 128_000,
    "gemini-pro-1-5": 128_000,
    "gemini-flash-1-5": 128_000,
    "gemini-2-5-pro": 200_000,
    "gemini-3-pro": 200_000,
    "gemini-3-1-pro": 200_000,
}
_BY_LENGTH = sorted(THRESHOLDS.items(), key=lambda item: -len(item[0]))
_FAMILIES = ("claude-", "gemini-")
_OTHER_MODELS = ("-tts", "-image")  # speech and image variants of a listed model are priced flat
_cache: dict[str, int | None] = {}


def _lookup(model: str) -> int | None:
    name = model.lower().replace(".", "-")
    for family in _FAMILIES:
        start = name.find(family)
        if start >= 0:
            name = name[start:]
            break
    else:
        return None
    for prefix, threshold in _BY_LENGTH:
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            return None if any(variant in rest for variant in _OTHER_MODELS) else threshold
    return None


def long_context_threshold(model: str | None) -> int | None:
    """Input tokens above which ``model`` is priced at long-context rates; None when it has one rate."""
    if not model:
        return None
    try:
        return _cache[model]
    except KeyError:
        threshold = _lookup(model)
        if len(_cache) < 1024:
            _cache[model] = threshold
        return threshold


__all__ = ["THRESHOLDS", "long_context_threshold"]
