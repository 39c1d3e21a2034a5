"""Message content in the GenAI semantic conventions' JSON schema, and where it goes.

Provider modules turn their request and response messages into this schema with the builders below
(:func:`text_part`, :func:`tool_call_part`, :func:`tool_call_response_part`, :func:`message`,
:func:`output_message`); the span core writes them, as the capture mode says, on the span
(``gen_ai.input.messages``, ``gen_ai.output.messages``, ``gen_ai.system_instructions``: JSON strings)
and/or in a ``gen_ai.client.inference.operation.details`` event (structured values).

A message is ``{"role": ..., "parts": [...]}``; an output message also carries ``finish_reason``.
Parts are ``{"type": "text", "content": ...}``, ``{"type": "tool_call", "id", "name", "arguments"}``
and ``{"type": "tool_call_response", "id", "response"}``; system instructions are a list of parts.

``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` takes the values opentelemetry-util-genai
defines (any letter case): ``NO_CONTENT`` (the default), ``SPAN_ONLY``, ``EVENT_ONLY``,
``SPAN_AND_EVENT``; ``true`` (content on spans, as before the modes existed) and ``false`` are kept.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
INFERENCE_DETAILS_EVENT = "gen_ai.client.inference.operation.details"

Part = dict[str, Any]
Message = dict[str, Any]


class ContentMode(enum.Enum):
    """Where message content is recorded (opentelemetry-util-genai's ``ContentCapturingMode``)."""

    NO_CONTENT = 0
    SPAN_ONLY = 1
    EVENT_ONLY = 2
    SPAN_AND_EVENT = 3

    @property
    def captures(self) -> bool:
        return self is not ContentMode.NO_CONTENT

    @property
    def on_span(self) -> bool:
        return self in (ContentMode.SPAN_ONLY, ContentMode.SPAN_AND_EVENT)

    @property
    def in_event(self) -> bool:
        return self in (ContentMode.EVENT_ONLY, ContentMode.SPAN_AND_EVENT)


_ALIASES = {"TRUE": ContentMode.SPAN_ONLY, "FALSE": ContentMode.NO_CONTENT}
_RULE = "one of NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT (any case), or true / false"


def parse_content_mode(value: object, source: str = CAPTURE_CONTENT_ENV) -> ContentMode:
    """A capture mode from its name (any case), ``true``/``false`` or a bool; ValueError names ``source``."""
    if isinstance(value, ContentMode):
        return value
    if isinstance(value, bool):
        return ContentMode.SPAN_ONLY if value else ContentMode.NO_CONTENT
    if isinstance(value, str):
        name = value.strip().upper()
        mode = _ALIASES.get(name) or ContentMode.__members__.get(name)
        if mode is not None:
            return mode
    raise ValueError(f"{source}: {value!r} is not a content capture mode; it must be {_RULE}")


def content_mode_from_env() -> ContentMode:
    """The capture mode the environment sets; an unknown value is logged (naming the variable and the
    rule) and no content is captured."""
    raw = os.environ.get(CAPTURE_CONTENT_ENV, "")
    if not raw.strip():
        return ContentMode.NO_CONTENT
    try:
        return parse_content_mode(raw)
    except ValueError as exc:
        logger.error("%s; capturing no message content", exc)
        return ContentMode.NO_CONTENT


# --- the schema's building blocks ----------------------------------------------------------------
def text_part(content: str) -> Part:
    return {"type": "text", "content": content}


def tool_call_part(call_id: str | None, name: str, arguments: Any) -> Part:
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def tool_call_response_part(call_id: str | None, response: Any) -> Part:
    return {"type": "tool_call_response", "id": call_id, "response": response}


def message(role: str, parts: Iterable[Part]) -> Message:
    return {"role": role, "parts": list(parts)}


def output_message(parts: Iterable[Part], finish_reason: str | None, role: str = "assistant") -> Message:
    return {"role": role, "parts": list(parts), "finish_reason": finish_reason or ""}


__all__ = [
    "CAPTURE_CONTENT_ENV",
    "INFERENCE_DETAILS_EVENT",
    "ContentMode",
    "content_mode_from_env",
    "message",
    "output_message",
    "parse_content_mode",
    "text_part",
    "tool_call_part",
    "tool_call_response_part",
]
