"""Non-streamed OpenAI results -> the call record: ids, model, usage, finish reasons, tool calls, content."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from payi_otel.core import Call, CallRecord
from payi_otel.units import Usage

from . import _content as content
from ._request import PROVIDER_AZURE
from ._usage import audio_usage, chat_usage, embedding_usage, image_usage, pick, responses_usage

# Reads a non-streamed result into the record; the flag says whether message content is captured.
Reader = Callable[[CallRecord, Any, bool], None]


def tool_call(name: Any, arguments: Any) -> dict[str, str]:
    return {"name": name or "", "arguments": arguments if isinstance(arguments, str) else str(arguments or "")}


def read_chat(rec: CallRecord, result: Any, capture: bool) -> None:
    """Chat completions and legacy completions (SDK objects)."""
    rec.response_id = getattr(result, "id", None) or None
    rec.response_model = getattr(result, "model", None) or None
    rec.usage = chat_usage(getattr(result, "usage", None))
    reasons: list[str] = []
    tools: list[dict[str, str]] = []
    for choice in getattr(result, "choices", None) or ():
        reason = choice.finish_reason
        if reason:
            reasons.append(reason)
        message = getattr(choice, "message", None)
        if message is not None:
            for tc in getattr(message, "tool_calls", None) or ():  # absent before openai 1.26
                fn = getattr(tc, "function", None)
                if fn is not None:
                    tools.append(tool_call(fn.name, fn.arguments))
            fc = getattr(message, "function_call", None)
            if fc is not None:
                tools.append(tool_call(fc.name, fc.arguments))
    rec.finish_reasons = reasons or None
    rec.tool_calls = tools or None
    if capture:
        rec.output_messages = content.chat_output(getattr(result, "choices", None) or ())


def read_responses(rec: CallRecord, result: Any, capture: bool) -> None:
    rec.response_id = pick(result, "id") or None
    rec.response_model = pick(result, "model") or None
    rec.usage = responses_usage(pick(result, "usage"))
    status = pick(result, "status")
    if status == "incomplete":
        reason = pick(pick(result, "incomplete_details"), "reason")
        rec.finish_reasons = [reason or "incomplete"]
    elif status:
        rec.finish_reasons = [status]
    tools = []
    for item in pick(result, "output") or ():
        if pick(item, "type") == "function_call":
            tools.append(tool_call(pick(item, "name"), pick(item, "arguments")))
    rec.tool_calls = tools or None
    if capture:
        rec.output_messages = content.responses_output(result, rec.finish_reasons[0] if rec.finish_reasons else None)


def read_embeddings(rec: CallRecord, result: Any, capture: bool) -> None:
    rec.response_model = pick(result, "model") or None
    rec.usage = embedding_usage(pick(result, "usage"))


def read_images(rec: CallRecord, result: Any, capture: bool) -> None:
    usage = image_usage(pick(result, "usage"))
    if usage is None:
        data = pick(result, "data")
        if data is not None:
            usage = Usage(images=len(data))
    rec.usage = usage


def read_audio(rec: CallRecord, result: Any, capture: bool) -> None:
    usage_obj = pick(result, "usage")
    rec.usage = audio_usage(usage_obj)
    if rec.usage is None:
        seconds = pick(usage_obj, "seconds")
        rec.usage_incomplete_reason = (
            f"duration-billed audio ({seconds} s); no token usage reported"
            if seconds is not None
            else "provider reports no usage for this operation"
        )
    text = pick(result, "text")
    if capture and isinstance(text, str):
        rec.output_messages = content.text_output(text)


def end_call(call: Call, error: BaseException | None = None) -> None:
    rec = call.record
    if rec.provider == PROVIDER_AZURE and rec.resource is None:
        rec.resource = rec.response_model
    if error is not None:
        call.fail(error)
    else:
        call.end()
