"""Finished GenAI span -> Pay-i ingest event, and the two wire forms of an event. Pure, no I/O.

:func:`event_from_view` builds one event dict that carries every field both ingest forms need:
the ``IngestRequest`` body fields plus the attribution (``use_case_*``, ``user_id``,
``account_name``, ``request_tags``, ``limit_ids``, ``resource_scope``) and ``instrumented_module``.
:func:`render_single` and :func:`render_bulk_item` turn that into what ``POST /api/v1/ingest``
(attribution as ``xProxy-*`` headers, ``?id=``) and ``POST /api/v1/ingest/bulk`` (attribution in
the body, ``scope`` instead of ``resource_scope``) expect.

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
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from payi_otel import attributes as A
from payi_otel import protocol as P
from payi_otel.units import Usage, to_units

from .otlp import spans_from_otlp_request
from .views import SpanView, gc_paused, view_from_readable_span

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

# Event keys that are attribution: headers in the single form, body fields in the bulk form.
ATTRIBUTION_FIELDS = P.ATTRIBUTION_FIELDS
# reservation_id: beyond Pay-i, the local service's settlement of a block-limit reservation
_HEADER_NAMES = {
    **P.ATTRIBUTION_HEADERS, "instrumented_module": P.INSTRUMENTED_MODULE, "reservation_id": "xProxy-Reservation-ID"
}
_NOT_IN_BODY = frozenset(ATTRIBUTION_FIELDS) | {"instrumented_module", "reservation_id"}

# Span attribute -> event field of the attribution, by value kind.
_ATTRIBUTION = [f for f in P.CONTEXT_FIELDS if f.role == P.ATTRIBUTION]
_SCALAR_ATTRIBUTION = (
    *((f.attribute, f.event_field) for f in _ATTRIBUTION if f.kind == P.STR),
    (A.PAYI_INSTRUMENTED_MODULE, "instrumented_module"),
)
_LIST_ATTRIBUTION = tuple((f.attribute, f.event_field) for f in _ATTRIBUTION if f.kind == P.LIST)

_UNITS_PREFIX = A.PAYI_UNITS_PREFIX
_REQ_PREFIX = A.PAYI_REQUEST_PROPERTIES_PREFIX
_UC_PREFIX = A.PAYI_USE_CASE_PROPERTIES_PREFIX
_COLLECTED_PREFIXES = (_UNITS_PREFIX, _REQ_PREFIX, _UC_PREFIX)
_UNITS_LEN = len(_UNITS_PREFIX)
_REQ_LEN = len(_REQ_PREFIX)
_UC_LEN = len(_UC_PREFIX)


def _get(attrs: Mapping[str, Any], key: str) -> Any:
    """Attribute ``key`` under its current spelling or any older one in ``attributes.LEGACY``."""
    value = attrs.get(key)
    if value is None:
        for old in A.LEGACY.get(key, ()):
            value = attrs.get(old)
            if value is not None:
                break
    return value


def _int(value: Any) -> int | None:
    if type(value) is int:  # the common case, first
        return value
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    out = []
    for item in value:
        item = str(item).strip()
        if item:
            out.append(item)
    return out


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return None


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
    return _get(attrs, A.GEN_AI_USAGE_INPUT_TOKENS) is not None or _get(attrs, A.GEN_AI_USAGE_OUTPUT_TOKENS) is not None


def _category(attrs: Mapping[str, Any]) -> str | None:
    category = attrs.get(A.PAYI_CATEGORY)
    if category:
        return str(category)
    if not _provider_call(attrs):
        return None
    provider = _get(attrs, A.GEN_AI_PROVIDER_NAME)
    if not isinstance(provider, str):
        return None
    category = A.PROVIDER_CATEGORIES.get(provider) or A.PROVIDER_CATEGORIES.get(provider.lower())
    if category == OPENAI_CATEGORY:  # Azure OpenAI clients are "openai" to openai-v2: tell by the host
        host = attrs.get(A.SERVER_ADDRESS)
        if isinstance(host, str) and host.lower().endswith(A.AZURE_OPENAI_HOST_SUFFIXES):
            return AZURE_CATEGORY
    return category


def _units_from_semconv(attrs: Mapping[str, Any], tools: _OutputTools | None) -> dict[str, dict[str, int]]:
    cache_write = _int(_get(attrs, A.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS)) or 0
    cache_write_1h = _int(attrs.get(A.ANTHROPIC_CACHE_WRITE_1H_TOKENS)) or 0  # the anthropic SDK's split
    usage = Usage(
        input_tokens=_int(_get(attrs, A.GEN_AI_USAGE_INPUT_TOKENS)),
        output_tokens=_int(_get(attrs, A.GEN_AI_USAGE_OUTPUT_TOKENS)),
        cache_read_tokens=_int(_get(attrs, A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)) or 0,
        cache_write_tokens=max(cache_write - cache_write_1h, 0),
        cache_write_1h_tokens=min(cache_write_1h, cache_write) if cache_write else cache_write_1h,
        reasoning_tokens=_int(_get(attrs, A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)) or 0,
        input_audio_tokens=_int(_get(attrs, A.GEN_AI_USAGE_INPUT_AUDIO_TOKENS)) or 0,
        output_audio_tokens=_int(_get(attrs, A.GEN_AI_USAGE_OUTPUT_AUDIO_TOKENS)) or 0,
        input_image_tokens=_int(attrs.get(A.GEN_AI_USAGE_INPUT_IMAGE_TOKENS)) or 0,
        output_image_tokens=_int(attrs.get(A.GEN_AI_USAGE_OUTPUT_IMAGE_TOKENS)) or 0,
        web_search_requests=tools.web_searches if tools is not None else 0,
    )
    return to_units(usage)


class _OutputTools:
    """Tool calls in a foreign span's ``gen_ai.output.messages`` (present when it captured content):
    the calls the model asked the client to make, and the web searches the provider ran itself."""

    __slots__ = ("calls", "web_searches")

    def __init__(self, raw: Any) -> None:
        self.calls: list[dict[str, Any]] = []
        self.web_searches = 0
        try:
            messages = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            return
        for message in messages if isinstance(messages, list) else ():
            parts = message.get("parts") if isinstance(message, Mapping) else None
            for part in parts if isinstance(parts, list) else ():
                if not isinstance(part, Mapping) or part.get("type") != "tool_call" or not part.get("name"):
                    continue
                if str(part.get("id") or "").startswith(A.ANTHROPIC_SERVER_TOOL_ID_PREFIX):
                    self.web_searches += part["name"] == "web_search"
                    continue
                arguments = part.get("arguments")
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments if arguments is not None else {})
                self.calls.append({"name": str(part["name"]), "arguments": arguments})


def _ttft_ms(attrs: Mapping[str, Any]) -> int | None:
    ttft = _int(attrs.get(A.PAYI_TIME_TO_FIRST_TOKEN_MS))
    if ttft is not None:
        return ttft
    seconds = attrs.get(A.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0:
        return round(seconds * 1000)
    return None


@functools.lru_cache(maxsize=512)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _iso(ns: int) -> str:
    """ISO-8601 UTC with offset and microseconds (spans of one batch share their seconds)."""
    second, rest = divmod(ns, 1_000_000_000)
    return f"{_iso_second(second)}.{rest // 1000:06d}+00:00"


def event_from_view(view: SpanView, *, include_content: bool = True) -> dict[str, Any] | None:
    """The ingest event for ``view``, or ``None`` when the span is not a GenAI provider call.

    Message content (``provider_request_json`` / ``provider_response_json``) is included only
    when the span carries it and ``include_content`` is true.
    """
    attrs = view.attributes
    category = _category(attrs)
    if category is None or attrs.get(A.PAYI_PROXIED) is True:  # a proxied call is stored by the proxy
        return None

    units: dict[str, dict[str, int]] = {}
    properties: dict[str, str] = {}
    use_case_properties: dict[str, str] = {}
    for key, value in attrs.items():
        if not key.startswith(_COLLECTED_PREFIXES):  # one C call per attribute: the mapping's hot loop
            continue
        if key.startswith(_UNITS_PREFIX):
            unit, _, direction = key[_UNITS_LEN:].rpartition(".")
            count = _int(value)
            if unit and direction in ("input", "output") and count is not None:
                units.setdefault(unit, {"input": 0, "output": 0})[direction] = count
        elif key.startswith(_REQ_PREFIX):
            properties[key[_REQ_LEN:]] = str(value)
        elif key.startswith(_UC_PREFIX):
            use_case_properties[key[_UC_LEN:]] = str(value)

    usage_complete = _flag(attrs.get(A.PAYI_USAGE_COMPLETE))
    incomplete_reason = attrs.get(A.PAYI_USAGE_INCOMPLETE_REASON)
    tools = None
    if A.PAYI_FUNCTION_CALLS not in attrs and attrs.get(A.GEN_AI_OUTPUT_MESSAGES):  # a foreign span
        tools = _OutputTools(attrs.get(A.GEN_AI_OUTPUT_MESSAGES))
    if not units:
        units = _units_from_semconv(attrs, tools)
        if not units and usage_complete is None:
            usage_complete, incomplete_reason = False, incomplete_reason or "no usage reported"
    if usage_complete is False:
        properties[P.USAGE_INCOMPLETE] = "true"
        properties[P.USAGE_INCOMPLETE_REASON] = str(incomplete_reason or "usage not reported in full")

    resource = (
        attrs.get(A.PAYI_RESOURCE)
        or _get(attrs, A.GEN_AI_REQUEST_MODEL)
        or _get(attrs, A.GEN_AI_RESPONSE_MODEL)
        or UNKNOWN_RESOURCE
    )
    price_as_category = attrs.get(A.PAYI_PRICE_AS_CATEGORY)
    if price_as_category and price_as_category != category:
        properties["system.original_category"] = category
        category = str(price_as_category)
    price_as_resource = attrs.get(A.PAYI_PRICE_AS_RESOURCE)
    if price_as_resource and price_as_resource != resource:
        properties["system.original_resource"] = str(resource)
        resource = price_as_resource

    status = _int(attrs.get(A.PAYI_HTTP_STATUS_CODE))
    if status is None:
        status = _int(attrs.get(A.HTTP_RESPONSE_STATUS_CODE))
    error_type = attrs.get(A.ERROR_TYPE)
    if status is None:
        if error_type or view.is_error:
            status = P.FAILURE_STATUS
            failure = str(error_type or "error").rsplit(".", 1)[-1]
            properties[P.FAILURE] = failure
            description = attrs.get(A.PAYI_FAILURE_DESCRIPTION) or view.status_message
            if description:
                properties[P.FAILURE_DESCRIPTION] = str(description)
        else:
            status = 200

    latency = _int(attrs.get(A.PAYI_LATENCY_MS))
    if latency is None:
        latency = max(view.end_ns - view.start_ns, 0) // 1_000_000

    event: dict[str, Any] = {
        "category": category,
        "resource": str(resource),
        "units": units,
        "event_timestamp": _iso(view.start_ns),
        "end_to_end_latency_ms": latency,
        "http_status_code": status,
        "provider_response_id": str(
            attrs.get(A.PAYI_PROVIDER_RESPONSE_ID) or attrs.get(A.GEN_AI_RESPONSE_ID) or event_id(view)
        ),
    }
    ttft = _ttft_ms(attrs)
    if ttft is not None:
        event["time_to_first_token_ms"] = ttft
    provider_uri = attrs.get(A.PAYI_PROVIDER_URI)
    if provider_uri:
        event["provider_uri"] = str(provider_uri)
    reservation = attrs.get(A.PAYI_RESERVATION_ID)
    if reservation:
        event["reservation_id"] = str(reservation)
    calls = _function_calls(attrs.get(A.PAYI_FUNCTION_CALLS)) if tools is None else tools.calls
    if calls:
        event["provider_response_function_calls"] = calls
    if include_content:
        request_json = attrs.get(A.GEN_AI_INPUT_MESSAGES)
        if request_json:
            event["provider_request_json"] = str(request_json)
        response_json = attrs.get(A.GEN_AI_OUTPUT_MESSAGES)
        if response_json:
            event["provider_response_json"] = str(response_json)
    for name, value in view.resource.items():  # service.name, ...: the span's own properties win
        properties.setdefault(name, value)
    if properties:
        event["properties"] = _within_bounds(properties)
    if use_case_properties:
        event["use_case_properties"] = _within_bounds(use_case_properties)

    for attr, field in _SCALAR_ATTRIBUTION:
        value = attrs.get(attr)
        if value is not None and value != "":
            event[field] = str(value)
    version = _int(attrs.get(A.PAYI_USE_CASE_VERSION))
    if version is not None and 0 <= version <= P.MAX_USE_CASE_VERSION:  # out of range: the server refuses it
        event["use_case_version"] = version
    for attr, field in _LIST_ATTRIBUTION:
        items = _strings(attrs.get(attr))
        if items:
            event[field] = items
    return event


def _within_bounds(properties: dict[str, str]) -> dict[str, str]:
    """Property values cut to the protocol's bound (e.g. a long failure description), so the server
    stores the event instead of refusing it."""
    limit = P.MAX_PROPERTY_VALUE_LENGTH
    for key, value in properties.items():
        if len(value) > limit:
            properties[key] = value[: limit - 1] + "\u2026"
    return properties


def _function_calls(raw: Any) -> list[dict[str, Any]]:
    if not raw:
        return []
    try:
        calls = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return []
    out = []
    for call in calls if isinstance(calls, list) else ():
        if isinstance(call, Mapping) and call.get("name"):
            arguments = call.get("arguments")
            if arguments is not None and not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            out.append({"name": str(call["name"]), "arguments": arguments})
    return out


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
    with gc_paused():
        views = spans_from_otlp_request(body, content_type)
        events = [event_from_view(view, include_content=include_content) for view in views]
    return [event for event in events if event is not None]


# --- the two wire forms ---------------------------------------------------------------------


def _header_value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def render_single(event: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """``(query params, headers, body)`` for ``POST /api/v1/ingest``.

    Attribution travels as ``xProxy-*`` headers, the event id as ``?id=``; the body holds only
    ``IngestRequest`` fields.
    """
    headers = {_HEADER_NAMES[k]: _header_value(v) for k, v in event.items() if k in _HEADER_NAMES}
    body = {k: v for k, v in event.items() if k not in _NOT_IN_BODY}
    return {"id": event["provider_response_id"]}, headers, body


def render_bulk_item(event: Mapping[str, Any]) -> dict[str, Any]:
    """One ``BulkIngestRequest`` item for ``POST /api/v1/ingest/bulk`` (attribution in the body)."""
    item = {k: v for k, v in event.items() if k != "instrumented_module" and k != "resource_scope"}
    scope = event.get("resource_scope")
    if scope is not None:
        item["scope"] = scope
    return item
