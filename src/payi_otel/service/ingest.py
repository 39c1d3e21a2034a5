"""Ingest: validate one Pay-i event, price it, store it, and build its ``xproxy_result``.

Used by both ``POST /api/v1/ingest`` (attribution from ``xProxy-*`` headers) and the bulk endpoint
(attribution in each item). Errors are :class:`PayiApiError` with Pay-i's stable codes.
"""

from __future__ import annotations

import codecs
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from payi_otel import protocol as P
from payi_otel.service.models import BulkIngestRequest, IngestRequest
from payi_otel.service.pricing import Pricer, PriceResult, price_custom
from payi_otel.service.store import REQUEST_COLUMNS, Application, Store, StoredRequest, StoreError, new_id, now_ms

FUTURE_TOLERANCE = timedelta(minutes=5)
_FUTURE_TOLERANCE_MS = FUTURE_TOLERANCE.total_seconds() * 1000
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
_MODEL_LIST_FIELDS = ("provider_request_headers", "provider_response_headers", "provider_response_function_calls")


_LIMIT_STATES = REQUEST_COLUMNS.index("limit_states")

class PayiApiError(Exception):
    """An error answered with Pay-i's body ``{statusCode, message, xproxy_error:{code, message}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "message": self.message,
            "xproxy_error": {"code": self.code, "message": self.message},
        }


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
    price_as_category: str | None = None  # single ingest only (headers); Pay-i's bulk items have no such fields
    price_as_resource: str | None = None
    # Block limits take spend only from calls admitted against them: proxied calls, and (when the
    # service allows it) ingests of calls the plugin checked. Pay-i's ingest refuses them.
    block_limits_allowed: bool = False
    reservation_id: str | None = None  # the reservation the call held (released when it is stored)


# Names of the attribution fields in errors of a single ingest (headers) and of a bulk item (fields).
_HEADER_NAMES = P.ATTRIBUTION_HEADERS
_BULK_NAMES = {f.name: f.bulk_field for f in P.CONTEXT_FIELDS if f.role == P.ATTRIBUTION}
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
                f"{_HEADER_NAMES['use_case_version']} must be an integer from 0 to {P.MAX_USE_CASE_VERSION}, "
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


_LISTED_IDS = 5  # unknown limit ids an error message names (the rest are counted)
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
    if err["loc"] and err["loc"][0] == "use_case_version":
        return bad_request("invalid_use_case_version", f"{loc}: {err['msg']}")
    return bad_request("invalid_field_value", f"{loc}: {err['msg']}")


def require_json(content_type: str | None) -> None:
    """Ingest bodies are JSON: any other declared media type (or none) is refused with 415."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise PayiApiError(
            415,
            "invalid_content_type",
            f"Content-Type must be application/json, got {P.preview(content_type) if content_type else 'none'}",
        )


def parse_single(body: bytes) -> IngestRequest:
    if not body.strip():
        raise bad_request("invalid_json", "body is empty; expected a JSON object")
    try:
        return IngestRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


_BULK_ITEMS = TypeAdapter(list[BulkIngestRequest])
# Larger bulk bodies are read one item at a time: parsing 16 MiB in one call would hold the GIL
# (and so the event loop) for longer than a health check may wait.
_WHOLE_PARSE_BYTES = 1024 * 1024
_YIELD_EVERY = 16  # bulk items between two offers of the GIL to other threads
_JSON_TEXT = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def parse_bulk(body: bytes) -> list[BulkIngestRequest | PayiApiError]:
    """The items of a bulk body, each parsed or the error that rejects it alone.

    A body whose items are all valid is validated in one pass; otherwise item by item, so each
    bad item gets its own error. Bodies over 1 MiB are always read item by item.
    """
    items: list[BulkIngestRequest | PayiApiError]
    if len(body) > _WHOLE_PARSE_BYTES:
        items = []
        for text in _bulk_item_texts(body):
            items.append(_parse_bulk_item_json(text))
            _check_item_count(len(items))
            if len(items) % _YIELD_EVERY == 0:
                time.sleep(0)  # let the event loop's thread take the GIL now
        return items
    try:
        items = list(_BULK_ITEMS.validate_json(body))
    except ValidationError:
        items = [_parse_bulk_item(item) for item in _parse_bulk_array(body)]
    _check_item_count(len(items))
    return items


