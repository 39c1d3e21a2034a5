"""Readers from google-genai results to the call record: responses, stream chunks, errors.

Every reader works on SDK objects and on plain dicts, and never raises on a missing field.
"""

from __future__ import annotations

import json
from typing import Any

from payi_otel.core import COMPLETED, ERROR, Call, CallRecord
from payi_otel.instrumentation.google_genai._usage import _g, embedding_usage, usage_from_metadata

_NO_EMBEDDING_USAGE = "the Gemini API reports no usage for embeddings"
_NO_USAGE_IN_STREAM = "no usage_metadata in stream"


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

    A non-streamed call reads one response; a stream reads every chunk (the last ``usage_metadata``
    and the last finish reason of each candidate win; function calls accumulate)."""

    __slots__ = ("finish", "model_version", "response_id", "tool_calls", "usage_metadata")

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.model_version: str | None = None
        self.usage_metadata: Any = None
        self.finish: dict[int, str] = {}
        self.tool_calls: list[dict[str, str]] = []

    def read(self, response: Any) -> None:
        if self.response_id is None:
            self.response_id = _g(response, "response_id") or None
        if self.model_version is None:
            self.model_version = _g(response, "model_version") or None
        usage = _g(response, "usage_metadata")
        if usage is not None:
            self.usage_metadata = usage
        for position, candidate in enumerate(_g(response, "candidates") or ()):
            reason = _enum_name(_g(candidate, "finish_reason"))
            if reason:
                index = _g(candidate, "index")
                self.finish[index if isinstance(index, int) else position] = reason
            for part in _g(_g(candidate, "content"), "parts") or ():
                fc = _g(part, "function_call")
                if fc is not None:
                    self.tool_calls.append({"name": _g(fc, "name") or "", "arguments": _arguments(_g(fc, "args"))})

    def fill(self, rec: CallRecord) -> None:
        rec.response_id = self.response_id
        rec.response_model = self.model_version
        model = resource_model(self.model_version or rec.request_model)
        rec.resource = f"google.{model}" if model else None
        rec.usage = usage_from_metadata(self.usage_metadata, model)
        if self.finish:
            rec.finish_reasons = [self.finish[k] for k in sorted(self.finish)]
        if self.tool_calls:
            rec.tool_calls = self.tool_calls


def read_generate(rec: CallRecord, result: Any) -> None:
    state = ResponseState()
    state.read(result)
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


def describe_error(rec: CallRecord, exc: BaseException) -> None:
    """``google.genai.errors.APIError``: its ``code`` is the HTTP status."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
        rec.status_code = code


class GenerateStream:
    """Stream handler of ``generate_content_stream``: every chunk is a full response object."""

    __slots__ = ("call", "state")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.state = ResponseState()

    def on_chunk(self, chunk: Any) -> bool:
        if getattr(chunk, "candidates", None):  # a chunk of output (not a usage-only one)
            self.call.first_token()
        self.state.read(chunk)
        return True

    def on_end(self, call: Call, outcome: str, error: BaseException | None) -> None:
        rec = call.record
        rec.stream_outcome = outcome
        self.state.fill(rec)
        if rec.usage is None:
            rec.usage_incomplete_reason = (
                _NO_USAGE_IN_STREAM if outcome == COMPLETED else f"stream ended before usage was reported ({outcome})"
            )
        elif outcome != COMPLETED:
            rec.usage_incomplete_reason = f"stream ended early ({outcome}); usage is the last reported"
        if outcome == ERROR and error is not None:
            describe_error(rec, error)
            call.fail(error)
        else:
            call.end()


__all__ = ["GenerateStream", "ResponseState", "describe_error", "read_embed", "read_generate", "read_images"]
