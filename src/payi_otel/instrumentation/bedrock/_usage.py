"""Bedrock usage, normalized into :class:`payi_otel.units.Usage`.

Bedrock reports input tokens *without* the prompt-cache reads and writes (like Anthropic); ``Usage``
wants the total, so every reader adds them back. Where usage comes from, best source first:

* ``invoke_model``: the ``X-Amzn-Bedrock-Input-Token-Count`` / ``-Output-Token-Count`` (and
  ``-Cache-Read-`` / ``-Cache-Write-Input-Token-Count``) response headers, the numbers AWS bills;
  without them, the model family's own body fields (:func:`body_usage`, recognised by shape so
  imported and marketplace models that answer in a known shape are read too);
* ``converse``: ``usage`` (``cacheDetails`` splits 5-minute and 1-hour cache writes);
* streams: ``amazon-bedrock-invocationMetrics`` of the last chunk (``invoke_model_with_response_stream``)
  or the ``metadata`` event (``converse_stream``).

Guardrail policy units come from the guardrail trace: every ``invocationMetrics.usage`` under it is
summed (input and output assessments alike).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payi_otel.units import Usage

HEADER_INPUT = "x-amzn-bedrock-input-token-count"
HEADER_OUTPUT = "x-amzn-bedrock-output-token-count"
HEADER_CACHE_READ = "x-amzn-bedrock-cache-read-input-token-count"
HEADER_CACHE_WRITE = "x-amzn-bedrock-cache-write-input-token-count"

# Bedrock guardrail usage key -> Usage field (named after the Pay-i unit).
GUARDRAIL_UNITS = {
    "topicPolicyUnits": "guardrail_topic",
    "contentPolicyUnits": "guardrail_content",
    "wordPolicyUnits": "guardrail_word_free",
    "automatedReasoningPolicyUnits": "guardrail_automated_reasoning",
    "sensitiveInformationPolicyUnits": "guardrail_sensitive_information",
    "sensitiveInformationPolicyFreeUnits": "guardrail_sensitive_information_free",
    "contextualGroundingPolicyUnits": "guardrail_contextual_grounding",
    "contentPolicyImageUnits": "guardrail_content_image",
}


def count(value: Any) -> int | None:
    """A token count as an int; Titan reports floats (``28.0``); anything else is None."""
    cls = type(value)
    if cls is int:  # the common case, first: one type test (bool is not int here)
        return value  # type: ignore[no-any-return]
    if value is None or cls is bool:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def tokens(
    input_tokens: Any, output_tokens: Any, cache_read: Any = 0, cache_write: Any = 0, cache_write_1h: Any = 0
) -> Usage | None:
    """Usage from Bedrock-style counts (input excludes cache); None when neither direction is known."""
    # Plain ints (every JSON count) are taken as they are; count() reads the rest. A call each saved per
    # count: this runs on the caller's thread for every call.
    inp = input_tokens if type(input_tokens) is int else count(input_tokens)
    out = output_tokens if type(output_tokens) is int else count(output_tokens)
    if inp is None and out is None:
        return None
    read = cache_read if type(cache_read) is int or cache_read is None else count(cache_read)
    write = cache_write if type(cache_write) is int or cache_write is None else count(cache_write)
    write_1h = cache_write_1h if type(cache_write_1h) is int or cache_write_1h is None else count(cache_write_1h)
    read, write, write_1h = read or 0, write or 0, write_1h or 0
    if not (read or write or write_1h):  # no prompt cache in play (most calls)
        return Usage(inp or 0, out or 0)
    return Usage(
        input_tokens=(inp or 0) + read + write,
        output_tokens=out or 0,
        cache_read_tokens=read,
        cache_write_tokens=max(write - write_1h, 0),
        cache_write_1h_tokens=write_1h,
    )


def header_usage(headers: Mapping[str, str] | None) -> Usage | None:
    """The billed counts from ``invoke_model`` response headers (botocore lower-cases names)."""
    if not headers:
        return None
    return tokens(
        headers.get(HEADER_INPUT),
        headers.get(HEADER_OUTPUT),
        headers.get(HEADER_CACHE_READ),
        headers.get(HEADER_CACHE_WRITE),
    )


def converse_usage(u: Any) -> Usage | None:
    """Converse / ConverseStream ``usage``."""
    if not isinstance(u, dict):
        return None
    write_1h = 0
    details = u.get("cacheDetails")
    if details:
        for detail in details:
            if isinstance(detail, dict) and detail.get("ttl") == "1h":
                write_1h += count(detail.get("inputTokens")) or 0
    read = u.get("cacheReadInputTokens")
    write = u.get("cacheWriteInputTokens")
    return tokens(
        u.get("inputTokens"),
        u.get("outputTokens"),
        u.get("cacheReadInputTokenCount") if read is None else read,
        u.get("cacheWriteInputTokenCount") if write is None else write,
        write_1h,
    )


def invocation_metrics_usage(m: Any) -> Usage | None:
    """``amazon-bedrock-invocationMetrics`` of a streamed chunk."""
    if not isinstance(m, dict):
        return None
    return tokens(
        m.get("inputTokenCount"),
        m.get("outputTokenCount"),
        m.get("cacheReadInputTokenCount"),
        m.get("cacheWriteInputTokenCount"),
    )


def anthropic_usage(u: dict[str, Any]) -> Usage | None:
    created = u.get("cache_creation")
    write_1h = created.get("ephemeral_1h_input_tokens") if isinstance(created, dict) else 0
    return tokens(
        u.get("input_tokens"),
        u.get("output_tokens"),
        u.get("cache_read_input_tokens"),
        u.get("cache_creation_input_tokens"),
        write_1h,
    )


def _usage_object(u: dict[str, Any]) -> Usage | None:
    if "input_tokens" in u or "output_tokens" in u:  # Anthropic messages
        return anthropic_usage(u)
    if "inputTokens" in u or "outputTokens" in u:  # Amazon Nova, Converse
        return converse_usage(u)
    if "prompt_tokens" in u or "completion_tokens" in u:  # OpenAI-style: gpt-oss, Jamba, DeepSeek, imported
        return tokens(u.get("prompt_tokens"), u.get("completion_tokens"))
    return None


def _token_list_length(value: Any) -> int | None:
    tokens_ = value.get("tokens") if isinstance(value, dict) else None
    return len(tokens_) if isinstance(tokens_, list) else None


def body_usage(body: Any) -> Usage | None:
    """Usage reported in an ``invoke_model`` body or a streamed chunk, whatever the family."""
    if not isinstance(body, dict):
        return None
    metrics = body.get("amazon-bedrock-invocationMetrics")
    if metrics is not None:
        return invocation_metrics_usage(metrics)
    u = body.get("usage")
    if isinstance(u, dict):
        found = _usage_object(u)
        if found is not None:
            return found
    if "inputTextTokenCount" in body:  # Titan text and embeddings
        results = body.get("results")
        out: Any = body.get("totalOutputTextTokenCount")
        if out is None and isinstance(results, list):
            out = sum(count(r.get("tokenCount")) or 0 for r in results if isinstance(r, dict))
        return tokens(body.get("inputTextTokenCount"), out if out is not None else 0)
    if "prompt_token_count" in body or "generation_token_count" in body:  # Meta Llama
        return tokens(body.get("prompt_token_count"), body.get("generation_token_count"))
    prompt_tokens = _token_list_length(body.get("prompt"))
    if prompt_tokens is not None:  # AI21 Jurassic-2: one entry per token
        completions = body.get("completions")
        out_n = sum(_token_list_length(c.get("data")) or 0 for c in completions or () if isinstance(c, dict))
        return tokens(prompt_tokens, out_n)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("usage"), dict):  # Nova stream metadata chunk
        return converse_usage(metadata["usage"])
    message = body.get("message")
    if body.get("type") == "message_start" and isinstance(message, dict) and isinstance(message.get("usage"), dict):
        return anthropic_usage(message["usage"])
    return None


def add_guardrail_units(usage: Usage, guardrail: Any) -> bool:
    """Add the policy units of every assessment in a guardrail trace to ``usage``; True if any."""
    totals: dict[str, int] = {}
    _collect(guardrail, totals)
    found = False
    for key, n in totals.items():
        name = GUARDRAIL_UNITS.get(key)
        if name is not None and n > 0:
            setattr(usage, name, getattr(usage, name) + n)
            found = True
    return found


def _collect(node: Any, totals: dict[str, int]) -> None:
    if isinstance(node, dict):
        metrics = node.get("invocationMetrics")
        if isinstance(metrics, dict) and isinstance(metrics.get("usage"), dict):
            for key, value in metrics["usage"].items():
                n = count(value)
                if n:
                    totals[key] = totals.get(key, 0) + n
        for key, value in node.items():
            if key != "invocationMetrics" and isinstance(value, (dict, list)):
                _collect(value, totals)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _collect(item, totals)


def guardrail_trace(body: Any) -> Any:
    """The guardrail part of a Converse ``trace`` or an invoke body's ``amazon-bedrock-trace``."""
    if not isinstance(body, dict):
        return None
    for key in ("trace", "amazon-bedrock-trace"):
        trace = body.get(key)
        if isinstance(trace, dict) and trace.get("guardrail"):
            return trace["guardrail"]
    return None


def mark_large_context(usage: Usage | None, threshold: int | None) -> None:
    """Large context when the prompt (cache included) is above ``threshold``, the model's long-context threshold
    (:func:`~payi_otel.instrumentation._long_context.long_context_threshold`; None: the model has none)."""
    if usage is not None and threshold is not None and (usage.input_tokens or 0) > threshold:
        usage.large_context = True


__all__ = [
    "add_guardrail_units",
    "anthropic_usage",
    "body_usage",
    "converse_usage",
    "count",
    "guardrail_trace",
    "header_usage",
    "invocation_metrics_usage",
    "mark_large_context",
    "tokens",
]
