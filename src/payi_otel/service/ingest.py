"""Ingest: validate one Pay-i event, price it, store it, and build its ``xproxy_result``.

Used by both ``POST /api/v1/ingest`` (attribution from ``xProxy-*`` headers) and the bulk endpoint
(attribution in each item). Errors are :class:`PayiApiError` with Pay-i's stable codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from payi_otel.service.models import BulkIngestRequest, IngestRequest
from payi_otel.service.pricing import Pricer, PriceResult
from payi_otel.service.store import Application, Store, new_id, now_ms

FUTURE_TOLERANCE = timedelta(minutes=5)
_USE_CASE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TAG = re.compile(r"[A-Za-z0-9_-]+")
SYNTHETIC_FAILURE_STATUS = 299  # the SDK's status for client-side failures without an HTTP status
# Properties a sender sets when the provider reported no (or partial) usage for a call.
USAGE_INCOMPLETE = "system.usage_incomplete"
USAGE_INCOMPLETE_REASON = "system.usage_incomplete.reason"
_PROVIDER_FIELDS = (
    "provider_uri",
    "provider_request_json",
    "provider_request_reasoning_json",
    "provider_request_headers",
    "provider_response_json",
    "provider_response_headers",
    "provider_response_function_calls",
    "time_to_first_completion_token_ms",
)
_LOGGED_FIELDS = ("provider_request_json", "provider_response_json", "provider_request_reasoning_json")


class PayiApiError(Exception):
    """An error answered with Pay-i's body ``{statusCode, message, xproxy_error:{code, message}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"statusCode": self.status, "message": self.message, "xproxy_error": {"code": self.code, "message": self.message}}


def bad_request(code: str, message: str) -> PayiApiError:
    return PayiApiError(400, code, message)


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


_HEADER_NAMES = {
    "limit_ids": "xProxy-Limit-IDs",
    "request_tags": "xProxy-Request-Tags",
    "user_id": "xProxy-User-ID",
    "account_name": "xProxy-Account-Name",
    "use_case_name": "xProxy-UseCase-Name",
    "use_case_id": "xProxy-UseCase-ID",
    "use_case_version": "xProxy-UseCase-Version",
    "use_case_step": "xProxy-UseCase-Step",
}


# Headers a single ingest reads (matched case-insensitively).
ATTRIBUTION_HEADERS = (
    *_HEADER_NAMES.values(),
    "xProxy-Resource-Scope",
    "xProxy-Logging-Disable",
    "xProxy-Instrumented-Module",
)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def attribution_from_headers(headers: Any, dedupe_id: str | None) -> Attribution:
    """Read the ``xProxy-*`` headers of a single ingest from a mapping with lower-cased names."""
    get = headers.get
    version = get("xproxy-usecase-version")
    if version is not None and version.strip():
        try:
            version_int: int | None = int(version)
        except ValueError:
            raise bad_request(
                "invalid_use_case_version", f"xProxy-UseCase-Version must be an integer, got {version!r}"
            ) from None
    else:
        version_int = None
    return Attribution(
        limit_ids=_split(get("xproxy-limit-ids")),
        request_tags=_split(get("xproxy-request-tags")),
        user_id=get("xproxy-user-id") or None,
        account_name=get("xproxy-account-name") or None,
        use_case_name=get("xproxy-usecase-name") or None,
        use_case_id=get("xproxy-usecase-id") or None,
        use_case_version=version_int,
        use_case_step=get("xproxy-usecase-step") or None,
        resource_scope=get("xproxy-resource-scope") or None,
        logging_disabled=get("xproxy-logging-disable") == "True",
        dedupe_id=dedupe_id or None,
    )


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
    )


def validation_error(exc: ValidationError) -> PayiApiError:
    """The first problem of a pydantic error as a Pay-i error naming the field and the rule."""
    return error_from_details(exc.errors(include_url=False)[0])


def error_from_details(err: Any) -> PayiApiError:
    """A Pay-i error for one pydantic error entry (``type``, ``loc``, ``msg``)."""
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    kind = err["type"]
    if kind == "json_invalid":
        return bad_request("invalid_json", f"body is not valid JSON: {err['msg']}")
    if kind == "missing":
        return bad_request("required_field_missing", f"{loc}: field is required")
    if kind == "extra_forbidden":
        return bad_request("unknown_field", f"{loc}: unknown field (additional properties are not allowed)")
    if err["loc"] and err["loc"][0] == "units":
        return bad_request("invalid_units", f"{loc}: {err['msg']}")
    return bad_request("invalid_field_value", f"{loc}: {err['msg']}")


