"""Readers from google-genai results to the call record: responses, stream chunks, errors.

Every reader works on SDK objects (those of usage and ids also on plain dicts) and never raises on a missing
field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from payi_otel import fastjson
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
        return fastjson.compact(args)  # parsed JSON
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

    A non-streamed call adds one response; a stream adds every chunk, read as it is added (the first
    response id and model version, the last ``usage_metadata``, the last finish reason of each candidate,
    every function call in order), so that no chunk is kept: keeping a stream's chunks until its end costs
    the caller several microseconds per chunk (the memory and the garbage collector's work of the SDK's
    objects, which it frees as it goes otherwise); :meth:`fill` writes them into the record."""

    __slots__ = ("added", "finish", "model_version", "response_id", "tool_calls", "usage")

    def __init__(self) -> None:
        self.added = False
        self.response_id: Any = None
        self.model_version: Any = None
        self.usage: Any = None
        self.finish: dict[int, str] = {}
        self.tool_calls: list[dict[str, str]] = []

    def add(self, response: Any) -> bool:
        if not self.added:
            self.added = True
            self.response_id = _g(response, "response_id")
            self.model_version = _g(response, "model_version")
        return self.read(response)

    def read(self, response: Any) -> bool:
        """:meth:`add` after the first response (a stream proxy calls it for each chunk)."""
        try:  # plain attribute reads (about half the cost of getattr with a default), of fields the SDK's
            usage = response.usage_metadata  # types have in every release
            if usage is not None:
                self.usage = usage
            candidates = response.candidates
            if candidates:
                for candidate in candidates:
                    reason = candidate.finish_reason
                    if reason is not None:
                        index = candidate.index  # none when Vertex AI sends a candidate alone: its position
                        if not isinstance(index, int):
                            index = next(i for i, c in enumerate(candidates) if c is candidate)
                        self.finish[index] = _enum_name(reason) or ""
                    content = candidate.content
                    if content is not None:
                        for part in content.parts or ():
                            fc = part.function_call
                            if fc is not None:
                                self._tool_call(fc)
        except AttributeError:  # not the SDK's response objects
            logger.debug("unexpected google-genai response shape", exc_info=True)
        return True

    def _tool_call(self, fc: Any) -> None:
        name = getattr(fc, "name", None) or ""
        self.tool_calls.append({"name": name, "arguments": _arguments(getattr(fc, "args", None))})

    def fill(self, rec: CallRecord) -> None:
        rec.response_id = self.response_id or None
        rec.response_model = self.model_version or None
        model = resource_model(rec.response_model or rec.request_model)
        rec.resource = f"google.{model}" if model else None
        rec.usage = usage_from_metadata(self.usage, model)
        finish = self.finish
        if finish:
            rec.finish_reasons = [finish[k] for k in sorted(finish) if finish[k]]
        if self.tool_calls:
            rec.tool_calls = self.tool_calls


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
    """Stream handler of ``generate_content_stream``: every chunk is a full response object, read as it
    comes (:class:`ResponseState`) and kept only when the content is captured. Until the first chunk with
    output the handler also looks for it; after it, the stream proxy calls the reader itself (:meth:`bind`)."""

    __slots__ = ("call", "kept", "read", "state", "use")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.state = ResponseState()
        self.kept: list[Any] = []  # the chunks, when their content is captured
        self.read: Callable[[Any], object] = self._read_and_keep if call.capture_content else self.state.read
        self.use: Callable[[Callable[[Any], object]], None] | None = None

    def bind(self, use: Callable[[Callable[[Any], object]], None]) -> None:
        self.use = use

    def _read_and_keep(self, chunk: Any) -> bool:
        self.kept.append(chunk)
        return self.state.read(chunk)

    def on_chunk(self, chunk: Any) -> bool:
        if self.call.capture_content:
            self.kept.append(chunk)
        self.state.add(chunk)
        if getattr(chunk, "candidates", None):  # output, not a usage-only chunk
            self.call.first_token()
            use, self.use = self.use, None  # (the reference back to the proxy's tracker is dropped)
            if use is not None:
                use(self.read)
        return True

    def on_end(self, call: Call, outcome: str, error: BaseException | None) -> None:
        self.use = None
        rec = call.record
        rec.stream_outcome = outcome
        self.state.fill(rec)
        if call.capture_content:
            rec.output_messages = output_messages(self.kept)
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
