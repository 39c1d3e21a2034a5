"""Parsing of environment settings shared by the instrumentation and the exporter."""

from __future__ import annotations

from typing import Any

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def parse_bool(value: Any, name: str, error: type[ValueError] = ValueError) -> bool:
    """``value`` as a bool (``true/1/yes/on`` or ``false/0/no/off``, any case); else ``error`` naming
    ``name`` and the rule."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise error(f"{name}={value!r}: must be true or false")
