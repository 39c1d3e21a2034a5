"""Reading ingest bodies: the JSON of one event (``POST /api/v1/ingest``) or of a bulk array.

Each body is validated against the ingest models; a bulk body's bad items are reported one by one
(by their own error) without rejecting the good ones. Large bulk bodies are read item by item, so
that no single parse holds the GIL (and with it the event loop) for long.
"""

from __future__ import annotations

import codecs
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from payi_otel import protocol as P
from payi_otel.service.errors import PayiApiError, bad_request, validation_error
from payi_otel.service.models import BulkIngestRequest, IngestRequest


def require_json(content_type: str | None) -> None:
    """Ingest bodies are JSON: any other declared media type (or none) is refused with 415."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise PayiApiError(
            415,
            "invalid_content_type",
            f"Content-Type must be application/json, got {P.preview(content_type) if content_type else 'none'}",
        )


def parse_single(body: bytes) -> IngestRequest:
    if not body.strip():
        raise bad_request("invalid_json", "body is empty; expected a JSON object")
    try:
        return IngestRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


_BULK_ITEMS = TypeAdapter(list[BulkIngestRequest])
# Larger bulk bodies are read one item at a time: parsing 16 MiB in one call would hold the GIL
# (and so the event loop) for longer than a health check may wait.
_WHOLE_PARSE_BYTES = 1024 * 1024
YIELD_EVERY = 16  # bulk items between two offers of the GIL to other threads
_JSON_TEXT = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def parse_bulk(body: bytes) -> list[BulkIngestRequest | PayiApiError]:
    """The items of a bulk body, each parsed or the error that rejects it alone.

    A body whose items are all valid is validated in one pass; otherwise item by item, so each
    bad item gets its own error. Bodies over 1 MiB are always read item by item.
    """
    items: list[BulkIngestRequest | PayiApiError]
    if len(body) > _WHOLE_PARSE_BYTES:
        items = []
        for text in _bulk_item_texts(body):
            items.append(_parse_bulk_item_json(text))
            _check_item_count(len(items))
            if len(items) % YIELD_EVERY == 0:
                time.sleep(0)  # let the event loop's thread take the GIL now
        return items
    try:
        items = list(_BULK_ITEMS.validate_json(body))
    except ValidationError:
        items = [_parse_bulk_item(item) for item in _parse_bulk_array(body)]
    _check_item_count(len(items))
    return items


def _check_item_count(count: int) -> None:
    if count > P.MAX_BULK_ITEMS:
        raise bad_request("invalid_field_value", f"body: at most {P.MAX_BULK_ITEMS} events per bulk request")


def _text_pieces(body: bytes) -> Iterator[str]:
    """The body decoded as UTF-8, 1 MiB at a time (one call over 16 MiB would hold the GIL long)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(body)
    try:
        for start in range(0, len(body), _WHOLE_PARSE_BYTES):
            yield decoder.decode(view[start : start + _WHOLE_PARSE_BYTES])
        yield decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise bad_request("invalid_json", f"body is not valid UTF-8: {exc.reason}") from None


def _bulk_item_texts(body: bytes) -> Iterator[str]:
    """The JSON text of each item of a bulk body's array, found piece by piece without parsing (or
    even decoding) the whole body in one call."""
    pieces = _text_pieces(body)
    text, at, more = "", 0, True

    def need(count: int) -> bool:
        """Make sure ``text[at:]`` holds at least ``count`` characters (False: the body ended)."""
        nonlocal text, at, more
        while len(text) - at < count and more:
            piece = next(pieces, None)
            if piece is None:
                more = False
            else:
                text, at = text[at:] + piece, 0
        return len(text) - at >= count

    def skip_whitespace() -> str:
        nonlocal at
        while need(1):
            at = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
            if at < len(text):
                return text[at]
        return ""

    if skip_whitespace() != "[":
        raise bad_request("invalid_json", "body must be a JSON array of events")
    at += 1
    if skip_whitespace() == "]":
        at += 1
    else:
        while True:
            while True:
                try:
                    _, end = _JSON_TEXT.raw_decode(text, at)
                    break
                except json.JSONDecodeError as exc:
                    if not more or not need(len(text) - at + 1):  # the item may go on in the next piece
                        raise bad_request("invalid_json", f"body is not valid JSON: {exc}") from None
            yield text[at:end]
            at = end
            separator = skip_whitespace()
            at += 1
            if separator == "]":
                break
            if separator != ",":
                raise bad_request("invalid_json", "body is not valid JSON: expected ',' or ']' after an item")
            skip_whitespace()
    if skip_whitespace():
        raise bad_request("invalid_json", "body is not valid JSON: data after the array")


def _parse_bulk_item_json(text: str) -> BulkIngestRequest | PayiApiError:
    if not text.startswith("{"):
        return bad_request("invalid_json", "each bulk item must be a JSON object")
    try:
        return BulkIngestRequest.model_validate_json(text)
    except ValidationError as exc:
        return validation_error(exc)


def _parse_bulk_array(body: bytes) -> list[Any]:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request("invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise bad_request("invalid_json", "body must be a JSON array of events")
    return items


def _parse_bulk_item(item: Any) -> BulkIngestRequest | PayiApiError:
    if not isinstance(item, dict):
        return bad_request("invalid_json", "each bulk item must be a JSON object")
    try:
        return BulkIngestRequest.model_validate(item)
    except ValidationError as exc:
        return validation_error(exc)
