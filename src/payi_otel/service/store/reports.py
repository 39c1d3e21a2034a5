"""The rows reports aggregate (read through a separate read-only connection)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from payi_otel.service.store.connection import StoreBase

# Report dimensions -> SQL expression (the only place report columns are spelled in SQL).
REPORT_DIMENSIONS: dict[str, str] = {
    "application": "a.name",
    "group": "g.name",
    "use_case": "r.use_case_name",
    "user": "r.user_id",
    "account": "r.account_name",
    "tag": "t.value",
    "category": "r.category",
    "resource": "r.resource",
    "day": "date(r.event_ms / 1000, 'unixepoch')",
    "limit": "coalesce(lt.limit_name, lim.key)",
    # request properties an OTLP span's resource gives (service.name, ...)
    "service": """json_extract(r.properties, '$."service.name"')""",
    "namespace": """json_extract(r.properties, '$."service.namespace"')""",
    "environment": """json_extract(r.properties, '$."deployment.environment.name"')""",
}
# Dimensions with several values per request (a request is in one group per value).
MULTI_VALUED = ("tag", "limit")


class ReportsStore(StoreBase):
    def report_rows(
        self, dimensions: list[str], since_ms: int | None, until_ms: int | None, application: str | None = None
    ) -> Iterator[tuple[Any, ...]]:
        """Per request: (*dimension values, row id, cost_total|None, input_tokens, output_tokens, failed, latency_ms).

        A request with several tags (limits) yields one row per tag (limit) when grouping by tag (limit).
        """
        exprs = [REPORT_DIMENSIONS[d] for d in dimensions]
        sql = [
            "SELECT",
            ", ".join(
                [*exprs, "r.id", "r.cost_total", "r.input_tokens", "r.output_tokens", "r.failed", "r.latency_ms"]
            ),
            "FROM requests r JOIN applications a ON a.id = r.application_id JOIN groups g ON g.id = a.group_id",
        ]
        if "tag" in dimensions:
            sql.append("LEFT JOIN json_each(r.request_tags) t")
        if "limit" in dimensions:
            sql.append(
                "LEFT JOIN json_each(r.limit_states) lim"
                " LEFT JOIN limits lt ON lt.application_id = r.application_id AND lt.limit_id = lim.key"
            )
        where: list[str] = []
        params: list[Any] = []
        if since_ms is not None:
            where.append("r.event_ms >= ?")
            params.append(since_ms)
        if until_ms is not None:
            where.append("r.event_ms < ?")
            params.append(until_ms)
        if application is not None:
            where.append("a.name = ?")
            params.append(application)
        if where:
            sql.append("WHERE " + " AND ".join(where))
        reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10.0)
        try:
            yield from reader.execute(" ".join(sql), params)
        finally:
            reader.close()
