"""The span -> event mapping written the plain way: every attribute read by name, every rule in order.

:func:`payi_otel.exporters.mapping.event_from_view` reads each span through a plan worked out once per
key set (:mod:`payi_otel.exporters.key_plans`); the tests hold it to this straightforward form of the
same rules over generated spans. A rule changed in the mapping is changed here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from payi_otel import attributes as A
from payi_otel import protocol as P
from payi_otel.exporters.attribute_values import (
    OutputTools,
    first,
    flag,
    function_calls,
    integer,
    semconv_units,
    strings,
    ttft_ms,
)
from payi_otel.exporters.key_plans import (
    _OPTIONAL_STRINGS,
    LIST_ATTRIBUTION,
    REQUEST_PROPERTY,
    SCALAR_ATTRIBUTION,
    UNITS,
    collected,
)
from payi_otel.exporters.mapping import (
    UNKNOWN_RESOURCE,
    _provider_call,
    _provider_category,
    _within_bounds,
    event_id,
)
from payi_otel.exporters.views import SpanView


def _iso(ns: int) -> str:
    """ISO-8601 UTC with offset and microseconds."""
    second, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest // 1000:06d}+00:00"


def _category(attrs: Mapping[str, Any]) -> str | None:
    category = attrs.get(A.PAYI_CATEGORY)
    if category:
        return str(category)
    if not _provider_call(attrs):
        return None
    provider = first(attrs, A.GEN_AI_PROVIDER_NAME)
    if not isinstance(provider, str):
        return None
    host = attrs.get(A.SERVER_ADDRESS)
    return _provider_category(provider, host if isinstance(host, str) else None)


def reference_event_from_view(view: SpanView, *, include_content: bool = True) -> dict[str, Any] | None:
    """What :func:`payi_otel.exporters.mapping.event_from_view` must return for ``view``."""
    attrs = view.attributes
    get = attrs.get
    category = _category(attrs)
    if category is None or get(A.PAYI_PROXIED) is True:  # a proxied call is stored by the proxy
        return None

    units: dict[str, dict[str, int]] = {}
    properties: dict[str, str] = {}
    use_case_properties: dict[str, str] = {}
    for key in attrs:
        how = collected(key)
        if how is None:
            continue
        kind, name, direction = how
        value = attrs[key]
        if kind == UNITS:
            count = integer(value)
            if count is not None:
                units.setdefault(name, {"input": 0, "output": 0})[direction] = count
        elif kind == REQUEST_PROPERTY:
            properties[name] = str(value)
        else:
            use_case_properties[name] = str(value)

    usage_complete = flag(get(A.PAYI_USAGE_COMPLETE))
    incomplete_reason = get(A.PAYI_USAGE_INCOMPLETE_REASON)
    tools = None
    output_messages = get(A.GEN_AI_OUTPUT_MESSAGES)
    if output_messages and A.PAYI_FUNCTION_CALLS not in attrs:  # a foreign span
        tools = OutputTools(output_messages)
    if not units:
        units = semconv_units(attrs, tools)
        if not units and usage_complete is None:
            usage_complete, incomplete_reason = False, incomplete_reason or "no usage reported"
    if usage_complete is False:
        properties[P.USAGE_INCOMPLETE] = "true"
        properties[P.USAGE_INCOMPLETE_REASON] = str(incomplete_reason or "usage not reported in full")

    resource = (
        get(A.PAYI_RESOURCE)
        or first(attrs, A.GEN_AI_REQUEST_MODEL)
        or first(attrs, A.GEN_AI_RESPONSE_MODEL)
        or UNKNOWN_RESOURCE
    )
    price_as_category = get(A.PAYI_PRICE_AS_CATEGORY)
    if price_as_category and price_as_category != category:
        properties["system.original_category"] = category
        category = str(price_as_category)
    price_as_resource = get(A.PAYI_PRICE_AS_RESOURCE)
    if price_as_resource and price_as_resource != resource:
        properties["system.original_resource"] = str(resource)
        resource = price_as_resource

    status = integer(get(A.PAYI_HTTP_STATUS_CODE))
    if status is None:
        status = integer(get(A.HTTP_RESPONSE_STATUS_CODE))
    if status is None:
        error_type = get(A.ERROR_TYPE)
        if error_type or view.is_error:
            status = P.FAILURE_STATUS
            properties[P.FAILURE] = str(error_type or "error").rsplit(".", 1)[-1]
            description = get(A.PAYI_FAILURE_DESCRIPTION) or view.status_message
            if description:
                properties[P.FAILURE_DESCRIPTION] = str(description)
        else:
            status = 200

    latency = integer(get(A.PAYI_LATENCY_MS))
    if latency is None:
        latency = max(view.end_ns - view.start_ns, 0) // 1_000_000

    event: dict[str, Any] = {
        "category": category,
        "resource": str(resource),
        "units": units,
        "event_timestamp": _iso(view.start_ns),
        "end_to_end_latency_ms": latency,
        "http_status_code": status,
        "provider_response_id": str(get(A.PAYI_PROVIDER_RESPONSE_ID) or get(A.GEN_AI_RESPONSE_ID) or event_id(view)),
    }
    ttft = ttft_ms(attrs)
    if ttft is not None:
        event["time_to_first_token_ms"] = ttft
    for attr, field in _OPTIONAL_STRINGS:
        value = get(attr)
        if value:
            event[field] = str(value)
    calls = function_calls(get(A.PAYI_FUNCTION_CALLS)) if tools is None else tools.calls
    if calls:
        event["provider_response_function_calls"] = calls
    if include_content:
        request_json = get(A.GEN_AI_INPUT_MESSAGES)
        if request_json:
            event["provider_request_json"] = str(request_json)
        if output_messages:
            event["provider_response_json"] = str(output_messages)
    if view.resource:  # service.name, ...: the span's own properties win
        properties = {**view.resource, **properties}
    if properties:
        event["properties"] = _within_bounds(properties)
    if use_case_properties:
        event["use_case_properties"] = _within_bounds(use_case_properties)

    for attr, field in SCALAR_ATTRIBUTION:
        value = get(attr)
        if value is not None and value != "":
            event[field] = str(value)
    version = integer(get(A.PAYI_USE_CASE_VERSION))
    if version is not None and 0 <= version <= P.MAX_USE_CASE_VERSION:  # out of range: the server refuses it
        event["use_case_version"] = version
    for attr, field in LIST_ATTRIBUTION:
        value = get(attr)
        if value:
            items = strings(value)
            if items:
                event[field] = items
    return event
