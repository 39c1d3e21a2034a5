"""Image tokens of an Anthropic request, so that Pay-i's ``vision`` unit is split from ``text``.

Anthropic bills an image as ``width x height / 750`` tokens, after scaling it down (aspect ratio kept)
until its long edge is at most 1568 pixels and it is at most about 1600 tokens (1.2 megapixels). Pay-i
prices those tokens as ``vision.input``; its SDK estimates them as the reported input minus a tiktoken
count of the request's text, which needs an encoding download. Here the images are measured instead:
the width and height are read from the first bytes of each base64 image (PNG, JPEG, GIF, WebP, the
formats the API accepts), with no image library and nothing fetched. When any image of the request
cannot be measured (a URL or file reference, an unknown format), no split is made and all input stays
``text``, as it was. Only requests whose messages hold image blocks (also inside tool results) pay for
the look.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import Any

from payi_otel.instrumentation.anthropic._usage import g

_MAX_EDGE = 1568
_MAX_PIXELS = 1600 * 750
_PIXELS_PER_TOKEN = 750
_HEAD_CHARS = 64  # base64 characters that hold the dimensions of a PNG, GIF or WebP
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, JPEG, GIF or WebP image from its bytes; None when not recognised."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data.startswith((b"GIF87a", b"GIF89a")) and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if kind == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if kind == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF
        return None
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def image_tokens_for(width: int, height: int) -> int:
    """Tokens Anthropic bills for a ``width`` x ``height`` image."""
    if width <= 0 or height <= 0:
        return 0
    scale = min(1.0, _MAX_EDGE / max(width, height), math.sqrt(_MAX_PIXELS / (width * height)))
    return math.ceil(int(width * scale) * int(height * scale) / _PIXELS_PER_TOKEN)


def _base64_size(encoded: str) -> tuple[int, int] | None:
    try:
        size = image_size(base64.b64decode(encoded[:_HEAD_CHARS]))
        if size is None and encoded.startswith("/9j/"):  # JPEG: the size follows the metadata segments
            size = image_size(base64.b64decode(encoded))
    except (binascii.Error, ValueError, struct.error):
        return None
    return size


def _blocks(messages: Any) -> Any:
    for message in messages:
        content = g(message, "content")
        if isinstance(content, (list, tuple)):
            for block in content:
                yield block
                if g(block, "type") == "tool_result":
                    inner = g(block, "content")
                    if isinstance(inner, (list, tuple)):
                        yield from inner


def _may_hold_images(messages: list[Any] | tuple[Any, ...]) -> bool:
    """A cheap first look (every call pays it): does any message have an image or tool-result block?"""
    for message in messages:
        content = message.get("content") if type(message) is dict else getattr(message, "content", None)
        if isinstance(content, (list, tuple)):
            for block in content:
                kind = block.get("type") if type(block) is dict else getattr(block, "type", None)
                if kind == "image" or kind == "tool_result":
                    return True
    return False


def request_image_tokens(messages: Any) -> int:
    """Tokens of the images in ``messages``; 0 when there are none or any cannot be measured."""
    if not isinstance(messages, (list, tuple)) or not _may_hold_images(messages):
        return 0
    total = 0
    for block in _blocks(messages):
        if g(block, "type") != "image":
            continue
        source = g(block, "source")
        data = g(source, "data") if g(source, "type") == "base64" else None
        size = _base64_size(data) if isinstance(data, str) else None
        if size is None:
            return 0
        total += image_tokens_for(*size)
    return total


__all__ = ["image_size", "image_tokens_for", "request_image_tokens"]
