"""JSON text of the values the instrumentation encodes for every call that has them (tool calls and their
arguments), exactly as the standard library writes them, without its per-call setup.

``json.dumps`` and ``JSONEncoder.encode`` build a new C encoder (and a closure) on every call and check for
circular references with a dictionary of the containers being encoded: more than the encoding of a small value
itself. The values encoded here are parsed JSON, or dicts of strings built by the instrumentation, which cannot be
circular, so one C encoder without that check is built once per form and reused (it keeps no state between
calls, so threads share it). Without the standard library's C encoder the standard functions are used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _stdlib
from typing import Any

__all__ = ["compact", "dumps"]


def _reused(
    standard: Callable[[Any], str], default: Callable[[Any], Any], ensure_ascii: bool, separators: tuple[str, str]
) -> Callable[[Any], str]:
    make: Any = getattr(_stdlib, "c_make_encoder", None)
    if make is None:  # pragma: no cover - a Python without the _json accelerator
        return standard
    encode_str = _stdlib.encode_basestring_ascii if ensure_ascii else _stdlib.encode_basestring
    item_separator, key_separator = separators
    # The arguments JSONEncoder.iterencode gives it (markers None: no circular-reference check).
    chunks = make(None, default, encode_str, None, key_separator, item_separator, False, False, True)

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


# ``json.dumps(value)``: ASCII only, ", " and ": " separators; a value of another type raises TypeError.
dumps: Callable[[Any], str] = _reused(json.dumps, json.JSONEncoder().default, True, (", ", ": "))

# ``json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))``.
compact: Callable[[Any], str] = _reused(
    json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":")).encode, str, False, (",", ":")
)
