"""What the mapping reads from spans with one set of attribute keys, worked out once per key set.

Spans of one instrumentation carry the same attribute keys span after span. A :class:`KeyPlan` holds,
for one tuple of keys, which keys a prefix collects (``payi.units.*``, ``payi.request_properties.*``,
``payi.use_case_properties.*``), which spelling of a semantic-convention attribute is present (current
or older, see ``attributes.LEGACY``) and which optional attributes exist, so :mod:`.mapping` reads only
the attributes a span has, each once. Pure, no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from payi_otel import attributes as A
from payi_otel import protocol as P

from .attribute_values import OTHER_COUNTS, integer

__all__ = [
    "LIST_ATTRIBUTION",
    "REQUEST_PROPERTY",
    "SCALAR_ATTRIBUTION",
    "UNITS",
    "USE_CASE_PROPERTY",
    "KeyPlan",
    "collected",
    "key_plan",
    "known_plan",
    "read",
    "simple_units",
    "to_int",
]

# Span attribute -> event field of the attribution, by value kind.
_ATTRIBUTION = [f for f in P.CONTEXT_FIELDS if f.role == P.ATTRIBUTION]
SCALAR_ATTRIBUTION = (
    *((f.attribute, f.event_field) for f in _ATTRIBUTION if f.kind == P.STR),
    (A.PAYI_INSTRUMENTED_MODULE, "instrumented_module"),
)
LIST_ATTRIBUTION = tuple((f.attribute, f.event_field) for f in _ATTRIBUTION if f.kind == P.LIST)
# Optional event fields copied as strings when the span has a non-empty value.
_OPTIONAL_STRINGS = ((A.PAYI_PROVIDER_URI, "provider_uri"), (A.PAYI_RESERVATION_ID, "reservation_id"))

_UNITS_PREFIX = A.PAYI_UNITS_PREFIX
_REQ_PREFIX = A.PAYI_REQUEST_PROPERTIES_PREFIX
_UC_PREFIX = A.PAYI_USE_CASE_PROPERTIES_PREFIX
UNITS, REQUEST_PROPERTY, USE_CASE_PROPERTY = 0, 1, 2


@functools.lru_cache(maxsize=4096)
def collected(key: str) -> tuple[int, str, str] | None:
    """How the mapping collects attribute ``key`` by its prefix: ``(kind, name, direction)``, or ``None``."""
    if key.startswith(_UNITS_PREFIX):
        unit, _, direction = key[len(_UNITS_PREFIX) :].rpartition(".")
        return (UNITS, unit, direction) if unit and direction in ("input", "output") else None
    if key.startswith(_REQ_PREFIX):
        return REQUEST_PROPERTY, key[len(_REQ_PREFIX) :], ""
    if key.startswith(_UC_PREFIX):
        return USE_CASE_PROPERTY, key[len(_UC_PREFIX) :], ""
    return None


class KeyPlan:
    """What the mapping reads from spans whose attributes have ``keys`` (in this order)."""

    __slots__ = (
        "cache_read",
        "collected",
        "content",
        "function_calls",
        "input_tokens",
        "list_attribution",
        "optional_strings",
        "output_tokens",
        "overrides",
        "provider",
        "request_model",
        "response_model",
        "scalar_attribution",
        "simple_usage",
        "ttft",
        "version",
    )

    def __init__(self, keys: tuple[str, ...]) -> None:
        present = frozenset(keys)
        self.collected = tuple((key, *how) for key in keys if (how := collected(key)) is not None)
        # a spelled attribute: its one present spelling (None: absent), or all of them (read in order by first())
        self.provider = _spelling(present, A.GEN_AI_PROVIDER_NAME)
        self.request_model = _spelling(present, A.GEN_AI_REQUEST_MODEL)
        self.response_model = _spelling(present, A.GEN_AI_RESPONSE_MODEL)
        self.input_tokens = _spelling(present, A.GEN_AI_USAGE_INPUT_TOKENS)
        self.output_tokens = _spelling(present, A.GEN_AI_USAGE_OUTPUT_TOKENS)
        self.cache_read = _spelling(present, A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)
        self.simple_usage = present.isdisjoint(OTHER_COUNTS)  # totals and cache reads at most
        self.ttft = A.PAYI_TIME_TO_FIRST_TOKEN_MS in present or A.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK in present
        self.function_calls = A.PAYI_FUNCTION_CALLS in present
        self.version = A.PAYI_USE_CASE_VERSION in present
        # attributes most spans lack, read only when the key set has one
        self.content = A.GEN_AI_INPUT_MESSAGES in present or A.GEN_AI_OUTPUT_MESSAGES in present
        self.overrides = not present.isdisjoint((A.PAYI_PROXIED, A.PAYI_PRICE_AS_CATEGORY, A.PAYI_PRICE_AS_RESOURCE))
        self.optional_strings = tuple(pair for pair in _OPTIONAL_STRINGS if pair[0] in present)
        self.scalar_attribution = tuple(pair for pair in SCALAR_ATTRIBUTION if pair[0] in present)
        self.list_attribution = tuple(pair for pair in LIST_ATTRIBUTION if pair[0] in present)


def _spelling(present: frozenset[str], key: str) -> str | tuple[str, ...] | None:
    found = tuple(name for name in (key, *A.LEGACY.get(key, ())) if name in present)
    return None if not found else found[0] if len(found) == 1 else found


def read(attrs: Mapping[str, Any], spelling: str | tuple[str, ...] | None) -> Any:
    """:func:`~.attribute_values.first` over the spellings a plan found: the first one that is not None."""
    if spelling is None:
        return None
    if spelling.__class__ is str:
        return attrs.get(spelling)
    for name in spelling:
        value = attrs.get(name)
        if value is not None:
            return value
    return None


_plans: dict[tuple[str, ...], KeyPlan] = {}
_PLANS_MAX = 1024
# The plan already made for a tuple of keys, or None: a lookup without a Python call (the dict is cleared, never
# replaced, so this stays bound to it).
known_plan: Callable[[tuple[str, ...]], KeyPlan | None] = _plans.get


def key_plan(attrs: Mapping[str, Any]) -> KeyPlan:
    """The plan for the keys of ``attrs`` (kept for the next span with the same keys)."""
    keys = tuple(attrs)
    plan = _plans.get(keys)
    if plan is None:
        if len(_plans) >= _PLANS_MAX:
            _plans.clear()
        plan = _plans[keys] = KeyPlan(keys)
    return plan


def to_int(value: Any) -> int | None:
    """:func:`~.attribute_values.integer`, an int itself without a call."""
    return value if value.__class__ is int else None if value is None else integer(value)


def simple_units(attrs: Mapping[str, Any], plan: KeyPlan) -> dict[str, dict[str, int]]:
    """:func:`~.attribute_values.semconv_units` of a span that reports input and output totals and cache
    reads at most, with the spellings its plan found."""
    get: Callable[[Any], Any] = attrs.get  # a plan's one spelling (a str, or None: absent) without a call
    spelling = plan.input_tokens
    input_tokens = get(spelling) if spelling.__class__ is not tuple else read(attrs, spelling)
    spelling = plan.output_tokens
    output_tokens = get(spelling) if spelling.__class__ is not tuple else read(attrs, spelling)
    spelling = plan.cache_read
    cache_read = get(spelling) if spelling.__class__ is not tuple else read(attrs, spelling)
    if input_tokens.__class__ is not int:
        input_tokens = to_int(input_tokens)
    if output_tokens.__class__ is not int:
        output_tokens = to_int(output_tokens)
    if cache_read.__class__ is not int:
        cache_read = to_int(cache_read) or 0
    units = {}
    if input_tokens is not None or output_tokens is not None:
        text_input = (input_tokens or 0) - cache_read  # max(..., 0) without a call
        text_output = output_tokens or 0
        units["text"] = {"input": text_input if text_input > 0 else 0, "output": text_output if text_output > 0 else 0}
    if cache_read > 0:
        units["text_cache_read"] = {"input": cache_read, "output": 0}
    return units
