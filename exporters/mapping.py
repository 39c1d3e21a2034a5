"""Finished GenAI span -> Pay-i ingest event. Pure, no I/O.

:func:`event_from_view` builds one event dict that carries every field both ingest forms need:
the ``IngestRequest`` body fields plus the attribution (``use_case_*``, ``user_id``,
``account_name``, ``request_tags``, ``limit_ids``, ``resource_scope``) and ``instrumented_module``.
:func:`~.wire_forms.render_single` and :func:`~.wire_forms.render_bulk_item` turn that into the
two ingest forms.

Decisions worth knowing:

* ``provider_response_id`` is the provider's id when the span has one, else ``payi_<uuid>`` where
  the uuid is derived from the trace and span ids, so exporting the same span twice yields the same
  id and the server's dedupe keeps one event.
* Price-as overrides replace ``category``/``resource`` in the event (as Pay-i's SDK does in ingest
  mode); the values they replaced are kept as the properties ``system.original_category`` /
  ``system.original_resource`` so the provider's own model stays visible.
* Failures without a provider HTTP status get ``http_status_code`` 299 and the properties
  ``system.failure`` (short exception class name) and ``system.failure.description``.
* Usage the span marks incomplete (``payi.usage.complete=false``), and foreign spans without any
  token counts, carry ``system.usage_incomplete="true"`` and ``system.usage_incomplete.reason``.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from payi_otel import attributes as A
from payi_otel import protocol as P

from .attribute_values import OutputTools, first, flag, function_calls, integer, semconv_units, strings, ttft_ms
from .key_plans import REQUEST_PROPERTY, UNITS, KeyPlan, key_plan, known_plan, read, simple_units, to_int
from .views import SpanView, gc_paused, view_from_readable_span
from .wire_forms import ATTRIBUTION_FIELDS, render_bulk_item, render_single

__all__ = [
    "ATTRIBUTION_FIELDS",
    "event_from_span",
    "event_from_view",
    "event_id",
    "events_from_otlp_request",
    "render_bulk_item",
    "render_single",
]

UNKNOWN_RESOURCE = "system.unknown_model"
OPENAI_CATEGORY = A.PROVIDER_CATEGORIES["openai"]
AZURE_CATEGORY = A.PROVIDER_CATEGORIES["azure.ai.openai"]
_LIMIT = P.MAX_PROPERTY_VALUE_LENGTH


def event_id(view: SpanView) -> str:
    """``payi_<uuid>`` derived from the trace and span ids: stable for the same span."""
    digest = hashlib.blake2b(
        view.trace_id.to_bytes(16, "big") + view.span_id.to_bytes(8, "big"), digest_size=16
    ).digest()
    return "payi_" + str(uuid.UUID(bytes=digest, version=4))


def _provider_call(attrs: Mapping[str, Any]) -> bool:
    """Whether the span is one provider call (not an agent, tool or framework step).

    ``gen_ai.operation.name`` decides when present; spans without it (older OpenLLMetry, OpenInference)
    are calls when their ``llm.request.type`` / ``openinference.span.kind`` says so, or when they
    report token usage.
    """
    operation = attrs.get(A.GEN_AI_OPERATION_NAME)
    if operation is not None:
        return operation in A.PROVIDER_CALL_OPERATIONS
    kind = attrs.get(A.LLM_REQUEST_TYPE) or attrs.get(A.OPENINFERENCE_SPAN_KIND)
    if isinstance(kind, str):
        return kind.lower() in A.LEGACY_CALL_TYPES
    return (
        first(attrs, A.GEN_AI_USAGE_INPUT_TOKENS) is not None or first(attrs, A.GEN_AI_USAGE_OUTPUT_TOKENS) is not None
    )


@functools.lru_cache(maxsize=256)
def _provider_category(provider: str, host: str | None) -> str | None:
    category = A.PROVIDER_CATEGORIES.get(provider) or A.PROVIDER_CATEGORIES.get(provider.lower())
    # Azure OpenAI clients are "openai" to openai-v2: tell by the host
    if category == OPENAI_CATEGORY and host is not None and host.lower().endswith(A.AZURE_OPENAI_HOST_SUFFIXES):
        return AZURE_CATEGORY
    return category


def _category(attrs: Mapping[str, Any], plan: KeyPlan) -> str | None:
    get: Callable[[Any], Any] = attrs.get  # also given a plan's one spelling (a str, or None: absent)
    category = get(A.PAYI_CATEGORY)
    if category:
        return str(category)
    if not _provider_call(attrs):
        return None
    provider = get(plan.provider) if plan.provider.__class__ is not tuple else read(attrs, plan.provider)
    if not isinstance(provider, str):
        return None
    host = get(A.SERVER_ADDRESS)
    return _provider_category(provider, host if isinstance(host, str) else None)


@functools.lru_cache(maxsize=512)
def _iso_second(second: int) -> str:
    """The ISO-8601 UTC second of an event timestamp (spans of one batch share their seconds)."""
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def event_from_view(view: SpanView, *, include_content: bool = True) -> dict[str, Any] | None:
    """The ingest event for ``view``, or ``None`` when the span is not a GenAI provider call.

    Message content (``provider_request_json`` / ``provider_response_json``) is included only
    when the span carries it and ``include_content`` is true.
    """
    attrs = view.attributes
    get: Callable[[Any], Any] = attrs.get  # also given a plan's one spelling of an attribute (a str or None)
    plan = known_plan(tuple(attrs)) or key_plan(attrs)  # a known key set without a call
    category = _category(attrs, plan)
    if category is None or (plan.overrides and get(A.PAYI_PROXIED) is True):  # a proxied call is stored by the proxy
        return None

    units: dict[str, dict[str, int]] = {}
    properties: dict[str, str] = {}
    use_case_properties: dict[str, str] = {}
    for key, kind, name, direction in plan.collected:
        value = attrs[key]
        if kind == UNITS:
            count = value if value.__class__ is int else to_int(value)
            if count is not None:
                units.setdefault(name, {"input": 0, "output": 0})[direction] = count
        elif kind == REQUEST_PROPERTY:
            properties[name] = str(value)
        else:
            use_case_properties[name] = str(value)

    usage_complete = get(A.PAYI_USAGE_COMPLETE)
    if usage_complete is not None and usage_complete.__class__ is not bool:
        usage_complete = flag(usage_complete)
    incomplete_reason = get(A.PAYI_USAGE_INCOMPLETE_REASON)
    tools = None
    output_messages = get(A.GEN_AI_OUTPUT_MESSAGES) if plan.content else None
    if output_messages and not plan.function_calls:  # a foreign span
        tools = OutputTools(output_messages)
    if not units:
        if plan.simple_usage and (tools is None or not tools.web_searches):
            units = simple_units(attrs, plan)
        else:
            units = semconv_units(attrs, tools)
        if not units and usage_complete is None:
            usage_complete, incomplete_reason = False, incomplete_reason or "no usage reported"
    if usage_complete is False:
        properties[P.USAGE_INCOMPLETE] = "true"
        properties[P.USAGE_INCOMPLETE_REASON] = str(incomplete_reason or "usage not reported in full")

    resource = get(A.PAYI_RESOURCE)
    if not resource:
        request_model, response_model = plan.request_model, plan.response_model
        resource = (
            (get(request_model) if request_model.__class__ is not tuple else read(attrs, request_model))
            or (get(response_model) if response_model.__class__ is not tuple else read(attrs, response_model))
            or UNKNOWN_RESOURCE
        )
    if plan.overrides:
        price_as_category = get(A.PAYI_PRICE_AS_CATEGORY)
        if price_as_category and price_as_category != category:
            properties["system.original_category"] = category
            category = str(price_as_category)
        price_as_resource = get(A.PAYI_PRICE_AS_RESOURCE)
        if price_as_resource and price_as_resource != resource:
            properties["system.original_resource"] = str(resource)
            resource = price_as_resource

    status = get(A.PAYI_HTTP_STATUS_CODE)
    if status.__class__ is not int:  # ints (nearly always) and absent values without a call
        status = None if status is None else to_int(status)
        if status is None:
            status = get(A.HTTP_RESPONSE_STATUS_CODE)
            if status is not None and status.__class__ is not int:
                status = to_int(status)
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

    latency = get(A.PAYI_LATENCY_MS)
    if latency.__class__ is not int and (latency is None or (latency := to_int(latency)) is None):
        latency = max(view.end_ns - view.start_ns, 0) // 1_000_000
    second, rest = divmod(view.start_ns, 1_000_000_000)

    event: dict[str, Any] = {
        "category": category,
        "resource": str(resource),
        "units": units,
        # ISO-8601 UTC, microseconds (six digits: those of 1_000_000 + them, without a format spec to parse)
        "event_timestamp": f"{_iso_second(second)}.{str(1_000_000 + rest // 1000)[1:]}+00:00",
        "end_to_end_latency_ms": latency,
        "http_status_code": status,
        "provider_response_id": str(get(A.PAYI_PROVIDER_RESPONSE_ID) or get(A.GEN_AI_RESPONSE_ID) or event_id(view)),
    }
    if plan.ttft:
        ttft = get(A.PAYI_TIME_TO_FIRST_TOKEN_MS)
        if ttft.__class__ is not int:
            ttft = ttft_ms(attrs)
        if ttft is not None:
            event["time_to_first_token_ms"] = ttft
    for attr, field in plan.optional_strings:
        value = get(attr)
        if value:
            event[field] = str(value)
    if tools is not None:
        if tools.calls:
            event["provider_response_function_calls"] = tools.calls
    elif plan.function_calls:
        calls = function_calls(get(A.PAYI_FUNCTION_CALLS))
        if calls:
            event["provider_response_function_calls"] = calls
    if include_content and plan.content:
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

    for attr, field in plan.scalar_attribution:
        value = get(attr)
        if value is not None and value != "":
            event[field] = str(value)
    if plan.version:
        version = integer(get(A.PAYI_USE_CASE_VERSION))
        if version is not None and 0 <= version <= P.MAX_USE_CASE_VERSION:  # out of range: the server refuses it
            event["use_case_version"] = version
    for attr, field in plan.list_attribution:
        value = get(attr)
        if value:
            items = strings(value)
            if items:
                event[field] = items
    return event


def _within_bounds(properties: dict[str, str]) -> dict[str, str]:
    """Property values cut to the protocol's bound (e.g. a long failure description), so the server
    stores the event instead of refusing it."""
    limit = _LIMIT
    if max(map(len, properties.values()), default=0) <= limit:  # nearly always: nothing to cut
        return properties
    for key, value in properties.items():
        if len(value) > limit:
            properties[key] = value[: limit - 1] + "\u2026"
    return properties


def event_from_span(span: Any, *, include_content: bool = True) -> dict[str, Any] | None:
    """:func:`event_from_view` for an SDK ``ReadableSpan``."""
    return event_from_view(view_from_readable_span(span), include_content=include_content)


def events_from_otlp_request(
    body: bytes | str | Mapping[str, Any], content_type: str | None = None, *, include_content: bool = True
) -> list[dict[str, Any]]:
    """The ingest events of the GenAI provider-call spans in an OTLP trace export request.

    Same arguments and errors as :func:`~payi_otel.exporters.otlp.spans_from_otlp_request`;
    spans that are not provider calls give no event.
    """
    from .otlp import spans_from_otlp_request  # the OTLP decoders load with the first request, not the exporter

    with gc_paused():
        return [
            event
            for view in spans_from_otlp_request(body, content_type)
            if (event := event_from_view(view, include_content=include_content)) is not None
        ]