def _check_item_count(count: int) -> None:
    if count > P.MAX_BULK_ITEMS:
        raise bad_request("invalid_field_value", f"body: at most {P.MAX_BULK_ITEMS} events per bulk request")


def _text_pieces(body: bytes) -> Iterator[str]:
    """The body decoded as UTF-8, 1 MiB at a time (one call over 16 MiB would hold the GIL long)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(body)
    try:
        for start in range(0, len(body), _WHOLE_PARSE_BYTES):
            yield decoder.decode(view[start : start + _WHOLE_PARSE_BYTES])
        yield decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise bad_request("invalid_json", f"body is not valid UTF-8: {exc.reason}") from None


def _bulk_item_texts(body: bytes) -> Iterator[str]:
    """The JSON text of each item of a bulk body's array, found piece by piece without parsing (or
    even decoding) the whole body in one call."""
    pieces = _text_pieces(body)
    text, at, more = "", 0, True

    def need(count: int) -> bool:
        """Make sure ``text[at:]`` holds at least ``count`` characters (False: the body ended)."""
        nonlocal text, at, more
        while len(text) - at < count and more:
            piece = next(pieces, None)
            if piece is None:
                more = False
            else:
                text, at = text[at:] + piece, 0
        return len(text) - at >= count

    def skip_whitespace() -> str:
        nonlocal at
        while need(1):
            at = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
            if at < len(text):
                return text[at]
        return ""

    if skip_whitespace() != "[":
        raise bad_request("invalid_json", "body must be a JSON array of events")
    at += 1
    if skip_whitespace() == "]":
        at += 1
    else:
        while True:
            while True:
                try:
                    _, end = _JSON_TEXT.raw_decode(text, at)
                    break
                except json.JSONDecodeError as exc:
                    if not more or not need(len(text) - at + 1):  # the item may go on in the next piece
                        raise bad_request("invalid_json", f"body is not valid JSON: {exc}") from None
            yield text[at:end]
            at = end
            separator = skip_whitespace()
            at += 1
            if separator == "]":
                break
            if separator != ",":
                raise bad_request("invalid_json", "body is not valid JSON: expected ',' or ']' after an item")
            skip_whitespace()
    if skip_whitespace():
        raise bad_request("invalid_json", "body is not valid JSON: data after the array")


def _parse_bulk_item_json(text: str) -> BulkIngestRequest | PayiApiError:
    if not text.startswith("{"):
        return bad_request("invalid_json", "each bulk item must be a JSON object")
    try:
        return BulkIngestRequest.model_validate_json(text)
    except ValidationError as exc:
        return validation_error(exc)


def _parse_bulk_array(body: bytes) -> list[Any]:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request("invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise bad_request("invalid_json", "body must be a JSON array of events")
    return items


def _parse_bulk_item(item: Any) -> BulkIngestRequest | PayiApiError:
    if not isinstance(item, dict):
        return bad_request("invalid_json", "each bulk item must be a JSON object")
    try:
        return BulkIngestRequest.model_validate(item)
    except ValidationError as exc:
        return validation_error(exc)


def iso_timestamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


class Ingestor:
    """Turns validated events into stored requests."""

    def __init__(
        self, store: Store, pricer: Pricer, clock: Callable[[], float] = time.time, *, block_limits: bool = False
    ) -> None:
        self.store = store
        self.pricer = pricer
        # Beyond Pay-i, switched on explicitly: ingest counts spend in block limits too (see README).
        self.block_limits = block_limits
        self.clock = clock  # seconds since the epoch; decides when scheduled limit resets are due

    def _check_attribution(
        self, app: Application, attr: Attribution, names: dict[str, str], batch: _Batch | None = None
    ) -> None:
        check_attribution_bounds(attr, names)
        if attr.user_id is not None and P.has_whitespace(attr.user_id):
            raise bad_request("invalid_user_id", f"{names['user_id']} must not contain spaces")
        for tag in attr.request_tags:
            if not P.REQUEST_TAG_RULE.fullmatch(tag):
                raise bad_request(
                    "invalid_tags", f"{names['request_tags']}: tag {tag!r} must be {P.REQUEST_TAG_RULE_TEXT}"
                )
        if attr.use_case_name is not None and not P.USE_CASE_NAME_RULE.fullmatch(attr.use_case_name):
            raise bad_request(
                "invalid_use_case_name", f"{names['use_case_name']} must be {P.USE_CASE_NAME_RULE_TEXT}"
            )
        if attr.use_case_name is None:
            for f in ("use_case_id", "use_case_version", "use_case_step"):
                if getattr(attr, f) is not None:
                    code = "header_is_missing" if names is _HEADER_NAMES else "required_field_missing"
                    raise bad_request(code, f"{names[f]} requires {names['use_case_name']}")
        if len(set(attr.limit_ids)) != len(attr.limit_ids):
            raise bad_request("duplicate_limit_id", f"{names['limit_ids']} lists the same limit id twice")
        unknown, blocking = self.store.check_limit_ids(
            app.id, attr.limit_ids, int(self.clock() * 1000), batch.known_limits if batch is not None else None
        )
        if unknown:
            shown = ", ".join(P.preview(i) for i in unknown[:_LISTED_IDS])
            more = f" and {len(unknown) - _LISTED_IDS} more" if len(unknown) > _LISTED_IDS else ""
            raise bad_request(
                "invalid_limit_ids",
                f"{names['limit_ids']}: limit ids {shown}{more} do not exist or do not belong to this application",
            )
        if blocking and not (attr.block_limits_allowed or self.block_limits):
            shown = ", ".join(P.preview(i) for i in blocking[:_LISTED_IDS])
            more = f" and {len(blocking) - _LISTED_IDS} more" if len(blocking) > _LISTED_IDS else ""
            raise bad_request(
                "blocking_limit_not_allowed",
                f"{names['limit_ids']}: {shown}{more} are block limits; block limits cannot be used for ingest"
                " requests (only allow limits)",
            )

    def check_headers(self, app: Application, attr: Attribution) -> None:
        """Refuse attribution headers that an ingest of the same call would refuse (PayiApiError)."""
        self._check_attribution(app, attr, _HEADER_NAMES)

    def ingest(self, app: Application, event: IngestRequest, attr: Attribution) -> dict[str, Any]:
        """Store one event (or recognise a duplicate) and return the IngestResponse body.

        The event's writes form one unit (a savepoint inside a shared transaction); the caller
        answers only after the enclosing transaction committed.
        """
        with self.store.transaction():
            ingest_ms = now_ms()
            batch = _Batch(ingest_ms)
            outcome = self._prepare(app, event, attr, _HEADER_NAMES, batch)
            if isinstance(outcome, StoredRequest):
                self._account_limits(app, batch)  # a repeat still ends its call's reservation
                return response_body(outcome, duplicate=True)
            self._account_limits(app, batch)
            self.store.add_requests(batch.rows, batch.new_instances)
        # A str (an earlier item's request id) only answers a repeat within one batch; this batch holds one event.
        assert not isinstance(outcome, str)
        return response_body(StoredRequest.from_request_row(batch.rows[0]), duplicate=False)

    def ingest_bulk(self, app: Application, items: list[BulkIngestRequest | PayiApiError]) -> dict[str, Any]:
        """Store the good items of a bulk body in one go and return the BulkIngestResponse body.

        Every item is checked (and deduplicated, also against earlier items of the same body)
        before anything is written; the rows are then inserted together. A bad item is reported by
        its index and never stops the others.
        """
        ingest_ms = now_ms()
        outcomes = self.ingest_each(app, items, ingest_ms)
        errors = [
            {"item_index": index, "xproxy_result": outcome.body()}
            for index, outcome in enumerate(outcomes)
            if isinstance(outcome, PayiApiError)
        ]
        stored = sum(1 for outcome in outcomes if isinstance(outcome, Stored) and not outcome.duplicate)
        return {
            "request_id": new_id(),
            "ingest_timestamp": iso_timestamp(ingest_ms),
            "ingest_count": stored,
            "duplicate_count": len(items) - stored - len(errors),
            "error_count": len(errors),
            "item_error_count": len(errors),
            "total_count": len(items),
            "errors": errors,
        }

    def ingest_each(
        self,
        app: Application,
        items: list[BulkIngestRequest | PayiApiError],
        ingest_ms: int | None = None,
        replaces: dict[int, str] | None = None,
    ) -> list[Stored | PayiApiError]:
        """Store bulk items (one transaction); per item, the request it is stored as or its error.

        ``replaces`` maps item indexes to stored request ids the item takes the place of: the old
        request is removed and the item stored under its id.
        """
        with self.store.transaction():
            batch = _Batch(ingest_ms or now_ms())
            outcomes: list[Stored | PayiApiError] = []
            for index, item in enumerate(items):
                if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                    time.sleep(0)  # let the event loop's thread take the GIL now (a large bulk runs long)
                try:
                    if isinstance(item, PayiApiError):
                        raise item  # rejected when parsed: reported like any other bad item
                    attr = attribution_from_item(item)
                    replaced = (replaces or {}).get(index)
                    if replaced is None:
                        outcome = self._prepare(app, item, attr, _BULK_NAMES, batch)
                    else:
                        with self.store.transaction():  # a savepoint: a rejected item keeps the old request
                            self.store.delete_request(app.id, replaced)
                            outcome = self._prepare(app, item, attr, _BULK_NAMES, batch)
                except PayiApiError as exc:
                    outcomes.append(exc)
                    continue
                if isinstance(outcome, StoredRequest):
                    outcomes.append(Stored(outcome.request_id, duplicate=True))
                elif isinstance(outcome, str):  # an earlier item of this batch
                    outcomes.append(Stored(outcome, duplicate=True))
                else:
                    if replaced is not None:
                        batch.rows[-1] = (replaced, *outcome[1:])
                    outcomes.append(Stored(batch.rows[-1][0], duplicate=False))
            self._account_limits(app, batch)
            self.store.add_requests(batch.rows, batch.new_instances)
        return outcomes

    def _account_limits(self, app: Application, batch: _Batch) -> None:
        """Count the batch's requests in the limits they name (one pair of updates per limit) and
        set each request row's per-limit states."""
        for reservation in batch.reservations:  # the calls ended: their real cost is counted below
            self.store.release_reservation(app.id, reservation)
        if not batch.limit_entries:
            return
        entries = [(ids, cost, failed, batch.rows[i][0]) for i, ids, cost, failed in batch.limit_entries]
        states = self.store.account_limits_batch(app.id, entries, {"application": app.name}, int(self.clock() * 1000))
        for (i, *_), limit_states in zip(batch.limit_entries, states, strict=True):
            row = batch.rows[i]
            batch.rows[i] = (*row[:_LIMIT_STATES], _dumps(limit_states) if limit_states else None,
                             *row[_LIMIT_STATES + 1 :])

    def _event_time(self, event: IngestRequest, batch: _Batch) -> tuple[int, datetime]:
        if event.event_timestamp is None:
            return batch.ingest_ms, batch.ingest_time
        when = event.event_timestamp
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        event_ms = int(when.timestamp() * 1000)
        if event_ms > batch.ingest_ms + _FUTURE_TOLERANCE_MS:
            raise bad_request(
                "invalid_ingest_event_timestamp", "event_timestamp cannot be greater than 5 minutes into the future"
            )
        return event_ms, when

    def _prepare(
        self, app: Application, event: IngestRequest, attr: Attribution, names: dict[str, str], batch: _Batch
    ) -> tuple[Any, ...] | StoredRequest | str:
        """Check and price one event and append its row to ``batch``; returns the row.

        Returns the stored request it duplicates instead (the request id when it duplicates an
        earlier item of the same batch). Every check that can reject the event runs before any write.
        """
        self._check_attribution(app, attr, names, batch)
        event_ms, when = self._event_time(event, batch)
        if attr.reservation_id is not None:  # released at the batch's end, whether stored or a repeat
            batch.reservations.append(attr.reservation_id)
        provider_key = None
        if event.provider_response_id is not None:
            provider_key = (event.category, event.provider_response_id)
            earlier = batch.provider_ids.get(provider_key)
            if earlier is not None:
                return earlier
        if attr.dedupe_id is not None and attr.dedupe_id in batch.dedupe_ids:
            return batch.dedupe_ids[attr.dedupe_id]
        duplicate = self.store.find_duplicate(app.id, event.category, event.provider_response_id, attr.dedupe_id)
        if duplicate is not None:
            return duplicate

        use_case_id = use_case_version = None
        limit_ids = attr.limit_ids
        if attr.use_case_name is not None:
            try:
                use_case_id, use_case_version, instance_limit = self.store.use_case_instance(
                    app.id, attr.use_case_name, attr.use_case_id, attr.use_case_version, event.use_case_properties,
                    batch.ingest_ms, batch.new_instances,
                )
            except StoreError as exc:
                field_name = names["use_case_version" if exc.code == "invalid_use_case_version" else "use_case_id"]
                raise bad_request(exc.code, f"{field_name}: {exc}") from None
            if instance_limit is not None and instance_limit not in limit_ids:
                limit_ids = [*limit_ids, instance_limit]  # the instance's own limit (from its use case's limit_config)

        units = {k: {"input": u.input, "output": u.output} for k, u in event.units.items()}
        input_tokens = output_tokens = 0
        for u in units.values():
            input_tokens += u["input"]
            output_tokens += u["output"]
        status = event.http_status_code
        failed = status is not None and (status >= 400 or status == P.FAILURE_STATUS)
        sent = event.properties or {}
        if not failed and not (input_tokens or output_tokens) and sent.get(P.USAGE_INCOMPLETE) == "true":
            # A successful call whose usage the provider never reported: its cost is unknown, not $0.
            reason = sent.get(P.USAGE_INCOMPLETE_REASON) or "usage not reported"
            price = PriceResult(priced=False, unpriced_reason=f"usage not reported ({reason})")
        else:
            # xProxy-PriceAs-*: price the call as another category/resource; it stays stored as sent.
            price_category = attr.price_as_category or event.category
            price_resource = attr.price_as_resource or event.resource
            custom = self.store.custom_price_version(price_category, price_resource, event_ms, attr.resource_scope)
            if custom is not None:
                price = price_custom(custom.resource_id, custom.units, units, custom.resource)
            else:
                price = self.pricer.price(price_category, price_resource, units, when, attr.resource_scope)
            if price.resource_version is not None:
                self.store.remember_resource_version(price.resource_version, price_category, price_resource)
        properties = {k: v for k, v in sent.items() if v is not None}
        if failed and P.FAILURE not in properties:
            properties[P.FAILURE] = f"http_status_{status}"

        provider_data = {}
        for f in _PROVIDER_FIELDS:
            value = getattr(event, f)
            if value is not None:
                provider_data[f] = value
        if provider_data:
            if attr.logging_disabled:
                for f in _LOGGED_FIELDS:
                    provider_data.pop(f, None)
            for f in _MODEL_LIST_FIELDS:
                if f in provider_data:
                    provider_data[f] = [h.model_dump() for h in provider_data[f]]

        priced = price.priced
        request_id = new_id()
        if limit_ids:  # counted for the whole batch at its end (see _account_limits)
            cost = (price.input_cost, price.output_cost, price.total_cost) if priced else (0.0, 0.0, 0.0)
            batch.limit_entries.append((len(batch.rows), limit_ids, cost, failed))
        row = (
            request_id,
            app.id,
            event_ms,
            batch.ingest_ms,
            event.category,
            event.resource,
            price.resource_id,
            event.provider_response_id,
            attr.dedupe_id,
            attr.use_case_name,
            use_case_id,
            use_case_version,
            attr.use_case_step,
            attr.user_id,
            attr.account_name,
            attr.resource_scope,
            status,
            int(failed),
            event.end_to_end_latency_ms,
            event.time_to_first_token_ms,
            input_tokens,
            output_tokens,
            _dumps(units),
            price.input_cost if priced else None,
            price.output_cost if priced else None,
            price.total_cost if priced else None,
            price.unpriced_reason,
            None,  # limit states: set by _account_limits
            _dumps(properties) if properties else None,
            _dumps(provider_data) if provider_data else None,
            _dumps(price.unknown_units) if price.unknown_units else None,
            _dumps(attr.request_tags) if attr.request_tags else None,
        )
        batch.rows.append(row)
        if provider_key is not None:
            batch.provider_ids[provider_key] = row[0]
        if attr.dedupe_id is not None:
            batch.dedupe_ids[attr.dedupe_id] = row[0]
        return row


