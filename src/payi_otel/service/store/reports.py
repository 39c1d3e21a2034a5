"""The rows reports aggregate, the request list and one request's detail (read-only connections)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from payi_otel.service.store.connection import StoreBase

# Report dimensions -> SQL expression (the only place report columns are spelled in SQL), in SQLite's
# spelling; POSTGRES_DIMENSIONS below replaces those spelled otherwise in PostgreSQL.
REPORT_DIMENSIONS: dict[str, str] = {
    "application": "a.name",
    "group": "g.name",
    "use_case": "r.use_case_name",
    "version": "r.use_case_version",
    "step": "r.use_case_step",
    "user": "r.user_id",
    "account": "r.account_name",
    "tag": "t.value",
    "limit": "coalesce(lt.limit_name, lim.key)",  # the limit's name; its id once it is deleted
    "category": "r.category",
    "resource": "r.resource",
    "day": "date(r.event_ms / 1000, 'unixepoch')",
    "hour": "strftime('%Y-%m-%dT%H:00Z', r.event_ms / 1000, 'unixepoch')",
    # request properties an OTLP span's resource gives (service.name, ...)
    "service": """json_extract(r.properties, '$."service.name"')""",
    "namespace": """json_extract(r.properties, '$."service.namespace"')""",
    "environment": """json_extract(r.properties, '$."deployment.environment.name"')""",
}
# Dimensions a request can have several values of: grouped by one, a request is in several groups.
MULTI_VALUED = {
    "tag": (
        "LEFT JOIN json_each(r.request_tags) t",
        "EXISTS (SELECT 1 FROM json_each(r.request_tags) WHERE value = ?)",
    ),
    "limit": (
        "LEFT JOIN json_each(r.limit_states) lim"
        " LEFT JOIN limits lt ON lt.application_id = r.application_id AND lt.limit_id = lim.key",
        "EXISTS (SELECT 1 FROM json_each(r.limit_states) j LEFT JOIN limits l2"
        " ON l2.application_id = r.application_id AND l2.limit_id = j.key WHERE coalesce(l2.limit_name, j.key) = ?)",
    ),
}
_PG_UTC = "to_timestamp(r.event_ms / 1000) AT TIME ZONE 'UTC'"
POSTGRES_DIMENSIONS: dict[str, str] = {
    **REPORT_DIMENSIONS,
    "day": f"to_char({_PG_UTC}, 'YYYY-MM-DD')",
    "hour": f"""to_char({_PG_UTC}, 'YYYY-MM-DD"T"HH24:00"Z"')""",
    "service": "CAST(r.properties AS jsonb) ->> 'service.name'",
    "namespace": "CAST(r.properties AS jsonb) ->> 'service.namespace'",
    "environment": "CAST(r.properties AS jsonb) ->> 'deployment.environment.name'",
}
POSTGRES_MULTI_VALUED = {
    "tag": (
        "LEFT JOIN LATERAL jsonb_array_elements_text(CAST(r.request_tags AS jsonb)) t(value) ON true",
        "EXISTS (SELECT 1 FROM jsonb_array_elements_text(CAST(r.request_tags AS jsonb)) e(value) WHERE value = ?)",
    ),
    "limit": (
        "LEFT JOIN LATERAL jsonb_object_keys(CAST(r.limit_states AS jsonb)) lim(key) ON true"
        " LEFT JOIN limits lt ON lt.application_id = r.application_id AND lt.limit_id = lim.key",
        "EXISTS (SELECT 1 FROM jsonb_object_keys(CAST(r.limit_states AS jsonb)) j(key) LEFT JOIN limits l2"
        " ON l2.application_id = r.application_id AND l2.limit_id = j.key WHERE coalesce(l2.limit_name, j.key) = ?)",
    ),
}
_FROM = "FROM requests r JOIN applications a ON a.id = r.application_id JOIN groups g ON g.id = a.group_id"
_LIST_COLUMNS = (
    "r.id, r.request_id, r.event_ms, a.name, r.category, r.resource, r.use_case_name, r.use_case_version, "
    "r.user_id, r.account_name, r.cost_total, r.input_tokens, r.output_tokens, r.failed, r.http_status_code, "
    "r.latency_ms"
)
_DETAIL_COLUMNS = (
    "r.request_id, r.event_ms, r.ingest_ms, a.name, r.category, r.resource, r.resource_id, r.resource_scope, "
    "r.provider_response_id, r.use_case_name, r.use_case_id, r.use_case_version, r.use_case_step, r.user_id, "
    "r.account_name, r.http_status_code, r.failed, r.latency_ms, r.ttft_ms, r.input_tokens, r.output_tokens, "
    "r.cost_input, r.cost_output, r.cost_total, r.unpriced_reason, r.units, r.unknown_units, r.limit_states, "
    "r.request_tags, r.properties, r.provider_data"
)


def _names(columns: str) -> list[str]:
    """Answer keys of SQL columns: ``r.cost_total`` -> ``cost_total``, ``a.name`` -> ``application``."""
    return ["application" if c.strip() == "a.name" else c.strip().split(".")[1] for c in columns.split(",")]


_LIST_NAMES = [n.replace("cost_total", "cost_usd") for n in _names(_LIST_COLUMNS)]
_DETAIL_NAMES = _names(_DETAIL_COLUMNS)
_JSON_DETAIL = ("units", "unknown_units", "limit_states", "request_tags", "properties", "provider_data")


# Request outcomes a query may keep (portable SQL).
STATUSES: dict[str, str] = {
    "failed": "r.failed <> 0",
    "succeeded": "r.failed = 0",
    "unpriced": "r.cost_total IS NULL",
    "priced": "r.cost_total IS NOT NULL",
}


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """Which requests a report or request list covers: a window, an application and equality filters."""

    since_ms: int | None = None
    until_ms: int | None = None
    application: str | None = None
    filters: Mapping[str, str] = field(default_factory=dict)  # dimension -> value
    status: str | None = None  # a key of STATUSES

    def where(self, postgres: bool = False) -> tuple[list[str], list[Any]]:
        """SQL conditions and their parameters (PostgreSQL's spelling with ``postgres``)."""
        dimensions, multi_valued = (
            (POSTGRES_DIMENSIONS, POSTGRES_MULTI_VALUED) if postgres else (REPORT_DIMENSIONS, MULTI_VALUED)
        )
        where: list[str] = []
        params: list[Any] = []
        if self.since_ms is not None:
            where.append("r.event_ms >= ?")
            params.append(self.since_ms)
        if self.until_ms is not None:
            where.append("r.event_ms < ?")
            params.append(self.until_ms)
        if self.application is not None:
            where.append("a.name = ?")
            params.append(self.application)
        for dim, value in self.filters.items():
            multi = multi_valued.get(dim)
            # compared as text so a version '2' matches; dimension names come from REPORT_DIMENSIONS only
            where.append(multi[1] if multi else f"CAST({dimensions[dim]} AS TEXT) = ?")
            params.append(value)
        if self.status is not None:
            where.append(STATUSES[self.status])
        return where, params


class ReportsStore(StoreBase):
    def _read(self, sql: str, params: list[Any]) -> Iterator[tuple[Any, ...]]:
        return self.read_stream(sql, params)

    def _where(self, query: ReportQuery) -> tuple[list[str], list[Any]]:
        return query.where(postgres=self._pg is not None)

    def report_rows(self, dimensions: list[str], query: ReportQuery) -> Iterator[tuple[Any, ...]]:
        """Per request: (*dimension values, row id, cost_total|None, input_tokens, output_tokens, failed,
        latency_ms, units JSON).

        A request with several tags (or limits) yields one row per tag when grouping by tag (or limit).
        """
        postgres = self._pg is not None
        exprs = [(POSTGRES_DIMENSIONS if postgres else REPORT_DIMENSIONS)[d] for d in dimensions]
        columns = [*exprs, "r.id", "r.cost_total", "r.input_tokens", "r.output_tokens", "r.failed", "r.latency_ms"]
        sql = ["SELECT", ", ".join([*columns, "r.units"]), _FROM]
        multi_valued = POSTGRES_MULTI_VALUED if postgres else MULTI_VALUED
        sql += [join for dim, (join, _) in multi_valued.items() if dim in dimensions]
        where, params = self._where(query)
        if where:
            sql.append("WHERE " + " AND ".join(where))
        return self._read(" ".join(sql), params)

    def request_page(
        self, query: ReportQuery, after: tuple[int, int] | None, size: int, newest_first: bool = True
    ) -> list[dict[str, Any]]:
        """Up to ``size`` requests after the (event_ms, row id) key ``after``, newest (or oldest) first.

        Each item has its key under ``_key``.
        """
        where, params = self._where(query)
        op, order = ("<", "DESC") if newest_first else (">", "ASC")
        if after is not None:
            where.append(f"(r.event_ms, r.id) {op} (?, ?)")
            params += list(after)
        sql = f"SELECT {_LIST_COLUMNS} {_FROM}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY r.event_ms {order}, r.id {order} LIMIT ?"
        items = []
        for row in self._read(sql, [*params, size]):
            item = dict(zip(_LIST_NAMES, row, strict=True))
            item["_key"] = [item["event_ms"], item.pop("id")]
            item["failed"] = bool(item["failed"])
            items.append(item)
        return items

    def request_detail(self, request_id: str, application: str | None = None) -> dict[str, Any] | None:
        """Everything stored about one request (JSON columns decoded), or None."""
        sql = f"SELECT {_DETAIL_COLUMNS} {_FROM} WHERE r.request_id = ?"
        params: list[Any] = [request_id]
        if application is not None:
            sql += " AND a.name = ?"
            params.append(application)
        for row in self._read(sql, params):
            detail = dict(zip(_DETAIL_NAMES, row, strict=True))
            detail["failed"] = bool(detail["failed"])
            for key in _JSON_DETAIL:
                detail[key] = orjson.loads(detail[key]) if detail[key] else None
            return detail
        return None

    def use_case_summaries(self, application: str | None) -> list[dict[str, Any]]:
        """Every use case definition (of one application, or all): its instances and its KPIs with the
        mean of their scores and how many instances were scored."""
        where, params = ("WHERE a.name = ?", [application]) if application is not None else ("", [])
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for app, name, version, description, instances in self._read(
            "SELECT a.name, d.name, d.version, d.description, (SELECT count(*) FROM use_case_instances i"
            " WHERE i.application_id = d.application_id AND i.name = d.name)"
            f" FROM use_case_definitions d JOIN applications a ON a.id = d.application_id {where}"
            " ORDER BY a.name, d.name",
            params,
        ):
            out[(app, name)] = {
                "application": app,
                "use_case_name": name,
                "version": version,
                "description": description,
                "instances": instances,
                "kpis": [],
            }
        for app, use_case, kpi, kpi_type, goal, mean, scored in self._read(
            "SELECT a.name, k.use_case_name, k.name, k.kpi_type, k.goal, avg(s.score), count(s.score)"
            " FROM kpis k JOIN applications a ON a.id = k.application_id"
            " LEFT JOIN use_case_instances i ON i.application_id = k.application_id AND i.name = k.use_case_name"
            " LEFT JOIN kpi_scores s ON s.application_id = k.application_id AND s.use_case_id = i.use_case_id"
            f" AND s.kpi_name = k.name {where} GROUP BY k.application_id, a.name, k.use_case_name, k.name"
            " ORDER BY k.name",
            params,
        ):
            summary = out.get((app, use_case))
            if summary is not None:
                summary["kpis"].append(
                    {"name": kpi, "kpi_type": kpi_type, "goal": goal, "mean_score": mean, "scored_instances": scored}
                )
        return list(out.values())

    def recent_use_case_instances(self, application: str | None, count: int) -> list[dict[str, Any]]:
        """The ``count`` newest use case instances (of one application, or all) with their KPI scores."""
        where, params = ("WHERE a.name = ?", [application]) if application is not None else ("", [])
        rows = list(
            self._read(
                "SELECT a.id, a.name, i.name, i.use_case_id, i.version, i.created_ms FROM use_case_instances i"
                f" JOIN applications a ON a.id = i.application_id {where} ORDER BY i.created_ms DESC, i.use_case_id"
                " LIMIT ?",
                [*params, count],
            )
        )
        items = [
            {
                "application": app,
                "use_case_name": name,
                "use_case_id": uc_id,
                "version": version,
                "created_ms": created,
                "kpi_scores": {},
                "_app_id": app_id,
            }
            for app_id, app, name, uc_id, version, created in rows
        ]
        if items:
            marks = ", ".join("(?, ?)" for _ in items)
            keys = [v for item in items for v in (item["_app_id"], item["use_case_id"])]
            by_key = {(item["_app_id"], item["use_case_id"]): item for item in items}
            for app_id, uc_id, kpi, score in self._read(
                "SELECT application_id, use_case_id, kpi_name, score FROM kpi_scores"
                f" WHERE (application_id, use_case_id) IN (VALUES {marks}) ORDER BY kpi_name",
                keys,
            ):
                by_key[(app_id, uc_id)]["kpi_scores"][kpi] = score
        for item in items:
            del item["_app_id"]
        return items
