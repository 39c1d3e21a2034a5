"""Server-sent events as the proxy forwards them: split into whole events, read, and one rewritten."""

from __future__ import annotations

import re
from typing import Any

import orjson

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\n|\r")


class EventSplitter:
    """Cuts a byte stream into whole events (each with its blank-line end), as bytes arrive."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        events = []
        start = 0
        while (end := _EVENT_END.search(self._buffer, start)) is not None:
            events.append(self._buffer[start : end.end()])
            start = end.end()
        self._buffer = self._buffer[start:]
        return events

    def rest(self) -> bytes:
        """What arrived after the last whole event (a stream that ended mid-event)."""
        rest, self._buffer = self._buffer, b""
        return rest


def read_event(block: bytes) -> tuple[str | None, bytes | None]:
    """The ``event:`` name and the joined ``data:`` of one event (None when it has none)."""
    body = block.rstrip(b"\r\n")
    if body.startswith(b"data:") and b"\n" not in body and b"\r" not in body:  # one data line: most events
        return None, body[6:] if body[5:6] == b" " else body[5:]
    name: str | None = None
    data: list[bytes] = []
    for line in _LINE.split(block):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return name, b"\n".join(data) if data else None


def json_data(data: bytes | None) -> Any:
    if not data:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def with_member(document: bytes, key: str, value: Any) -> bytes:
    """A JSON object's bytes with one more member at its end, the provider's bytes otherwise unchanged."""
    body = document.rstrip()
    inner = body[:-1].rstrip()
    separator = b"" if inner.endswith(b"{") else b","
    return inner + separator + orjson.dumps(key) + b":" + orjson.dumps(value) + b"}"


def rewrite_event(block: bytes, data: dict[str, Any], key: str, value: Any) -> bytes:
    """An event whose JSON data gets one more member; its other lines and its end kept."""
    end = _EVENT_END.search(block)
    ending = block[end.start() : end.end()] if end else b"\n\n"
    newline = _LINE.search(ending)
    nl = newline.group(0) if newline else b"\n"
    lines = [line for line in _LINE.split(block[: end.start()] if end else block) if not line.startswith(b"data:")]
    lines.append(b"data: " + orjson.dumps({**data, key: value}))
    return nl.join(lines) + ending


def data_event(value: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(value) + b"\n\n"
