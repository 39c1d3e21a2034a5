"""Pay-i wire protocol: the business-context fields, header names, value rules.

The one place these are written: the plugin (business-context validation, per-call headers, span
attributes), the exporter (rendering ingest events) and the local service (reading them) all use this
module. :data:`CONTEXT_FIELDS` declares every business-context field once; the keyword lists, header
maps, span attributes and ingest fields elsewhere are derived from it (the typed spellings that must be
static, such as ``ContextLayer`` and ``BusinessContext``, are checked against it by the tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from payi_otel import attributes as A

# --- headers (names are case-insensitive on the wire) ---------------------------------------

HEADER_PREFIX = "xProxy-"
API_KEY = "xProxy-api-key"  # the application key authenticating every /api/v1 call
LOGGING_DISABLE = "xProxy-Logging-Disable"  # "True" (case-sensitive): prompt and response are not stored
INSTRUMENTED_MODULE = "xProxy-Instrumented-Module"  # <module>/<version> of the instrumented SDK

# --- the business-context fields ---------------------------------------------------------------

# Value kinds: how a field's value is held and how its header spells it.
STR = "str"
INT = "int"  # a decimal integer in a header
LIST = "list"  # a tuple of strings; comma-separated in a header
PROPS = "props"  # a dict of string keys to string (or None) values; a JSON object (or base64 of one) in a header

# What a field is to an ingest event.
ATTRIBUTION = "attribution"  # an event field: a header on single ingest, a body field in a bulk item
PRICE_AS = "price_as"  # replaces the event's category / resource (the call is priced as another)
PROPERTIES = "properties"  # an event body field (a JSON object)


@dataclass(frozen=True, slots=True)
class ContextField:
    """One business-context field, under every name it has."""

    name: str  # keyword of track / track_context / instrument; the ingest event field unless event_name says
    kind: str  # STR, INT, LIST or PROPS
    role: str  # ATTRIBUTION, PRICE_AS or PROPERTIES
    header: str  # the xProxy-* header (a provider call's extra_headers, single ingest)
    attribute: str  # the span attribute (PROPS: the prefix of the flattened per-key attributes)
    use_case_bound: bool = False  # belongs to the use case in effect: cleared with it, refused without it
    event_name: str | None = None  # the ingest event field when it differs from name
    bulk_name: str | None = None  # the field in a bulk ingest item when it differs from the event field

    @property
    def event_field(self) -> str:
        return self.event_name or self.name

    @property
    def bulk_field(self) -> str:
        return self.bulk_name or self.event_field


CONTEXT_FIELDS: tuple[ContextField, ...] = (
    ContextField("use_case_name", STR, ATTRIBUTION, "xProxy-UseCase-Name", A.PAYI_USE_CASE_NAME),
    ContextField("use_case_id", STR, ATTRIBUTION, "xProxy-UseCase-ID", A.PAYI_USE_CASE_ID, use_case_bound=True),
    ContextField(
        "use_case_version", INT, ATTRIBUTION, "xProxy-UseCase-Version", A.PAYI_USE_CASE_VERSION, use_case_bound=True
    ),
    ContextField(
        "use_case_step", STR, ATTRIBUTION, "xProxy-UseCase-Step", A.PAYI_USE_CASE_STEP, use_case_bound=True
    ),
    ContextField("user_id", STR, ATTRIBUTION, "xProxy-User-ID", A.PAYI_USER_ID),
    ContextField("account_name", STR, ATTRIBUTION, "xProxy-Account-Name", A.PAYI_ACCOUNT_NAME),
    ContextField("request_tags", LIST, ATTRIBUTION, "xProxy-Request-Tags", A.PAYI_REQUEST_TAGS),
    ContextField("limit_ids", LIST, ATTRIBUTION, "xProxy-Limit-IDs", A.PAYI_LIMIT_IDS),
    ContextField(
        "request_properties", PROPS, PROPERTIES, "xProxy-Request-Properties", A.PAYI_REQUEST_PROPERTIES_PREFIX,
        event_name="properties",
    ),
    ContextField(
        "use_case_properties", PROPS, PROPERTIES, "xProxy-UseCase-Properties", A.PAYI_USE_CASE_PROPERTIES_PREFIX,
        use_case_bound=True,
    ),
    ContextField("price_as_category", STR, PRICE_AS, "xProxy-PriceAs-Category", A.PAYI_PRICE_AS_CATEGORY),
    ContextField("price_as_resource", STR, PRICE_AS, "xProxy-PriceAs-Resource", A.PAYI_PRICE_AS_RESOURCE),
    ContextField(
        "resource_scope", STR, ATTRIBUTION, "xProxy-Resource-Scope", A.PAYI_RESOURCE_SCOPE, bulk_name="scope"
    ),
)  # fmt: skip
CONTEXT_FIELD_NAMES = tuple(f.name for f in CONTEXT_FIELDS)

# Attribution: the event fields that travel as these headers on single ingest (and on a provider
# call's ``extra_headers``) and as body fields of the same name in a bulk item (``resource_scope``
# is spelled ``scope`` there).
ATTRIBUTION_HEADERS: dict[str, str] = {f.name: f.header for f in CONTEXT_FIELDS if f.role == ATTRIBUTION}
ATTRIBUTION_FIELDS = tuple(ATTRIBUTION_HEADERS)

# Price the call as another category/resource than the one it reports.
PRICE_AS_HEADERS: dict[str, str] = {f.name: f.header for f in CONTEXT_FIELDS if f.role == PRICE_AS}

# Properties: JSON objects (or base64 of one) as headers; body fields on ingest
# (``use_case_properties`` and ``properties``).
PROPERTIES_HEADERS: dict[str, str] = {f.name: f.header for f in CONTEXT_FIELDS if f.role == PROPERTIES}

# Every header a single ingest reads.
SINGLE_INGEST_HEADERS = (
    *ATTRIBUTION_HEADERS.values(),
    LOGGING_DISABLE,
    INSTRUMENTED_MODULE,
    *PRICE_AS_HEADERS.values(),
)

# --- values -----------------------------------------------------------------------------------

FAILURE_STATUS = 299  # http_status_code of a failed call that has no HTTP status (client-side failure)

# Event properties with a meaning.
FAILURE = "system.failure"  # short exception class name (or http_status_<code>)
FAILURE_DESCRIPTION = "system.failure.description"
USAGE_INCOMPLETE = "system.usage_incomplete"  # "true" when the provider reported no (or partial) usage
USAGE_INCOMPLETE_REASON = "system.usage_incomplete.reason"

# Value rules: a pattern (matched in full) and the rule as error messages state it.
USE_CASE_NAME_RULE = re.compile(r"[A-Za-z0-9._-]{1,64}")
USE_CASE_NAME_RULE_TEXT = "1-64 characters of letters, digits, '.', '_' or '-'"
REQUEST_TAG_RULE = re.compile(r"[A-Za-z0-9_-]+")
REQUEST_TAG_RULE_TEXT = "letters, digits, '_' or '-' only"
RESOURCE_SCOPE_RULE = re.compile(r"global|(?:datazone|region)(?:\.[A-Za-z0-9_-]+)?")
RESOURCE_SCOPE_RULE_TEXT = "'global', 'datazone', 'region', 'datazone.<name>' or 'region.<name>'"
_WHITESPACE = re.compile(r"\s").search


def has_whitespace(value: str) -> bool:
    """User ids (and use case ids) may hold any characters except spaces."""
    return _WHITESPACE(value) is not None


# --- bounds -----------------------------------------------------------------------------------
# Every integer, string and list of an ingest event has a bound, declared here once: the
# instrumentation refuses context values beyond them (``track``/``track_context``), the exporter
# keeps what it renders within them, and the local service answers 400 naming the bound.

MAX_USE_CASE_VERSION = 2**63 - 1  # a signed 64-bit integer, as Pay-i and SQLite store it
MAX_COUNT = 2**31 - 1  # units, latencies: non-negative 32-bit integers
MAX_TEXT_LENGTH = 1024  # ids and names: user/account/use case ids, step, category, resource, limit ids, tags
MAX_LIST_ITEMS = 100  # limit_ids, request_tags
MAX_PROPERTIES = 256  # keys of request_properties / use_case_properties
MAX_PROPERTY_VALUE_LENGTH = 65536  # characters of one property value
MAX_UNIT_TYPES = 64  # unit names of one event
MAX_EVENT_LIST_ITEMS = 1000  # provider headers and function calls of one event
MIN_EVENT_YEAR = 2000  # event timestamps before this year are refused (a clock or encoding error)
MAX_BULK_ITEMS = 1000  # items of one bulk body
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024  # request body size the local service accepts by default

# Ids and names must not hold control characters (C0, DEL, C1): they reach terminals and reports.
TEXT_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"  # JSON Schema (ECMA), Python and Rust regex alike
TEXT_RULE = re.compile(r"[^\x00-\x1f\x7f-\x9f]*")
TEXT_RULE_TEXT = f"at most {MAX_TEXT_LENGTH} characters, no control characters"


def text_problem(value: str) -> str | None:
    """Why ``value`` is not a valid id/name (the rule as error messages state it), or None."""
    if len(value) > MAX_TEXT_LENGTH or not TEXT_RULE.fullmatch(value):
        return f"must be {TEXT_RULE_TEXT}"
    return None


def preview(value: object, limit: int = 64) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages that quote input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
