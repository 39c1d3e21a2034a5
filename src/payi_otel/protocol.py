"""Pay-i wire protocol: header names, attribution fields, value rules.

The one place these are written: the plugin (business-context validation, per-call headers), the
exporter (rendering ingest events) and the local service (reading them) all use this module.
"""

from __future__ import annotations

import re

# --- headers (names are case-insensitive on the wire) ---------------------------------------

HEADER_PREFIX = "xProxy-"
API_KEY = "xProxy-api-key"  # the application key authenticating every /api/v1 call
LOGGING_DISABLE = "xProxy-Logging-Disable"  # "True" (case-sensitive): prompt and response are not stored
INSTRUMENTED_MODULE = "xProxy-Instrumented-Module"  # <module>/<version> of the instrumented SDK

# Attribution: the event fields that travel as these headers on single ingest (and on a provider
# call's ``extra_headers``) and as body fields of the same name in a bulk item (``resource_scope``
# is spelled ``scope`` there).
ATTRIBUTION_HEADERS: dict[str, str] = {
    "use_case_name": "xProxy-UseCase-Name",
    "use_case_id": "xProxy-UseCase-ID",
    "use_case_version": "xProxy-UseCase-Version",  # an integer
    "use_case_step": "xProxy-UseCase-Step",
    "user_id": "xProxy-User-ID",
    "account_name": "xProxy-Account-Name",
    "request_tags": "xProxy-Request-Tags",  # comma-separated
    "limit_ids": "xProxy-Limit-IDs",  # comma-separated
    "resource_scope": "xProxy-Resource-Scope",
}
ATTRIBUTION_FIELDS = tuple(ATTRIBUTION_HEADERS)

# Price the call as another category/resource than the one it reports.
PRICE_AS_HEADERS: dict[str, str] = {
    "price_as_category": "xProxy-PriceAs-Category",
    "price_as_resource": "xProxy-PriceAs-Resource",
}

# Properties: JSON objects (or base64 of one) as headers; body fields on ingest
# (``use_case_properties`` and ``properties``).
PROPERTIES_HEADERS: dict[str, str] = {
    "use_case_properties": "xProxy-UseCase-Properties",
    "request_properties": "xProxy-Request-Properties",
}

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
