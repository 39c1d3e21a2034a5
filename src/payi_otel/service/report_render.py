"""Rendering a report: a table for people, JSON and CSV for programs."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from payi_otel.safe_text import csv_cell, sanitize
from payi_otel.service.reports import Report, ReportError

FORMATS = ("table", "json", "csv")

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


def render_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2)


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
