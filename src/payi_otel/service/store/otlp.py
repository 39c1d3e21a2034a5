"""GenAI spans received over OTLP: which stored request each one's provider call became.

:mod:`payi_otel.service.otlp` uses them to store a call traced by two instrumentations once.
"""

from __future__ import annotations

from typing import Any

import orjson

from payi_otel import protocol as P
from payi_otel.service.store.connection import StoreBase

# A stored request's business context, as ingest event fields (see request_context): the scalar attribution
# fields, each stored in the requests column of its name.
_CONTEXT_COLUMNS = tuple(f.name for f in P.CONTEXT_FIELDS if f.role == P.ATTRIBUTION and f.kind != P.LIST)
_JSON_CONTEXT_COLUMNS = ("request_tags", "properties")


class OtlpSpansStore(StoreBase):
    def related_otlp_span(
        self,
        application_id: int,
        trace_id: str,
        span_ids: list[str],
        parent_ids: list[str],
        call_key: str,
        since_ms: int,
    ) -> tuple[str, int] | None:
        """``(request_id, rank)`` of a stored span of the same call: in the same trace, the parent or
        a child of one of ``span_ids`` (``parent_ids`` are their parents), with the same ``call_key``,
        seen since ``since_ms``."""
        parents = [p for p in parent_ids if p]
        sql = (
            "SELECT request_id, rank FROM otlp_spans WHERE application_id = ? AND trace_id = ? AND call_key = ?"
            f" AND seen_ms >= ? AND (parent_span_id IN ({','.join('?' * len(span_ids))})"
        )
        params: list[Any] = [application_id, trace_id, call_key, since_ms, *span_ids]
        if parents:
            sql += f" OR span_id IN ({','.join('?' * len(parents))})"
            params += parents
        row = self._conn.execute(sql + ") ORDER BY rank DESC LIMIT 1", params).fetchone()
        return None if row is None else (row[0], row[1])

    def add_otlp_spans(self, rows: list[tuple[Any, ...]]) -> None:
        """Remember spans: ``(application_id, trace_id, span_id, parent_span_id, request_id, call_key, rank,
        seen_ms)``; a span seen again keeps its first row."""
        self._conn.executemany("INSERT INTO otlp_spans VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)

    def set_otlp_request_rank(self, application_id: int, request_id: str, rank: int) -> None:
        self._conn.execute(
            "UPDATE otlp_spans SET rank = ? WHERE application_id = ? AND request_id = ?",
            (rank, application_id, request_id),
        )

    def prune_otlp_spans(self, before_ms: int) -> None:
        self._conn.execute("DELETE FROM otlp_spans WHERE seen_ms < ?", (before_ms,))

    def request_context(self, application_id: int, request_id: str) -> dict[str, Any] | None:
        """A stored request's business context as ingest event fields (attribution, request tags,
        properties); ``None`` when there is no such request, or when it was counted against limits
        (replacing it would count it twice)."""
        columns = ", ".join((*_CONTEXT_COLUMNS, *_JSON_CONTEXT_COLUMNS, "limit_states"))
        row = self._conn.execute(
            f"SELECT {columns} FROM requests WHERE application_id = ? AND request_id = ?",
            (application_id, request_id),
        ).fetchone()
        if row is None or row[-1] is not None:
            return None
        pairs = zip(_CONTEXT_COLUMNS, row, strict=False)  # row: the context columns, then the JSON ones
        context: dict[str, Any] = {name: value for name, value in pairs if value is not None}
        for name, raw in zip(_JSON_CONTEXT_COLUMNS, row[len(_CONTEXT_COLUMNS) :], strict=False):
            if raw:
                context[name] = orjson.loads(raw)
        return context

    def delete_request(self, application_id: int, request_id: str) -> None:
        """Remove a stored request (inside the caller's transaction, which stores its replacement)."""
        self._conn.execute(
            "DELETE FROM requests WHERE application_id = ? AND request_id = ?", (application_id, request_id)
        )
