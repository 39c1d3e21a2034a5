"""Writing a call's response-side attributes on its span at the cost of a dictionary update.

The OpenTelemetry SDK's ``Span.set_attributes`` checks and cleans every value (several Python calls per
attribute: about 10,000 machine instructions for each one on CPython 3.11), which is most of what the
response side of a call costs on the caller's thread. The values the span core writes are already what
that cleaning produces (``str``, ``bool``, ``int``, ``float``, lists of ``str``, which the SDK stores as
tuples), so :func:`set_attributes` stores them directly in the SDK span's attribute mapping, under the
same two locks and with the same rules (a key written again moves to the end; nothing on an ended span).

It does so only when the outcome is identical to the SDK's own: an SDK span whose class does not override
``set_attributes``, whose attribute store is the SDK's ``BoundedAttributes`` with no value-length limit and
room for every new attribute (so nothing is truncated or dropped), and only values of exactly those types.
Anything else (another SDK, a span subclass, a configured ``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT``, a
full span, an ended span, another value type) goes through ``span.set_attributes``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Span

__all__ = ["set_attributes"]

logger = logging.getLogger(__name__)

_PLAIN = frozenset({str, bool, int, float})

try:
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.trace import Span as _SDKSpan
except ImportError:  # pragma: no cover - the SDK is a dependency; without it every span takes the API path
    _SDKSpan = None  # type: ignore[assignment,misc]
    BoundedAttributes = None  # type: ignore[assignment,misc]

# Span classes seen so far -> whether their set_attributes is the SDK's own (decided once per class).
_direct_types: dict[type, bool] = {}


def _is_direct(cls: type) -> bool:
    direct = _direct_types.get(cls)
    if direct is None:
        direct = (
            _SDKSpan is not None
            and issubclass(cls, _SDKSpan)
            and getattr(cls, "set_attributes", None) is _SDKSpan.set_attributes
        )
        if len(_direct_types) < 64:  # a process has one or two span classes
            _direct_types[cls] = direct
    return direct


def _cleaned(attributes: Mapping[str, Any]) -> list[tuple[str, Any]] | None:
    """The (key, value) pairs as the SDK would store them, or None when a value needs the SDK's cleaning."""
    items = []
    for key, value in attributes.items():
        cls = type(value)
        if cls in _PLAIN:
            items.append((key, value))
        elif cls is list and all(type(v) is str for v in value):
            items.append((key, tuple(value)))
        else:
            return None
    return items


def set_attributes(span: Span, attributes: Mapping[str, Any]) -> None:
    """``span.set_attributes(attributes)``, with the same outcome, for the attributes the span core writes."""
    if _is_direct(type(span)):
        try:
            if _store(span, attributes):
                return
        except AttributeError:  # an SDK release with other internals: the public method from now on
            logger.debug("span attributes: the SDK's internals differ; using set_attributes", exc_info=True)
            _direct_types[type(span)] = False
    span.set_attributes(attributes)


def _store(span: Any, attributes: Mapping[str, Any]) -> bool:
    """Store ``attributes`` in the SDK span's attribute mapping; False (nothing written) when the SDK's own
    path must decide."""
    store = span._attributes
    if type(store) is not BoundedAttributes or store.max_value_len is not None:
        return False
    items = _cleaned(attributes)
    if items is None:
        return False
    with span._lock:
        if span._end_time is not None:
            return False  # the SDK warns and ignores the attributes
        values = store._dict
        maxlen = store.maxlen
        if maxlen is not None and len(values) + len(items) > maxlen:
            return False  # the SDK drops the oldest attributes to make room
        with store._lock:
            for key, value in items:
                if key in values:
                    del values[key]
                values[key] = value
    return True
