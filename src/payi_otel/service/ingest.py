"""Ingest: check one Pay-i event, price it, count it in its limits and store it.

Used by ``POST /api/v1/ingest`` (attribution from ``xProxy-*`` headers), the bulk endpoint
(attribution in each item) and the OTLP receiver. Bodies are read by :mod:`.ingest_bodies`,
attribution by :mod:`.attribution`, limits by :mod:`.limit_accounting`; prices and provider data come
from :mod:`.ingest_pricing`; answers are built by :mod:`.ingest_results`. Errors are
:class:`~.errors.PayiApiError` with Pay-i's stable codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson

from payi_otel import protocol as P
from payi_otel.service.attribution import (
    BULK_NAMES,
    HEADER_NAMES,
    Attribution,
    attribution_from_item,
    check_attribution_rules,
)
from payi_otel.service.errors import PayiApiError, bad_request, invalid_api_key
from payi_otel.service.ingest_pricing import price_event, provider_data
from payi_otel.service.ingest_results import Stored, iso_timestamp, response_body
from payi_otel.service.limit_accounting import LimitEntry, PassedChecks, account_limits, check_limit_ids
from payi_otel.service.models import BulkIngestRequest, IngestRequest
from payi_otel.service.pricing import Pricer
from payi_otel.service.store import (
    Application,
    CheckFirst,
    Store,
    StoredKeys,
    StoredRequest,
    StoreError,
    new_id,
    now_ms,
)

FUTURE_TOLERANCE = timedelta(minutes=5)
_FUTURE_TOLERANCE_MS = FUTURE_TOLERANCE.total_seconds() * 1000
# A single-ingest event: its application, body and attribution, and the digest of the key it came with when that
# key was authenticated from memory (the write confirms it, see AppsStore.known_key), else None.
SingleEvent = tuple[Application, IngestRequest, Attribution, str | None]


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
        check_attribution_rules(attr, names)
        if attr.limit_ids and batch is not None and batch.unchecked is not None:
            allowed = attr.block_limits_allowed or self.block_limits  # checked as they are counted
            for lid in attr.limit_ids:
                batch.unchecked[lid] = batch.unchecked.get(lid, True) and allowed
        elif attr.limit_ids:
            check_limit_ids(
                self.store,
                app,
                attr.limit_ids,
                names["limit_ids"],
                int(self.clock() * 1000),
                batch.known_limits if batch is not None else None,
                block_limits_allowed=attr.block_limits_allowed or self.block_limits,
                passed=batch.passed_limits if batch is not None else None,
            )

    def check_headers(self, app: Application, attr: Attribution) -> None:
        """Refuse attribution headers that an ingest of the same call would refuse (PayiApiError)."""
        self._check_attribution(app, attr, HEADER_NAMES)

    def ingest(self, app: Application, event: IngestRequest, attr: Attribution) -> dict[str, Any]:
        """Store one event (or recognise a duplicate) and return the IngestResponse body."""
        answer = self.ingest_events([(app, event, attr, None)])[0]
        if isinstance(answer, PayiApiError):
            raise answer
        return answer

    def ingest_events(self, events: list[SingleEvent]) -> list[dict[str, Any] | PayiApiError]:
        """Store single-ingest events that arrived together; per event, its IngestResponse body or its error.

        The events of one application form one batch, as the items of a bulk body do: each is
        checked before anything is written, and the limits they name are counted once for the
        batch. The writes form one unit (a savepoint inside the group commit's transaction); the
        callers are answered only after the enclosing transaction committed.
        """
        answers: list[dict[str, Any] | PayiApiError | None] = [None] * len(events)
        by_app: dict[int, list[int]] = {}
        for index, (app, *_) in enumerate(events):
            by_app.setdefault(app.id, []).append(index)
        # several applications' batches are written together or not at all; one batch is its own savepoint
        with self.store.transaction() if len(by_app) > 1 else nullcontext():
            for indexes in by_app.values():
                batch_events = [events[i] for i in indexes]
                try:  # the limits named are checked by the updates that count them (a savepoint undoes those)
                    with self.store.transaction():
                        placed = self._ingest_batch(batch_events, check_limits=False)
                except CheckFirst:  # one was not countable as it stood: each event is checked first
                    with self.store.transaction():
                        placed = self._ingest_batch(batch_events, check_limits=True)
                for index, answer in zip(indexes, placed, strict=True):
                    answers[index] = answer
        assert all(answer is not None for answer in answers)  # every event was placed or refused
        return cast(list[dict[str, Any] | PayiApiError], answers)

    def _ingest_batch(self, events: list[SingleEvent], *, check_limits: bool) -> list[dict[str, Any] | PayiApiError]:
        """Store single events of one application as one batch; per event, its answer or its error.

        Without ``check_limits`` the limit ids are not checked before pricing but by the updates that count
        them, and cached data (custom prices, use cases) is used before the cache generation arrives with
        those updates (on PostgreSQL two round trips fewer): :class:`CheckFirst` is raised when that could
        answer differently (a limit id unknown, blocking or due for a reset; an event naming limits refused
        for another reason, which the limit check might have refused first; stale cached data; a key
        authenticated from memory no longer in use). With ``check_limits`` such a key is refused first."""
        app = events[0][0]
        answers: list[dict[str, Any] | PayiApiError | None] = [None] * len(events)
        digests = {digest for *_, digest in events if digest is not None}
        keys_found = self.store.keys_in_use(app.id, digests) if digests else None  # asked with the next statement
        if check_limits and keys_found is not None:
            in_use = keys_found()
            for index, (*_, digest) in enumerate(events):
                if digest is not None and digest not in in_use:
                    answers[index] = invalid_api_key(P.API_KEY)
        batch = _Batch(now_ms())
        if not check_limits:
            batch.unchecked = {}
        batch.stored = self.store.stored_keys(
            app.id, ((event.category, event.provider_response_id, attr.dedupe_id) for _, event, attr, _ in events)
        )
        placed: dict[int, tuple[Any, ...] | StoredRequest | str] = {}
        with nullcontext() if check_limits else self.store.cache_checked_later():
            for index, (_, event, attr, _) in enumerate(events):
                if answers[index] is not None:
                    continue  # its key is no longer in use
                try:
                    placed[index] = self._prepare(app, event, attr, HEADER_NAMES, batch)
                except PayiApiError as exc:
                    if not check_limits and attr.limit_ids:
                        raise CheckFirst from None
                    answers[index] = exc
            self._account_limits(app, batch)
            if not self.store.cache_was_current():  # priced with custom prices another instance has changed
                raise CheckFirst
            if not check_limits and keys_found is not None and not keys_found() >= digests:
                raise CheckFirst  # a key was rotated or removed: its events are refused
        self.store.add_requests(batch.rows, batch.new_instances)
        rows = {row[0]: row for row in batch.rows}  # with their limit states now
        for index, outcome in placed.items():
            if isinstance(outcome, StoredRequest):
                answers[index] = response_body(outcome, duplicate=True)
            else:  # a new row, or (a request id) a repeat of an earlier event of the batch
                row = rows[outcome if isinstance(outcome, str) else outcome[0]]
                answers[index] = response_body(StoredRequest.from_request_row(row), duplicate=isinstance(outcome, str))
        return cast(list[dict[str, Any] | PayiApiError], answers)

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
            if not replaces:  # a replacing item is looked up after the request it replaces is removed
                batch.stored = self.store.stored_keys(
                    app.id,
                    (
                        (item.category, item.provider_response_id, item.dedupe_id)
                        for item in items
                        if not isinstance(item, PayiApiError)
                    ),
                )
            outcomes: list[Stored | PayiApiError] = []
            for index, item in enumerate(items):
                try:
                    if isinstance(item, PayiApiError):
                        raise item  # rejected when parsed: reported like any other bad item
                    attr = attribution_from_item(item)
                    replaced = (replaces or {}).get(index)
                    if replaced is None:
                        outcome = self._prepare(app, item, attr, BULK_NAMES, batch)
                    else:
                        with self.store.transaction():  # a savepoint: a rejected item keeps the old request
                            self.store.delete_request(app.id, replaced)
                            outcome = self._prepare(app, item, attr, BULK_NAMES, batch)
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
        for reservation in batch.reservations:  # the calls ended: their real cost is counted below
            self.store.release_reservation(app.id, reservation)
        account_limits(self.store, app, batch.rows, batch.limit_entries, int(self.clock() * 1000), batch.unchecked)

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
        if batch.stored is not None:
            duplicate = batch.stored.duplicate(event.category, event.provider_response_id, attr.dedupe_id)
        else:
            duplicate = self.store.find_duplicate(app.id, event.category, event.provider_response_id, attr.dedupe_id)
        if duplicate is not None:
            return duplicate

        use_case_id = use_case_version = None
        limit_ids = attr.limit_ids
        logging_disabled = attr.logging_disabled
        if attr.use_case_name is not None:
            try:
                use_case_id, use_case_version, instance_limit = self.store.use_case_instance(
                    app.id,
                    attr.use_case_name,
                    attr.use_case_id,
                    attr.use_case_version,
                    event.use_case_properties,
                    batch.ingest_ms,
                    batch.new_instances,
                )
            except StoreError as exc:
                field_name = names["use_case_version" if exc.code == "invalid_use_case_version" else "use_case_id"]
                raise bad_request(exc.code, f"{field_name}: {exc}") from None
            if instance_limit is not None and instance_limit not in limit_ids:
                limit_ids = [*limit_ids, instance_limit]  # the instance's own limit (from its use case's limit_config)
            definition = self.store.definition(app.id, attr.use_case_name)
            if definition is not None and definition.logging_enabled is False:
                logging_disabled = True  # the use case keeps no prompts or responses (cost and metadata stay)

        units = {k: {"input": u.input, "output": u.output} for k, u in event.units.items()}
        input_tokens = output_tokens = 0
        for u in units.values():
            input_tokens += u["input"]
            output_tokens += u["output"]
        status = event.http_status_code
        failed = status is not None and (status >= 400 or status == P.FAILURE_STATUS)
        sent = event.properties or {}
        # Usage the provider did not report in full is not priced (a guess is not a cost), unless the provider
        # answered with an error status, which it does not bill.
        unreported = sent.get(P.USAGE_INCOMPLETE) == "true" and not (status is not None and status >= 400)
        price = price_event(self.store, self.pricer, event, attr, units, event_ms, when, unreported)
        properties = {k: v for k, v in sent.items() if v is not None}
        if failed and P.FAILURE not in properties:
            properties[P.FAILURE] = f"http_status_{status}"
        provider = provider_data(event, logging_disabled)

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
            _dumps(provider) if provider else None,
            _dumps(price.unknown_units) if price.unknown_units else None,
            _dumps(attr.request_tags) if attr.request_tags else None,
        )
        batch.rows.append(row)
        if provider_key is not None:
            batch.provider_ids[provider_key] = row[0]
        if attr.dedupe_id is not None:
            batch.dedupe_ids[attr.dedupe_id] = row[0]
        return row


@dataclass(slots=True)
class _Batch:
    """The rows of one ingest call (one event, or a bulk body), written together at its end."""

    ingest_ms: int
    ingest_time: datetime = field(init=False)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    new_instances: list[tuple[Any, ...]] = field(default_factory=list)
    provider_ids: dict[tuple[str, str], str] = field(default_factory=dict)  # -> request id
    dedupe_ids: dict[str, str] = field(default_factory=dict)  # -> request id
    limit_entries: list[LimitEntry] = field(default_factory=list)
    known_limits: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # checked: id -> (type, next reset)
    passed_limits: PassedChecks = field(default_factory=dict)  # the limit id lists that passed their check
    reservations: list[str] = field(default_factory=list)  # held by the batch's calls, released at its end
    stored: StoredKeys | None = None  # the stored requests its events could duplicate, looked up at its start
    # limit ids named but not checked (-> whether every event naming it may count in a block limit), or None
    unchecked: dict[str, bool] | None = None

    def __post_init__(self) -> None:
        self.ingest_time = datetime.fromtimestamp(self.ingest_ms / 1000, UTC)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
