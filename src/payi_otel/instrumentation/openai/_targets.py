"""What is wrapped: the declarative table of OpenAI surfaces (feature-probed, version-bounded)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from payi_otel.instrumentation._proxy_route import route_target
from payi_otel.instrumentation._wrapping import Target
from payi_otel.messages import Message
from payi_otel.units import Usage

from ._content import chat_input, responses_input, text_input
from ._operation import OpenAIOperation, State
from ._raw import helper_close_hook
from ._results import Reader, read_audio, read_chat, read_embeddings, read_images, read_responses
from ._usage import audio_usage, image_usage

# Builds the operation of one surface, for its sync (False) or async (True) class.
_Make = Callable[[bool], OpenAIOperation]


def targets(state: State) -> list[Target]:
    def op(
        operation: str,
        read: Reader,
        stream_kind: str | None,
        input_key: str | None,
        stream_usage: Callable[[Any], Usage | None] | None = None,
        content_in: Callable[[Any], list[Message] | None] = text_input,
    ) -> _Make:
        return lambda is_async: OpenAIOperation(
            state, operation, read, stream_kind, input_key, is_async, stream_usage=stream_usage, content_in=content_in
        )

    rows: list[Target] = []

    def both(module: str, sync_cls: str, methods: tuple[str, ...], make: _Make, since: str | None = None) -> None:
        for is_async, cls in ((False, sync_cls), (True, "Async" + sync_cls)):
            operation = make(is_async)
            rows.extend(Target(module, cls, m, operation, since=since) for m in methods)

    chat = op("chat", read_chat, "chat", "messages", content_in=chat_input)
    both("openai.resources.chat.completions.completions", "Completions", ("create", "parse"), chat, since="1.40")
    both("openai.resources.chat.completions", "Completions", ("create",), chat)
    # Before 1.50 beta.chat.completions.parse calls chat.completions.create (already wrapped): one span, not two.
    both("openai.resources.beta.chat.completions", "Completions", ("parse",), chat, since="1.50")
    responses = op("chat", read_responses, "responses", "input", content_in=responses_input)
    both("openai.resources.responses.responses", "Responses", ("create", "parse"), responses, since="1.66")
    both("openai.resources.responses", "Responses", ("create",), responses, since="1.66")
    both("openai.resources.embeddings", "Embeddings", ("create",), op("embeddings", read_embeddings, None, "input"))
    both(
        "openai.resources.completions",
        "Completions",
        ("create",),
        op("text_completion", read_chat, "completions", "prompt"),
    )
    for method, name in (("generate", "image_generation"), ("edit", "image_edit")):
        both("openai.resources.images", "Images", (method,), op(name, read_images, "events", "prompt", image_usage))
    for module, cls, name in (
        ("openai.resources.audio.transcriptions", "Transcriptions", "audio_transcription"),
        ("openai.resources.audio.translations", "Translations", "audio_translation"),
    ):
        both(module, cls, ("create",), op(name, read_audio, "events", None, audio_usage))
    both("openai.resources.audio.speech", "Speech", ("create",), op("audio_speech", read_audio, None, "input"))
    # Raw responses (shared with the other Stainless SDKs): the span ends when the caller parses, closes or
    # drops the body; stream helpers that close the HTTP response directly end their stream's span first.
    rows.extend(state.raw.targets())
    rows.append(route_target("openai"))
    for module, cls, method, hook in (
        ("openai.lib.streaming.chat._completions", "ChatCompletionStream", "close", helper_close_hook),
        ("openai.lib.streaming.chat._completions", "AsyncChatCompletionStream", "close", helper_close_hook),
        ("openai.lib.streaming.responses._responses", "ResponseStream", "close", helper_close_hook),
        ("openai.lib.streaming.responses._responses", "AsyncResponseStream", "close", helper_close_hook),
    ):
        rows.append(Target(module, cls, method, hook, raw=True))
    return rows
