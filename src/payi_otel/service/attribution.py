"""Attribution of an ingested event: who and what it is for, and the rules its values follow.

A single ingest carries it in ``xProxy-*`` headers, a bulk item in body fields; both become one
:class:`Attribution`. Errors name the header or the field the caller used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from payi_otel import protocol as P
from payi_otel.service.errors import bad_request
from payi_otel.service.models import BulkIngestRequest


@dataclass(slots=True)
class Attribution:
    """Who and what an event is for (headers on single ingest, body fields on bulk)."""

    limit_ids: list[str] = field(default_factory=list)
    request_tags: list[str] = field(default_factory=list)
    user_id: str | None = None
    account_name: str | None = None
    use_case_name: str | None = None
    use_case_id: str | None = None
    use_case_version: int | None = None
    use_case_step: str | None = None
    resource_scope: str | None = None
    logging_disabled: bool = False
    dedupe_id: str | None = None
    price_as_category: str | None = None  # single ingest only (headers); Pay-i's bulk items have no such fields
    price_as_resource: str | None = None
    # Block limits take spend only from calls admitted against them: proxied calls, and (when the
    # service allows it) ingests of calls the plugin checked. Pay-i's ingest refuses them.
    block_limits_allowed: bool = False
    reservation_id: str | None = None  # the reservation the call held (released when it is stored)


# Names of the attribution fields in errors of a single ingest (headers) and of a bulk item (fields).
HEADER_NAMES = P.ATTRIBUTION_HEADERS
BULK_NAMES = {f.name: f.bulk_field for f in P.CONTEXT_FIELDS if f.role == P.ATTRIBUTION}
# Lower-cased names (as the server hands them over) of the headers a single ingest reads.
_H = {k: v.lower() for k, v in {**P.ATTRIBUTION_HEADERS, **P.PRICE_AS_HEADERS}.items()}
_LOGGING_DISABLE = P.LOGGING_DISABLE.lower()
# Beyond Pay-i: the reservation a call held against its block limits (``POST /api/v1/reservations``).
RESERVATION_HEADER = "xproxy-reservation-id"
_TEXT_HEADERS = tuple((f.name, _H[f.name]) for f in P.CONTEXT_FIELDS if f.role == P.ATTRIBUTION and f.kind == P.STR)
_LIST_HEADERS = tuple((f.name, _H[f.name]) for f in P.CONTEXT_FIELDS if f.role == P.ATTRIBUTION and f.kind == P.LIST)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def attribution_from_headers(headers: Any, dedupe_id: str | None) -> Attribution:
    """Read the ``xProxy-*`` headers of a single ingest from a mapping with lower-cased names."""
    get = headers.get
    version = get(_H["use_case_version"])
    version_int: int | None = None
    if version is not None and version.strip():
        digits = version.strip()
        if not (digits.isascii() and digits.isdigit()) or int(digits) > P.MAX_USE_CASE_VERSION:
            raise bad_request(
                "invalid_use_case_version",
                f"{HEADER_NAMES['use_case_version']} must be an integer from 0 to {P.MAX_USE_CASE_VERSION}, "
                f"got {P.preview(version)}",
            )
        version_int = int(digits)
    fields: dict[str, Any] = {name: get(header) or None for name, header in _TEXT_HEADERS}
    fields.update((name, _split(get(header))) for name, header in _LIST_HEADERS)
    return Attribution(
        **fields,
        use_case_version=version_int,
        logging_disabled=get(_LOGGING_DISABLE) == "True",
        dedupe_id=dedupe_id or None,
        reservation_id=(get(RESERVATION_HEADER) or "").strip() or None,
        price_as_category=(get(_H["price_as_category"]) or "").strip() or None,
        price_as_resource=(get(_H["price_as_resource"]) or "").strip() or None,
    )


_TEXT_ATTRIBUTION = tuple(f.name for f in P.CONTEXT_FIELDS if f.role == P.ATTRIBUTION and f.kind == P.STR)


def check_attribution_bounds(attr: Attribution, names: dict[str, str]) -> None:
    """The bounds of protocol.py on attribution values (headers are not checked by the body schema)."""
    for f in _TEXT_ATTRIBUTION:
        value = getattr(attr, f)
        problem = None if value is None else P.text_problem(value)
        if problem is not None:
            raise bad_request("invalid_field_value", f"{names[f]}: {problem}")
    for f, code in (("limit_ids", "invalid_limit_ids"), ("request_tags", "invalid_tags")):
        values = getattr(attr, f)
        if len(values) > P.MAX_LIST_ITEMS:
            raise bad_request(code, f"{names[f]}: at most {P.MAX_LIST_ITEMS} entries, got {len(values)}")
        for value in values:
            problem = P.text_problem(value)
            if problem is not None:
                raise bad_request(code, f"{names[f]}: entry {P.preview(value)} {problem}")
    for f in ("price_as_category", "price_as_resource"):
        value = getattr(attr, f)
        problem = None if value is None else P.text_problem(value)
        if problem is not None:
            raise bad_request("invalid_field_value", f"{P.PRICE_AS_HEADERS[f]}: {problem}")


def attribution_from_item(item: BulkIngestRequest) -> Attribution:
    return Attribution(
        limit_ids=[v.strip() for v in item.limit_ids or () if v.strip()],
        request_tags=list(item.request_tags or ()),
        user_id=item.user_id or None,
        account_name=item.account_name or None,
        use_case_name=item.use_case_name or None,
        use_case_id=item.use_case_id or None,
        use_case_version=item.use_case_version,
        use_case_step=item.use_case_step or None,
        resource_scope=item.scope or None,
        dedupe_id=item.dedupe_id or None,
        reservation_id=item.reservation_id or None,
    )


def check_attribution_rules(attr: Attribution, names: dict[str, str]) -> None:
    """Every rule on attribution values that needs no stored data (bounds, formats, dependencies)."""
    check_attribution_bounds(attr, names)
    if attr.user_id is not None and P.has_whitespace(attr.user_id):
        raise bad_request("invalid_user_id", f"{names['user_id']} must not contain spaces")
    for tag in attr.request_tags:
        if not P.REQUEST_TAG_RULE.fullmatch(tag):
            raise bad_request("invalid_tags", f"{names['request_tags']}: tag {tag!r} must be {P.REQUEST_TAG_RULE_TEXT}")
    if attr.use_case_name is not None and not P.USE_CASE_NAME_RULE.fullmatch(attr.use_case_name):
        raise bad_request("invalid_use_case_name", f"{names['use_case_name']} must be {P.USE_CASE_NAME_RULE_TEXT}")
    if attr.use_case_name is None:
        for f in ("use_case_id", "use_case_version", "use_case_step"):
            if getattr(attr, f) is not None:
                code = "header_is_missing" if names is HEADER_NAMES else "required_field_missing"
                raise bad_request(code, f"{names[f]} requires {names['use_case_name']}")
    if len(set(attr.limit_ids)) != len(attr.limit_ids):
        raise bad_request("duplicate_limit_id", f"{names['limit_ids']} lists the same limit id twice")
