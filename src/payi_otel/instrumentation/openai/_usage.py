"""Usage reports of OpenAI responses -> :class:`payi_otel.units.Usage` (SDK models and plain dicts alike)."""

from __future__ import annotations

from typing import Any

from payi_otel.units import Usage


def pick(obj: Any, name: str) -> Any:
    """Attribute or key access, for SDK models and plain dicts alike."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) else 0


# --- usage extractors -------------------------------------------------------------------------
def chat_usage(u: Any) -> Usage | None:
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
    # The details are read inline (no helper per field): this runs on the caller's thread for every call.
    if ptd is not None:
        if isinstance(ptd, dict):
            cached, cache_write = ptd.get("cached_tokens"), ptd.get("cache_write_tokens")
            audio = ptd.get("audio_tokens")
        else:
            cached = getattr(ptd, "cached_tokens", None)
            cache_write = getattr(ptd, "cache_write_tokens", None)
            audio = getattr(ptd, "audio_tokens", None)
        if cached and isinstance(cached, int):
            usage.cache_read_tokens = cached
        if cache_write and isinstance(cache_write, int):
            usage.cache_write_tokens = cache_write
        if audio and isinstance(audio, int):
            usage.input_audio_tokens = audio
    if ctd is not None:
        if isinstance(ctd, dict):
            reasoning, audio = ctd.get("reasoning_tokens"), ctd.get("audio_tokens")
        else:
            reasoning, audio = getattr(ctd, "reasoning_tokens", None), getattr(ctd, "audio_tokens", None)
        if reasoning and isinstance(reasoning, int):
            usage.reasoning_tokens = reasoning
        if audio and isinstance(audio, int):
            usage.output_audio_tokens = audio
    return usage


def responses_usage(u: Any) -> Usage | None:
    """Responses API usage (input_tokens, output_tokens, *_details)."""
    if u is None:
        return None
    itd = pick(u, "input_tokens_details")
    otd = pick(u, "output_tokens_details")
    return Usage(
        input_tokens=pick(u, "input_tokens"),
        output_tokens=pick(u, "output_tokens"),
        cache_read_tokens=int_or_zero(pick(itd, "cached_tokens")),
        cache_write_tokens=int_or_zero(pick(itd, "cache_write_tokens")),
        reasoning_tokens=int_or_zero(pick(otd, "reasoning_tokens")),
    )


def image_usage(u: Any) -> Usage | None:
    """gpt-image usage: input text + image tokens, output image tokens."""
    if u is None:
        return None
    itd = pick(u, "input_tokens_details")
    out = int_or_zero(pick(u, "output_tokens"))
    return Usage(
        input_tokens=pick(u, "input_tokens"),
        output_tokens=out,
        input_image_tokens=int_or_zero(pick(itd, "image_tokens")),
        output_image_tokens=out,
    )


def audio_usage(u: Any) -> Usage | None:
    """Transcription usage; only the token-billed kind has tokens (``type == "tokens"``)."""
    if u is None or pick(u, "input_tokens") is None:
        return None
    itd = pick(u, "input_token_details")
    return Usage(
        input_tokens=pick(u, "input_tokens"),
        output_tokens=pick(u, "output_tokens"),
        input_audio_tokens=int_or_zero(pick(itd, "audio_tokens")),
    )


def embedding_usage(u: Any) -> Usage | None:
    if u is None:
        return None
    return Usage(input_tokens=pick(u, "prompt_tokens"), output_tokens=0)
