"""google-genai request and response content -> the GenAI conventions' message schema (:mod:`payi_otel.messages`).

Only called when content capture is on. ``contents`` is read as the caller passed it (a string, a part, a
``Content``, or a list of either; SDK objects or dicts): a list of parts is one user message, as the SDK
sends it. Roles are the conventions' (``model`` -> ``assistant``). Text, thoughts (``reasoning``), function
calls and function responses become their parts; inline data and file references become ``blob`` /
``uri`` parts naming their MIME type and modality (inline bytes are not copied); any other part is a part
whose type is the field it carries (``executable_code``, ...), so nothing is guessed. A stream's output is
the text of each candidate joined across its chunks, and every function call in order.
"""

from __future__ import annotations

from typing import Any

from payi_otel.instrumentation.google_genai._usage import _g
from payi_otel.messages import (
    Message,
    Part,
    message,
    output_message,
    text_part,
    tool_call_part,
    tool_call_response_part,
)

_ROLES = {"model": "assistant"}


def _modality(mime_type: Any) -> str | None:
    return mime_type.split("/", 1)[0] if isinstance(mime_type, str) and "/" in mime_type else None


def part_of(part: Any) -> Part:
    """One google-genai part (or a plain string) in the conventions' schema."""
    if isinstance(part, str):
        return text_part(part)
    text = _g(part, "text")
    if isinstance(text, str):
        return {"type": "reasoning", "content": text} if _g(part, "thought") is True else text_part(text)
    call = _g(part, "function_call")
    if call is not None:
        return tool_call_part(_g(call, "id"), _g(call, "name") or "", _g(call, "args"))
    response = _g(part, "function_response")
    if response is not None:
        return tool_call_response_part(_g(response, "id"), _g(response, "response"))
    for key, kind, field in (("inline_data", "blob", None), ("file_data", "uri", "file_uri")):
        data = _g(part, key)
        if data is not None:
            mime_type = _g(data, "mime_type")
            found: Part = {"type": kind, "mime_type": mime_type, "modality": _modality(mime_type)}
            if field is not None:
                found["uri"] = _g(data, field)
            return found
    return {"type": _kind(part)}


_NOT_A_KIND = frozenset({"thought", "thought_signature", "video_metadata", "media_resolution"})


def _kind(part: Any) -> str:
    """The name of the field a part carries (``executable_code``, ``code_execution_result``, ...)."""
    fields = part if isinstance(part, dict) else getattr(part, "__dict__", {})
    for name, value in fields.items():
        if value is not None and name not in _NOT_A_KIND and not name.startswith("_"):
            return str(name)
    return type(part).__name__


def _is_content(item: Any) -> bool:
    return _g(item, "parts") is not None or (isinstance(item, dict) and "role" in item)


def _content_message(content: Any) -> Message:
    role = _g(content, "role") or "user"
    return message(_ROLES.get(role, role), [part_of(p) for p in _g(content, "parts") or ()])


def input_messages(contents: Any) -> list[Message]:
    """The request's ``contents`` as input messages."""
    if contents is None:
        return []
    if not isinstance(contents, (list, tuple)):
        contents = [contents]
    messages: list[Message] = []
    loose: list[Part] = []  # parts given outside a Content: one user message, as the SDK sends them
    for item in contents:
        if _is_content(item):
            if loose:
                messages.append(message("user", loose))
                loose = []
            messages.append(_content_message(item))
        else:
            loose.append(part_of(item))
    if loose:
        messages.append(message("user", loose))
    return messages


def system_instructions(config: Any) -> list[Part] | None:
    """``config.system_instruction`` (a string, part, ``Content`` or list of parts) as parts."""
    instruction = _g(config, "system_instruction")
    if instruction is None:
        return None
    if _is_content(instruction):
        return [part_of(p) for p in _g(instruction, "parts") or ()]
    items = instruction if isinstance(instruction, (list, tuple)) else [instruction]
    return [part_of(p) for p in items]


def output_messages(responses: list[Any]) -> list[Message]:
    """One output message per candidate, over every response of the call (one, or each stream chunk)."""
    parts: dict[int, list[Part]] = {}
    reasons: dict[int, str] = {}
    for response in responses:
        for position, candidate in enumerate(_g(response, "candidates") or ()):
            index = _g(candidate, "index")
            index = index if isinstance(index, int) else position
            found = parts.setdefault(index, [])
            for raw in _g(_g(candidate, "content"), "parts") or ():
                part = part_of(raw)
                last = found[-1] if found else None
                if last is not None and part["type"] in ("text", "reasoning") and last["type"] == part["type"]:
                    last["content"] += part["content"]  # a stream's text arrives in pieces
                else:
                    found.append(part)
            reason = _g(candidate, "finish_reason")
            if reason is not None:
                reasons[index] = str(getattr(reason, "value", reason))
    return [output_message(parts[i], reasons.get(i)) for i in sorted(parts)]


__all__ = ["input_messages", "output_messages", "part_of", "system_instructions"]
