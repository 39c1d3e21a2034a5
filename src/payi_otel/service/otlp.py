"""Spans received over OTLP -> stored requests, one per provider call.

Every GenAI provider-call span of an OTLP export request is mapped to an ingest event exactly as the
exporter maps it (:mod:`payi_otel.exporters.mapping`) and stored like a bulk ingest item (priced,
deduplicated by provider response id). A span the service cannot store (it breaks an ingest rule,
e.g. a use case name with spaces) is counted in the answer's ``partial_success.rejected_spans``.

One request per call across instrumentations
--------------------------------------------
When two instrumentations trace the same provider call (this project's and openai-v2, OpenLLMetry,
OpenInference or the provider SDK's own span), both spans reach the service, in one export request
or in different ones. They are recognised as one call when

* they are in the same trace, one the **direct parent** of the other, and
* they have the same Pay-i category and the same model (request model, else response model,
  compared without case), and
* the second arrives within :data:`SAME_CALL_WINDOW_S` seconds (15 minutes) of the first.

The call is then stored once. Its request holds the event of the span ranked highest: a span that
carries business context (``payi.*`` use case, user, account, tags, limits or properties) ranks
above one that does not, and between those this project's own span (it carries Pay-i units) ranks
above another instrumentation's. Attribution and properties the kept event lacks are taken from the
other span, so the request keeps the business context whichever span carried it. When a better
span arrives after its call was stored, the stored request is replaced in place (same request id),
unless it was already counted against limits (replacing it would count the call twice).

This is the rule the in-process exporter applies to spans nested with ours, seen from the service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from payi_otel.exporters.calls import Call, calls_from_views, merge_into
from payi_otel.exporters.mapping import render_bulk_item
from payi_otel.exporters.otlp import spans_from_otlp_request
from payi_otel.exporters.views import gc_paused
from payi_otel.service.commit import GroupCommitter
from payi_otel.service.errors import PayiApiError, validation_error
from payi_otel.service.ingest import Ingestor
from payi_otel.service.ingest_results import Stored
from payi_otel.service.models import BulkIngestRequest
from payi_otel.service.store import Application, Store, now_ms

__all__ = ["SAME_CALL_WINDOW_S", "ExportOutcome", "ServiceOtlpSink", "decode_calls", "off_loop"]

SAME_CALL_WINDOW_S = 15 * 60

T = TypeVar("T")


@dataclass(slots=True)
class ExportOutcome:
    """What the OTLP answer reports: spans refused (with the first reasons)."""

    rejected_spans: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def error_message(self) -> str:
        return "; ".join(self.errors[:5])


def _item(event: dict[str, Any]) -> BulkIngestRequest | PayiApiError:
    try:
        return BulkIngestRequest.model_validate(render_bulk_item(event))
    except ValidationError as exc:
        return validation_error(exc)


class ServiceOtlpSink:
    """Stores the calls of OTLP requests in the local service, for the application of the key."""

    def __init__(self, store: Store, ingestor: Ingestor, committer: GroupCommitter) -> None:
        self.store = store
        self.ingestor = ingestor
        self.committer = committer

    def authenticate(self, key: str | None) -> Application | None:
        return self.store.authenticate(key) if key else None

    async def export(self, principal: Application, body: bytes, content_type: str | None) -> ExportOutcome:
        calls = await off_loop(lambda: decode_calls(body, content_type))
        if not calls:
            return ExportOutcome()
        return await self.committer.run(lambda: self._store_calls(principal, calls))

    def _store_calls(self, app: Application, calls: list[Call]) -> ExportOutcome:
        received = now_ms()
        since = received - SAME_CALL_WINDOW_S * 1000
        items: list[BulkIngestRequest | PayiApiError] = []
        replaces: dict[int, str] = {}
        stored_calls: list[Call] = []  # the calls of ``items``, in order
        with self.store.transaction():
            for call in calls:
                span_ids = [span for span, _ in call.spans]
                related = self.store.related_otlp_span(
                    app.id, call.trace_id, span_ids, [parent for _, parent in call.spans], call.key, since
                )
                if related is not None:
                    request_id, rank = related
                    stored = self.store.request_context(app.id, request_id) if rank < call.rank else None
                    if stored is None:  # the stored event stays (also when limits counted it already)
                        self.store.add_otlp_spans(_span_rows(app, call, request_id, rank, received))
                        continue
                    merge_into(call.event, stored)
                    replaces[len(items)] = request_id
                items.append(_item(call.event))
                stored_calls.append(call)
            outcome = ExportOutcome()
            for call, result in zip(
                stored_calls, self.ingestor.ingest_each(app, items, received, replaces), strict=True
            ):
                if isinstance(result, PayiApiError):
                    outcome.rejected_spans += len(call.spans)
                    reason = f"{result.code}: {result.message}"
                    if reason not in outcome.errors:
                        outcome.errors.append(reason)
                    continue
                self._remember(app, call, result, received)
            self.store.prune_otlp_spans(since)
        return outcome

    def _remember(self, app: Application, call: Call, stored: Stored, received: int) -> None:
        self.store.add_otlp_spans(_span_rows(app, call, stored.request_id, call.rank, received))
        if not stored.duplicate:  # the request now holds this call's event
            self.store.set_otlp_request_rank(app.id, stored.request_id, call.rank)


def _span_rows(app: Application, call: Call, request_id: str, rank: int, seen_ms: int) -> list[tuple[Any, ...]]:
    return [
        (app.id, call.trace_id, span, parent or None, request_id, call.key, rank, seen_ms)
        for span, parent in call.spans
    ]


def decode_calls(body: bytes, content_type: str | None, include_content: bool = True) -> list[Call]:
    """The provider calls of an OTLP request body (nested spans of one call joined)."""
    with gc_paused():
        return calls_from_views(spans_from_otlp_request(body, content_type), include_content)


async def off_loop(work: Callable[[], T]) -> T:
    """CPU work of a large request runs in a worker thread, so the event loop keeps answering."""
    return await asyncio.to_thread(work)