@dataclass(frozen=True, slots=True)
class Stored:
    """Where an ingested item went: a new request, or the one it duplicates."""

    request_id: str
    duplicate: bool


@dataclass(slots=True)
class _Batch:
    """The rows of one ingest call (one event, or a bulk body), written together at its end."""

    ingest_ms: int
    ingest_time: datetime = field(init=False)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    new_instances: list[tuple[Any, ...]] = field(default_factory=list)
    provider_ids: dict[tuple[str, str], str] = field(default_factory=dict)  # -> request id
    dedupe_ids: dict[str, str] = field(default_factory=dict)  # -> request id
    # (row index, limit ids, (input, output, total) cost, failed) of rows that name limits
    limit_entries: list[tuple[int, list[str], tuple[float, float, float], bool]] = field(default_factory=list)
    known_limits: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # checked: id -> (type, next reset)
    reservations: list[str] = field(default_factory=list)  # held by the batch's calls, released at its end

    def __post_init__(self) -> None:
        self.ingest_time = datetime.fromtimestamp(self.ingest_ms / 1000, UTC)


def xproxy_result(stored: StoredRequest, *, duplicate: bool = False) -> dict[str, Any]:
    """The ``xproxy_result`` of a stored request (the same at ingest, on a duplicate and on read)."""
    result: dict[str, Any] = {
        "request_id": stored.request_id,
        "use_case_name": stored.use_case_name,
        "use_case_id": stored.use_case_id,
        "use_case_version": stored.use_case_version,
        "use_case_step": stored.use_case_step,
        "user_id": stored.user_id,
        "account_name": stored.account_name,
        "resource_id": stored.resource_id,
        "cost": None,
        "unknown_units": stored.unknown_units,
        "limits": {lid: {"state": state} for lid, state in stored.limits.items()},
        "duplicate_request": duplicate,
    }
    if stored.request_tags:
        result["request_tags"] = stored.request_tags
    if stored.cost_total is not None:
        result["cost"] = {
            "currency": "usd",
            "input": {"base": stored.cost_input},
            "output": {"base": stored.cost_output},
            "total": {"base": stored.cost_total, "overrun_base": 0.0},
        }
    else:
        result["warnings"] = [f"unpriced: {stored.unpriced_reason}"]
    if stored.unknown_units and stored.cost_total is not None:
        result["warnings"] = [
            f"units without a price, not in the cost: {', '.join(sorted(stored.unknown_units))}"
        ]
    return result


def response_body(stored: StoredRequest, *, duplicate: bool) -> dict[str, Any]:
    """The IngestResponse body for a stored request."""
    return {
        "request_id": stored.request_id,
        "event_timestamp": iso_timestamp(stored.event_ms),
        "ingest_timestamp": iso_timestamp(stored.ingest_ms),
        "xproxy_result": xproxy_result(stored, duplicate=duplicate),
    }


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()

