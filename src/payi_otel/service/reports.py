"""The reports query layer: grouping, time windows and filters over the store, for the CLI and the API alike.

Unpriced requests (the service could not price them) are counted separately and never add $0 to a
cost: a group whose requests are all unpriced shows no cost at all.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from payi_otel.service.store import MULTI_VALUED, REPORT_DIMENSIONS, LimitRecord, ReportQuery, Store, StoreError

DIMENSIONS = tuple(REPORT_DIMENSIONS)
FORMATS = ("table", "json", "csv")  # what payi_otel.service.report_render renders
_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ReportError(ValueError):
    """Bad report options; the message names the option and the rule."""


def parse_time(value: str, option: str, now: datetime | None = None) -> int:
    """Epoch ms for an ISO date/datetime or a relative age like ``24h``, ``7d``, ``30m``, ``2w``."""
    now = now or datetime.now(UTC)
    text = value.strip()
    m = _RELATIVE.fullmatch(text)
    if m:
        try:
            return int((now - timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])).timestamp() * 1000)
        except OverflowError:
            raise ReportError(f"{option} {value!r}: relative age too large") from None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(
            f"{option} {value!r}: expected an ISO date/time (2026-01-31, 2026-01-31T12:00:00Z) "
            "or a relative age (30m, 24h, 7d, 2w)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def parse_dimensions(values: list[str], option: str = "--by") -> list[str]:
    """``--by use_case,user --by day`` -> ["use_case", "user", "day"], checked against DIMENSIONS."""
    out: list[str] = []
    for value in values:
        for dim in (d.strip() for d in value.split(",")):
            if not dim:
                continue
            if dim not in REPORT_DIMENSIONS:
                raise ReportError(f"{option} {dim!r}: must be one of {', '.join(DIMENSIONS)}")
            if dim not in out:
                out.append(dim)
    return out


def parse_filters(values: list[str], option: str = "--where") -> dict[str, str]:
    """``["user=alice", "tag=prod"]`` -> {"user": "alice", "tag": "prod"} (each dimension once)."""
    out: dict[str, str] = {}
    for value in values:
        dim, sep, wanted = value.partition("=")
        dim = dim.strip()
        if not sep:
            raise ReportError(f"{option} {value!r}: expected DIMENSION=VALUE, e.g. user=alice")
        if dim not in REPORT_DIMENSIONS:
            raise ReportError(f"{option} {dim!r}: must be one of {', '.join(DIMENSIONS)}")
        if dim in out:
            raise ReportError(f"{option} {dim!r}: given twice; a filter takes one value")
        out[dim] = wanted
    return out


def check_query(
    store: Store, query: ReportQuery, since: str = "--since", until: str = "--until", app: str = "--app"
) -> None:
    """Refuse a window that ends before it starts and an application that does not exist."""
    if query.since_ms is not None and query.until_ms is not None and query.since_ms >= query.until_ms:
        raise ReportError(f"{since} must be earlier than {until}")
    if query.application is not None:
        try:
            store.application(query.application)
        except StoreError:
            rule = "no application of that name in this data directory"
            raise ReportError(f"{app} {query.application!r}: {rule}") from None


@dataclass
class ReportRow:
    group: dict[str, Any]
    requests: int = 0
    priced_requests: int = 0
    unpriced_requests: int = 0
    cost_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    failures: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    units: dict[str, dict[str, int]] = field(default_factory=dict)  # tokens by kind: unit -> {input, output}
    _latencies: list[int] = field(default_factory=list, repr=False)

    def add(
        self,
        cost: float | None,
        tin: int,
        tout: int,
        failed: int,
        latency: int | None,
        units: dict[str, dict[str, int]],
    ) -> None:
        self.requests += 1
        if cost is None:
            self.unpriced_requests += 1
        else:
            self.priced_requests += 1
            self.cost_usd = (self.cost_usd or 0.0) + cost
        self.input_tokens += tin
        self.output_tokens += tout
        self.failures += failed
        if latency is not None:
            self._latencies.append(latency)
        for name, amounts in units.items():
            mine = self.units.setdefault(name, {"input": 0, "output": 0})
            mine["input"] += amounts.get("input", 0)
            mine["output"] += amounts.get("output", 0)

    def finish(self) -> None:
        lat = sorted(self._latencies)
        self.latency_p50_ms = _percentile(lat, 0.50)
        self.latency_p95_ms = _percentile(lat, 0.95)
        self._latencies = []
        self.units = dict(sorted(self.units.items()))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_latencies", None)
        return data


@dataclass
class Report:
    group_by: list[str]
    since: str | None
    until: str | None
    filters: dict[str, str]
    rows: list[ReportRow]
    total: ReportRow
    limits: list[dict[str, Any]] = field(default_factory=list)  # every limit now: spend against max, state

    def as_dict(self) -> dict[str, Any]:
        return {
            "group_by": self.group_by,
            "since": self.since,
            "until": self.until,
            "filters": self.filters,
            "rows": [r.as_dict() for r in self.rows],
            "total": self.total.as_dict(),
            "limits": self.limits,
        }


def _percentile(sorted_values: list[int], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 1))
    return float(sorted_values[int(rank) - 1])


def build_report(store: Store, group_by: list[str], query: ReportQuery | None = None) -> Report:
    """Rows sorted by cost (highest first); grouped by day or hour, chronological first."""
    query = query or ReportQuery()
    groups: dict[tuple[Any, ...], ReportRow] = {}
    total = ReportRow(group={})
    n = len(group_by)
    # Grouped by tag (or limit), a request with several is in several groups but counts once in the total.
    seen: set[int] | None = set() if any(d in MULTI_VALUED for d in group_by) else None
    for values in store.report_rows(group_by, query):
        key = tuple(values[:n])
        row_id, cost, tin, tout, failed, latency, units_json = values[n:]
        units = orjson.loads(units_json) if units_json else {}
        row = groups.get(key)
        if row is None:
            row = groups[key] = ReportRow(group=dict(zip(group_by, key, strict=True)))
        row.add(cost, tin, tout, failed, latency, units)
        if seen is not None:
            if row_id in seen:
                continue
            seen.add(row_id)
        total.add(cost, tin, tout, failed, latency, units)
    for row in groups.values():
        row.finish()
    total.finish()
    rows = sorted(groups.values(), key=lambda r: (-(r.cost_usd or 0.0), -r.requests, str(r.group)))
    for time_dim in ("hour", "day"):  # chronological; within a period, by cost as above (sorted() is stable)
        if time_dim in group_by:
            rows.sort(key=lambda r, d=time_dim: r.group[d] or "")  # type: ignore[misc]
    limits = [limit_summary(app, lim) for app, lim in store.all_limits() if query.application in (None, app)]
    filters = {**query.filters, **({"status": query.status} if query.status else {})}
    return Report(group_by, _iso(query.since_ms), _iso(query.until_ms), filters, rows, total, limits)


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def limit_summary(application: str, limit: LimitRecord) -> dict[str, Any]:
    """A limit's standing since its last reset (reports and ``payi-otel limits list``)."""
    return {
        "application": application,
        "limit_name": limit.limit_name,
        "limit_id": limit.limit_id,
        "limit_type": limit.limit_type,
        "spend_usd": limit.cost_total,
        "max_usd": limit.max,
        "used_percent": 100.0 * limit.cost_total / limit.max if limit.max else None,
        "threshold": limit.threshold,
        "state": limit.state,
        "requests": limit.requests["total"],
        "failed": limit.requests["failed"],
        "reset_schedule": limit.reset_schedule,
        "next_reset": _iso(limit.next_reset_ms),
    }
