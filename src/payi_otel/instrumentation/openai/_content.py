"""OpenAI request and response content -> the GenAI conventions' message schema (:mod:`payi_otel.messages`).

Only called when content capture is on. Requests are read as the caller passed them (dicts or SDK models,
never a caller's iterator); anything unrecognised becomes a part that names its type, so nothing is guessed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from payi_otel.messages import (
    Message,
    Part,
    message,
    output_message,
    text_part,
    tool_call_part,
    tool_call_response_part,
)

from ._usage import pick


def _arguments(raw: Any) -> Any:
    """Tool-call arguments as the JSON value they spell (the string itself when it is not JSON)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _content_parts(content: Any) -> list[Part]:
    """A message's ``content``: a string, or a list of typed content parts (chat and Responses spellings)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [text_part(content)]
    parts: list[Part] = []
    for item in content if isinstance(content, (list, tuple)) else ():
        kind = pick(item, "type")
        text = pick(item, "text")
        if kind in ("text", "input_text", "output_text") and isinstance(text, str):
            parts.append(text_part(text))
        elif kind == "refusal" and isinstance(pick(item, "refusal"), str):
            parts.append(text_part(pick(item, "refusal")))
        elif kind in ("image_url", "input_image"):
            image = pick(item, "image_url")
            url = pick(image, "url") if not isinstance(image, str) else image
            parts.append({"type": "uri", "modality": "image", "uri": url} if isinstance(url, str) else {"type": kind})
        else:
            parts.append({"type": str(kind or "unknown")})
    return parts


def _tool_calls(tool_calls: Any) -> list[Part]:
    parts = []
    for tc in tool_calls or ():
        fn = pick(tc, "function")
        if fn is not None:
            parts.append(tool_call_part(pick(tc, "id"), pick(fn, "name") or "", _arguments(pick(fn, "arguments"))))
    return parts


def chat_input(messages: Any) -> list[Message] | None:
    """``messages`` of chat.completions (system and developer messages stay in the history, as sent)."""
    if not isinstance(messages, (list, tuple)):
        return None
    out = []
    for m in messages:
        role = str(pick(m, "role") or "user")
        if role in ("tool", "function"):
            call_id = pick(m, "tool_call_id") or pick(m, "name")
            out.append(message("tool", [tool_call_response_part(call_id, pick(m, "content"))]))
            continue
        parts = _content_parts(pick(m, "content")) + _tool_calls(pick(m, "tool_calls"))
        fc = pick(m, "function_call")
        if fc is not None:
            parts.append(tool_call_part(None, pick(fc, "name") or "", _arguments(pick(fc, "arguments"))))
        out.append(message(role, parts))
    return out


def text_input(value: Any) -> list[Message] | None:
    """A prompt or input given as text (legacy completions, embeddings, images, speech): one user message."""
    if isinstance(value, str):
        return [message("user", [text_part(value)])]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [message("user", [text_part(v) for v in value])]
    return None


def responses_input(value: Any) -> list[Message] | None:
    """``input`` of the Responses API: text, or a list of messages and tool-call items."""
    if isinstance(value, str):
        return [message("user", [text_part(value)])]
    if not isinstance(value, (list, tuple)):
        return None
    out = []
    for item in value:
        kind = pick(item, "type")
        if kind == "function_call_output":
            out.append(message("tool", [tool_call_response_part(pick(item, "call_id"), pick(item, "output"))]))
        elif kind == "function_call":
            part = tool_call_part(pick(item, "call_id"), pick(item, "name") or "", _arguments(pick(item, "arguments")))
            out.append(message("assistant", [part]))
        elif pick(item, "role") is not None:
            out.append(message(str(pick(item, "role")), _content_parts(pick(item, "content"))))
        else:
            out.append(message("user", [{"type": str(kind or "unknown")}]))
    return out


def system_instructions(instructions: Any) -> list[Part] | None:
    """``instructions`` of the Responses API (given apart from the conversation)."""
    return [text_part(instructions)] if isinstance(instructions, str) and instructions else None


def chat_output(choices: Iterable[Any]) -> list[Message]:
    """The choices of a chat completion (``message``) or a legacy completion (``text``)."""
    out = []
    for choice in choices:
        msg = pick(choice, "message")
        if msg is None:
            text = pick(choice, "text")
            parts = [text_part(text)] if isinstance(text, str) else []
        else:
            parts = _content_parts(pick(msg, "content")) + _tool_calls(pick(msg, "tool_calls"))
            refusal = pick(msg, "refusal")
            if isinstance(refusal, str) and refusal:
                parts.append(text_part(refusal))
        out.append(output_message(parts, pick(choice, "finish_reason")))
    return out


def responses_output(result: Any, finish_reason: str | None) -> list[Message]:
    """The output items of a Responses API result, as one assistant message."""
    parts: list[Part] = []
    for item in pick(result, "output") or ():
        kind = pick(item, "type")
        if kind == "message":
            parts.extend(_content_parts(pick(item, "content")))
        elif kind == "function_call":
            parts.append(
                tool_call_part(pick(item, "call_id"), pick(item, "name") or "", _arguments(pick(item, "arguments")))
            )
    return [output_message(parts, finish_reason)]


def text_output(text: str, finish_reason: str | None = None) -> list[Message]:
    return [output_message([text_part(text)], finish_reason)]


def streamed_output(
    texts: dict[int, list[str]], tools: dict[tuple[int, int], list[str]], reasons: dict[int, str]
) -> list[Message]:
    """Chat / completions stream pieces (text and tool-call deltas per choice index) as output messages."""
    out = []
    for index in sorted(set(texts) | {i for i, _ in tools} | set(reasons)):
        parts = [text_part("".join(texts[index]))] if index in texts else []
        for (i, _), (name, arguments, call_id) in sorted(tools.items()):
            if i == index:
                parts.append(tool_call_part(call_id or None, name, _arguments(arguments)))
        out.append(output_message(parts, reasons.get(index)))
    return out
