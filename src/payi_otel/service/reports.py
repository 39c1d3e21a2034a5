"""Cost reports over the local store: grouping, time ranges, and table/JSON/CSV rendering.

Unpriced requests (the service could not price them) are counted separately and never add $0 to a
cost: a group whose requests are all unpriced shows no cost at all.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from payi_otel.safe_text import csv_cell, sanitize
from payi_otel.service.store import REPORT_DIMENSIONS, LimitRecord, Store, StoreError
from payi_otel.service.store.reports import MULTI_VALUED

DIMENSIONS = tuple(REPORT_DIMENSIONS)
FORMATS = ("table", "json", "csv")
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
        return int((now - timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])).timestamp() * 1000)
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


def parse_dimensions(values: list[str]) -> list[str]:
    """``--by use_case,user --by day`` -> ["use_case", "user", "day"], checked against DIMENSIONS."""
    out: list[str] = []
    for value in values:
        for dim in (d.strip() for d in value.split(",")):
            if not dim:
                continue
            if dim not in REPORT_DIMENSIONS:
                raise ReportError(f"--by {dim!r}: must be one of {', '.join(DIMENSIONS)}")
            if dim not in out:
                out.append(dim)
    return out


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
    _latencies: list[int] = field(default_factory=list, repr=False)


@dataclass
class Report:
    group_by: list[str]
    since: str | None
    until: str | None
    rows: list[ReportRow]
    total: ReportRow
    limits: list[dict[str, Any]] = field(default_factory=list)  # every limit now: spend against max, state


def _percentile(sorted_values: list[int], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 1))
    return float(sorted_values[int(rank) - 1])


def _add(row: ReportRow, cost: float | None, tin: int, tout: int, failed: int, latency: int | None) -> None:
    row.requests += 1
    if cost is None:
        row.unpriced_requests += 1
    else:
        row.priced_requests += 1
        row.cost_usd = (row.cost_usd or 0.0) + cost
    row.input_tokens += tin
    row.output_tokens += tout
    row.failures += failed
    if latency is not None:
        row._latencies.append(latency)


def _finish(row: ReportRow) -> None:
    lat = sorted(row._latencies)
    row.latency_p50_ms = _percentile(lat, 0.50)
    row.latency_p95_ms = _percentile(lat, 0.95)
    row._latencies = []


def build_report(
    store: Store,
    group_by: list[str],
    since_ms: int | None = None,
    until_ms: int | None = None,
    application: str | None = None,
) -> Report:
    """Rows sorted by cost (highest first); grouped by day, by day first (oldest first).

    ``application`` keeps only that application's requests.
    """
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise ReportError("--since must be earlier than --until")
    if application is not None:
        try:
            store.application(application)
        except StoreError:
            raise ReportError(f"--app {application!r}: no application of that name in this data directory") from None
    groups: dict[tuple[Any, ...], ReportRow] = {}
    total = ReportRow(group={})
    n = len(group_by)
    # Grouped by tag, a request with several tags is in several groups but counts once in the total.
    seen: set[int] | None = set() if any(d in MULTI_VALUED for d in group_by) else None
    for values in store.report_rows(group_by, since_ms, until_ms, application):
        key = tuple(values[:n])
        row_id, cost, tin, tout, failed, latency = values[n:]
        row = groups.get(key)
        if row is None:
            row = groups[key] = ReportRow(group=dict(zip(group_by, key, strict=True)))
        _add(row, cost, tin, tout, failed, latency)
        if seen is not None:
            if row_id in seen:
                continue
            seen.add(row_id)
        _add(total, cost, tin, tout, failed, latency)
    for row in groups.values():
        _finish(row)
    _finish(total)
    rows = sorted(groups.values(), key=lambda r: (-(r.cost_usd or 0.0), -r.requests, str(r.group)))
    if "day" in group_by:  # chronological; within a day, by cost as above (sorted() is stable)
        rows.sort(key=lambda r: r.group["day"] or "")
    limits = [limit_summary(app, lim) for app, lim in store.all_limits() if application in (None, app)]
    return Report(group_by, _iso(since_ms), _iso(until_ms), rows, total, limits)


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


_LIMIT_COLUMNS = (
    ("application", "application"),
    ("limit_name", "limit"),
    ("limit_type", "type"),
    ("spend_usd", "spend (USD)"),
    ("max_usd", "max (USD)"),
    ("used_percent", "used %"),
    ("state", "state"),
    ("requests", "requests"),
    ("failed", "failed"),
    ("next_reset", "next reset"),
)


def render_limits_table(limits: list[dict[str, Any]]) -> str:
    """Spend against max and state of every limit, as a text table."""

    def cell(name: str, value: Any) -> str:
        if value is None:
            return "-"
        if name in ("spend_usd", "max_usd"):
            return format_cost(value)
        if name == "used_percent":
            return f"{value:.1f}"
        return sanitize(str(value))  # names are user input: no control characters reach the terminal

    headers = [title for _, title in _LIMIT_COLUMNS]
    body = [[cell(n, lim[n]) for n, _ in _LIMIT_COLUMNS] for lim in limits]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    numeric = {3, 4, 5, 7, 8}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in body)])


_COLUMNS = (
    ("requests", "requests"),
    ("cost_usd", "cost (USD)"),
    ("unpriced_requests", "unpriced"),
    ("input_tokens", "input tok"),
    ("output_tokens", "output tok"),
    ("failures", "failures"),
    ("latency_p50_ms", "p50 ms"),
    ("latency_p95_ms", "p95 ms"),
)


def _row_dict(row: ReportRow) -> dict[str, Any]:
    data = asdict(row)
    data.pop("_latencies", None)
    return data


def render_json(report: Report) -> str:
    return json.dumps(
        {
            "group_by": report.group_by,
            "since": report.since,
            "until": report.until,
            "rows": [_row_dict(r) for r in report.rows],
            "total": _row_dict(report.total),
            "limits": report.limits,
        },
        indent=2,
    )


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*report.group_by, *(name for name, _ in _COLUMNS), "priced_requests"])
    for row in report.rows:
        writer.writerow(
            [
                *("" if row.group[d] is None else csv_cell(str(row.group[d])) for d in report.group_by),
                *("" if getattr(row, name) is None else getattr(row, name) for name, _ in _COLUMNS),
                row.priced_requests,
            ]
        )
    return out.getvalue()


COST_DECIMALS = 6
COST_SIGNIFICANT_DIGITS = 3


def format_cost(value: float) -> str:
    """A USD amount for the table: 6 decimals, more for amounts that small would round away.

    A non-zero cost never reads as zero: $0.00000012 (6 embedding tokens) prints as
    0.000000120, keeping 3 significant digits. JSON and CSV carry the full value.
    """
    if value == 0:
        return f"{0:.{COST_DECIMALS}f}"
    leading_zeros = -math.floor(math.log10(abs(value))) - 1  # zeros between the point and the first digit
    decimals = max(COST_DECIMALS, leading_zeros + COST_SIGNIFICANT_DIGITS)
    return f"{value:.{decimals}f}"


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "unpriced" if name == "cost_usd" else "-"
    if name == "cost_usd":
        return format_cost(value)
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


def render_table(report: Report) -> str:
    headers = [*report.group_by, *(title for _, title in _COLUMNS)]
    body = [
        [
            *("(none)" if r.group[d] is None else sanitize(str(r.group[d])) for d in report.group_by),
            *(_cell(n, getattr(r, n)) for n, _ in _COLUMNS),
        ]
        for r in report.rows
    ]
    total_label = ["TOTAL"] + [""] * (len(report.group_by) - 1) if report.group_by else []
    total = [*total_label, *(_cell(n, getattr(report.total, n)) for n, _ in _COLUMNS)]
    widths = [max(len(h), *(len(row[i]) for row in [*body, total])) for i, h in enumerate(headers)]
    numeric_from = len(report.group_by)

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i >= numeric_from else c.ljust(w) for i, (c, w) in pairs)

    lines = [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in body)]
    if report.group_by:
        lines.append("  ".join("-" * w for w in widths))
    lines.append(line(total))
    window = f"{report.since or 'beginning'} .. {report.until or 'now'}"
    lines.append("")
    lines.append(f"window: {window}; unpriced requests have no cost and are not counted as $0")
    if report.limits:
        lines += ["", "limits (spend since each limit's last reset):", render_limits_table(report.limits)]
    return "\n".join(lines)


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "table":
        return render_table(report)
    raise ReportError(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
