"""Readers from google-genai results to the call record: responses, stream chunks, errors.

Every reader works on SDK objects (those of usage and ids also on plain dicts) and never raises on a missing
field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from payi_otel.core import COMPLETED, ERROR, Call, CallRecord
from payi_otel.instrumentation.google_genai._content import output_messages
from payi_otel.instrumentation.google_genai._usage import _g, embedding_usage, usage_from_metadata

_NO_EMBEDDING_USAGE = "the Gemini API reports no usage for embeddings"
_NO_USAGE_IN_STREAM = "no usage_metadata in stream"

logger = logging.getLogger(__name__)


def _enum_name(value: Any) -> str | None:
    if value is None:
        return None
    name = getattr(value, "value", value)
    return str(name) if name else None


def _arguments(args: Any) -> str:
    if args is None:
        return ""
    if isinstance(args, str):
        return args
    try:
        return json.dumps(args, default=str, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(args)


def resource_model(model: str | None) -> str | None:
    """``models/x``, ``publishers/google/models/x``, ``projects/.../models/x``, ``google/x`` -> ``x``."""
    if not model:
        return None
    if "models/" in model and not model.startswith("tunedModels/"):
        return model.rsplit("models/", 1)[1] or model
    if model.startswith("google/"):
        return model[len("google/") :]
    return model


class ResponseState:
    """What the responses of one call said: ids, model, usage, finish reasons, function calls.

    A non-streamed call adds one response; a stream adds every chunk. Adding only keeps the chunk (the
    caller holds it anyway); :meth:`fill` reads them once at the end: the first response id and model
    version, the last ``usage_metadata``, the last finish reason of each candidate, and every function
    call in order."""

    __slots__ = ("responses",)

    def __init__(self) -> None:
        self.responses: list[Any] = []

    def add(self, response: Any) -> bool:
        self.responses.append(response)
        return True

    def _usage_metadata(self) -> Any:
        for response in reversed(self.responses):
            usage = getattr(response, "usage_metadata", None)
            if usage is not None:
                return usage
        return None

    def _outputs(self) -> tuple[dict[int, str], list[dict[str, str]]]:
        """Finish reasons by candidate and function calls, read from the SDK's response objects. A stream's
        every part of every chunk is looked at here, once: plain attribute reads (about half the cost of
        ``getattr`` with a default), every field read being one the SDK's types have in every release."""
        finish: dict[int, str] = {}
        tool_calls: list[dict[str, str]] = []
        try:
            for response in self.responses:
                candidates = response.candidates
                if not candidates:
                    continue
                for position, candidate in enumerate(candidates):
                    reason = candidate.finish_reason
                    if reason is not None:
                        index = candidate.index  # none when Vertex AI sends a candidate alone: its position
                        finish[index if isinstance(index, int) else position] = _enum_name(reason) or ""
                    content = candidate.content
                    if content is not None:
                        for part in content.parts or ():
                            fc = part.function_call
                            if fc is not None:
                                name = getattr(fc, "name", None) or ""
                                tool_calls.append({"name": name, "arguments": _arguments(getattr(fc, "args", None))})
        except AttributeError:  # not the SDK's response objects
            logger.debug("unexpected google-genai response shape", exc_info=True)
        return finish, tool_calls

    def fill(self, rec: CallRecord) -> None:
        first = self.responses[0] if self.responses else None
        rec.response_id = _g(first, "response_id") or None
        rec.response_model = _g(first, "model_version") or None
        model = resource_model(rec.response_model or rec.request_model)
        rec.resource = f"google.{model}" if model else None
        rec.usage = usage_from_metadata(self._usage_metadata(), model)
        finish, tool_calls = self._outputs()
        if finish:
            rec.finish_reasons = [finish[k] for k in sorted(finish) if finish[k]]
        if tool_calls:
            rec.tool_calls = tool_calls


def read_generate(rec: CallRecord, result: Any) -> None:
    state = ResponseState()
    state.add(result)
    state.fill(rec)


def read_embed(rec: CallRecord, result: Any) -> None:
    model = resource_model(rec.request_model)
    rec.usage = embedding_usage(result, model)
    if rec.usage is None:
        rec.usage_incomplete_reason = _NO_EMBEDDING_USAGE


def read_images(rec: CallRecord, result: Any) -> None:
    """Imagen bills per generated image: ``image.output`` = images returned."""
    from payi_otel.units import Usage

    images = _g(result, "generated_images")
    rec.usage = Usage(images=len(images)) if images is not None else None
    if not images:
        rec.usage_incomplete_reason = "no images returned"


def error_info(exc: BaseException) -> tuple[int | None, str | None]:
    """``google.genai.errors.APIError``: its ``code`` is the HTTP status (no request id is exposed)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
        return code, None
    return None, None


class GenerateStream:
    """Stream handler of ``generate_content_stream``: every chunk is a full response object, kept as it
    comes (read once at the end). Until the first chunk with output the handler also looks for it; after
    it, the stream proxy appends the chunks itself (:meth:`bind`)."""

    __slots__ = ("call", "responses", "state", "use")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.state = ResponseState()
        self.responses = self.state.responses
        self.use: Callable[[Callable[[Any], object]], None] | None = None

    def bind(self, use: Callable[[Callable[[Any], object]], None]) -> None:
        self.use = use

    def on_chunk(self, chunk: Any) -> bool:
        self.responses.append(chunk)
        if getattr(chunk, "candidates", None):  # output, not a usage-only chunk
            self.call.first_token()
            use, self.use = self.use, None  # (the reference back to the proxy's tracker is dropped)
            if use is not None:
                use(self.responses.append)
        return True

    def on_end(self, call: Call, outcome: str, error: BaseException | None) -> None:
        self.use = None
        rec = call.record
        rec.stream_outcome = outcome
        self.state.fill(rec)
        if call.capture_content:
            rec.output_messages = output_messages(self.responses)
        if rec.usage is None:
            rec.usage_incomplete_reason = (
                _NO_USAGE_IN_STREAM if outcome == COMPLETED else f"stream ended before usage was reported ({outcome})"
            )
        elif outcome != COMPLETED:
            rec.usage_incomplete_reason = f"stream ended early ({outcome}); usage is the last reported"
        if outcome == ERROR and error is not None:
            call.fail(error)
        else:
            call.end()


__all__ = ["GenerateStream", "ResponseState", "error_info", "read_embed", "read_generate", "read_images"]