def parse_single(body: bytes) -> IngestRequest:
    if not body.strip():
        raise bad_request("invalid_json", "body is empty; expected a JSON object")
    try:
        return IngestRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_bulk_body(body: bytes) -> list[Any]:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request("invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise bad_request("invalid_json", "body must be a JSON array of events")
    return items


def parse_bulk_item(item: Any) -> BulkIngestRequest:
    if not isinstance(item, dict):
        raise bad_request("invalid_json", "each bulk item must be a JSON object")
    try:
        return BulkIngestRequest.model_validate(item)
    except ValidationError as exc:
        raise validation_error(exc) from None


def iso_timestamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


class Ingestor:
    """Turns validated events into stored requests."""

    def __init__(self, store: Store, pricer: Pricer) -> None:
        self.store = store
        self.pricer = pricer

    def _check_attribution(self, app: Application, attr: Attribution, names: dict[str, str]) -> None:
        if attr.user_id is not None and any(ch.isspace() for ch in attr.user_id):
            raise bad_request("invalid_user_id", f"{names['user_id']} must not contain spaces")
        for tag in attr.request_tags:
            if not _TAG.fullmatch(tag):
                raise bad_request(
                    "invalid_tags",
                    f"{names['request_tags']}: tag {tag!r} may contain only letters, digits, '_' and '-'",
                )
        if attr.use_case_name is not None and not _USE_CASE_NAME.fullmatch(attr.use_case_name):
            raise bad_request(
                "invalid_use_case_name",
                f"{names['use_case_name']} must be 1-64 characters of letters, digits, '.', '_' or '-'",
            )
        if attr.use_case_name is None:
            for f in ("use_case_id", "use_case_version", "use_case_step"):
                if getattr(attr, f) is not None:
                    code = "header_is_missing" if names is _HEADER_NAMES else "required_field_missing"
                    raise bad_request(code, f"{names[f]} requires {names['use_case_name']}")
        if len(set(attr.limit_ids)) != len(attr.limit_ids):
            raise bad_request("duplicate_limit_id", f"{names['limit_ids']} lists the same limit id twice")
        unknown = self.store.unknown_limit_ids(app.id, attr.limit_ids)
        if unknown:
            raise bad_request(
                "invalid_limit_ids",
                f"{names['limit_ids']}: limit ids {', '.join(unknown)} do not exist or do not belong to this application",
            )

    def ingest(
        self, app: Application, event: IngestRequest, attr: Attribution, *, bulk: bool = False
    ) -> dict[str, Any]:
        """Store ``event`` (or recognise a duplicate) and return the IngestResponse body.

        The event's writes form one unit (a savepoint inside a shared transaction); the caller
        answers only after the enclosing transaction committed.
        """
        with self.store.transaction():
            return self._ingest(app, event, attr, bulk)

    def _ingest(self, app: Application, event: IngestRequest, attr: Attribution, bulk: bool) -> dict[str, Any]:
        names = _BULK_NAMES if bulk else _HEADER_NAMES
        self._check_attribution(app, attr, names)
        ingest_ms = now_ms()
        if event.event_timestamp is None:
            event_ms = ingest_ms
            when = datetime.fromtimestamp(ingest_ms / 1000, UTC)
        else:
            when = event.event_timestamp
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            event_ms = int(when.timestamp() * 1000)
            if event_ms > ingest_ms + FUTURE_TOLERANCE.total_seconds() * 1000:
                raise bad_request(
                    "invalid_ingest_event_timestamp",
                    "event_timestamp cannot be greater than 5 minutes into the future",
                )
        duplicate = self.store.find_duplicate(app.id, event.category, event.provider_response_id, attr.dedupe_id)
        if duplicate is not None:
            result = dict(duplicate.result, duplicate_request=True)
            return {
                "request_id": duplicate.request_id,
                "event_timestamp": iso_timestamp(duplicate.event_ms),
                "ingest_timestamp": iso_timestamp(duplicate.ingest_ms),
                "xproxy_result": result,
            }

        use_case_id = use_case_version = None
        if attr.use_case_name is not None:
            use_case_id, use_case_version = self.store.use_case_instance(
                app.id, attr.use_case_name, attr.use_case_id, attr.use_case_version, event.use_case_properties
            )

        units = {k: {"input": u.input, "output": u.output} for k, u in event.units.items()}
        status = event.http_status_code
        failed = status is not None and (status >= 400 or status == SYNTHETIC_FAILURE_STATUS)
        sent = event.properties or {}
        no_usage = not any(u["input"] or u["output"] for u in units.values())
        if no_usage and not failed and sent.get(USAGE_INCOMPLETE) == "true":
            # A successful call whose usage the provider never reported: its cost is unknown, not $0.
            reason = sent.get(USAGE_INCOMPLETE_REASON) or "usage not reported"
            price = PriceResult(priced=False, unpriced_reason=f"usage not reported ({reason})")
        else:
            price = self.pricer.price(event.category, event.resource, units, when)
        properties = dict(event.properties or {})
        if failed and "system.failure" not in properties:
            properties["system.failure"] = f"http_status_{status}"
        properties = {k: v for k, v in properties.items() if v is not None}

        request_id = new_id()
        result: dict[str, Any] = {
            "request_id": request_id,
            "use_case_name": attr.use_case_name,
            "use_case_id": use_case_id,
            "use_case_version": use_case_version,
            "use_case_step": attr.use_case_step,
            "user_id": attr.user_id,
            "account_name": attr.account_name,
            "resource_id": price.resource_id,
            "cost": None,
            "unknown_units": price.unknown_units,
            "limits": {},
            "duplicate_request": False,
        }
        if attr.request_tags:
            result["request_tags"] = attr.request_tags
        if price.priced:
            result["cost"] = {
                "currency": "usd",
                "input": {"base": price.input_cost},
                "output": {"base": price.output_cost},
                "total": {"base": price.total_cost, "overrun_base": 0.0},
            }
            if price.resource_version is not None:
                self.store.remember_resource_version(price.resource_version, event.category, event.resource)
        else:
            result["warnings"] = [f"unpriced: {price.unpriced_reason}"]

        provider_data = {f: getattr(event, f) for f in _PROVIDER_FIELDS if getattr(event, f) is not None}
        if attr.logging_disabled:
            for f in _LOGGED_FIELDS:
                provider_data.pop(f, None)
        for f in ("provider_request_headers", "provider_response_headers", "provider_response_function_calls"):
            if f in provider_data:
                provider_data[f] = [h.model_dump() for h in provider_data[f]]

        self.store.insert_request(
            {
                "request_id": request_id,
                "application_id": app.id,
                "event_ms": event_ms,
                "ingest_ms": ingest_ms,
                "category": event.category,
                "resource": event.resource,
                "resource_id": price.resource_id,
                "provider_response_id": event.provider_response_id,
                "dedupe_id": attr.dedupe_id,
                "use_case_name": attr.use_case_name,
                "use_case_id": use_case_id,
                "use_case_version": use_case_version,
                "use_case_step": attr.use_case_step,
                "user_id": attr.user_id,
                "account_name": attr.account_name,
                "resource_scope": attr.resource_scope,
                "http_status_code": status,
                "failed": int(failed),
                "latency_ms": event.end_to_end_latency_ms,
                "ttft_ms": event.time_to_first_token_ms,
                "input_tokens": sum(u["input"] for u in units.values()),
                "output_tokens": sum(u["output"] for u in units.values()),
                "units": orjson.dumps(units).decode(),
                "cost_input": price.input_cost if price.priced else None,
                "cost_output": price.output_cost if price.priced else None,
                "cost_total": price.total_cost if price.priced else None,
                "unpriced_reason": price.unpriced_reason,
                "limit_ids": orjson.dumps(attr.limit_ids).decode() if attr.limit_ids else None,
                "properties": orjson.dumps(properties).decode() if properties else None,
                "provider_data": orjson.dumps(provider_data).decode() if provider_data else None,
                "result": orjson.dumps(result).decode(),
            },
            attr.request_tags,
        )
        return {
            "request_id": request_id,
            "event_timestamp": iso_timestamp(event_ms),
            "ingest_timestamp": iso_timestamp(ingest_ms),
            "xproxy_result": result,
        }


_BULK_NAMES = {k: k for k in _HEADER_NAMES}
