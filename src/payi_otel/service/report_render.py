"""Rendering a report: a table for people (Rich; plain text when not on a terminal), JSON and CSV for programs.

Costs read as money everywhere a person reads them: ``$`` and thousands separators, cents from $1 up, and
three significant digits below $1 so a tiny real cost never reads as zero. CSV carries full precision as
plain decimals (never ``1.8e-05``); JSON carries the numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from payi_otel.safe_text import csv_cell, sanitize
from payi_otel.service.reports import FORMATS, Report, ReportError

COST_SIGNIFICANT_DIGITS = 3
# Plain output (not a terminal): spaces between columns, dashes under the header and above the total.
_PLAIN = box.Box("    \n    \n -  \n    \n -  \n -  \n    \n    \n", ascii=True)

# (field, title)
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
_COSTS = {"cost_usd", "spend_usd", "max_usd"}
_NUMERIC = {
    "requests",
    "unpriced_requests",
    "input_tokens",
    "output_tokens",
    "failures",
    "latency_p50_ms",
    "latency_p95_ms",
    "used_percent",
    "failed",
    *_COSTS,
}


def format_cost(value: float) -> str:
    """``$1,234.57``; below $1, three significant digits (``$0.000660``, ``$0.0000717``, ``$0.000000120``)."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value == 0:
        return "$0.00"
    if value >= 0.9995:  # three significant digits would read 1.00 from here
        return f"{sign}${value:,.2f}"
    leading_zeros = -math.floor(math.log10(value)) - 1  # zeros between the point and the first digit
    return f"{sign}${value:,.{max(2, leading_zeros + COST_SIGNIFICANT_DIGITS)}f}"


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "unpriced" if name == "cost_usd" else "-"
    if name in _COSTS:
        return format_cost(value)
    if name == "used_percent":
        return f"{value:,.1f}"
    if isinstance(value, float):
        return f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return sanitize(str(value))  # names are user input: no control characters reach the terminal


def _table(headers: Sequence[tuple[str, str]], rows: list[list[str]], total: list[str] | None, terminal: bool) -> Table:
    table = Table(
        box=box.ROUNDED if terminal else _PLAIN,
        pad_edge=False,
        show_edge=False,
        header_style="bold" if terminal else None,
        show_footer=False,
    )
    justify: list[JustifyMethod] = ["right" if name in _NUMERIC else "left" for name, _ in headers]
    for (_, title), side in zip(headers, justify, strict=True):
        table.add_column(title, justify=side, no_wrap=True)

    def cells(row: list[str]) -> list[Text]:  # Text: a value is never read as Rich markup
        return [Text(c, justify=side) for c, side in zip(row, justify, strict=True)]

    for row in rows:
        table.add_row(*cells(row))
    if total is not None:
        table.add_section()
        table.add_row(*cells(total), style="bold" if terminal else None)
    return table


def _print(*items: Any, terminal: bool) -> str:
    """Rendered at the table's natural width: a narrow terminal wraps lines rather than cut values."""
    out = io.StringIO()
    console = Console(
        file=out,
        force_terminal=terminal,
        no_color=not terminal,
        width=100_000,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
        color_system="auto" if terminal else None,
    )
    for item in items:
        console.print(item)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def render_limits_table(limits: list[dict[str, Any]], terminal: bool = False) -> str:
    """Spend against max and state of every limit, as a table."""
    rows = [[_cell(n, lim[n]) for n, _ in _LIMIT_COLUMNS] for lim in limits]
    return _print(_table(_LIMIT_COLUMNS, rows, None, terminal), terminal=terminal)


def render_table(report: Report, terminal: bool = False) -> str:
    """The report as a table with a totals row; ``terminal``: boxed and bold (Rich), else plain aligned text."""
    dims = [(d, d) for d in report.group_by]
    rows = [
        [
            *("(none)" if r.group[d] is None else _cell(d, r.group[d]) for d in report.group_by),
            *(_cell(n, getattr(r, n)) for n, _ in _COLUMNS),
        ]
        for r in report.rows
    ]
    label = ["TOTAL"] + [""] * (len(report.group_by) - 1) if report.group_by else []
    total = [*label, *(_cell(n, getattr(report.total, n)) for n, _ in _COLUMNS)]
    table = _table([*dims, *_COLUMNS], rows, total, terminal)
    window = f"{report.since or 'beginning'} .. {report.until or 'now'}"
    parts: list[Any] = [table, "", f"window: {window}; unpriced requests have no cost and are not counted as $0"]
    if report.limits:
        limit_rows = [[_cell(n, lim[n]) for n, _ in _LIMIT_COLUMNS] for lim in report.limits]
        limits_table = _table(_LIMIT_COLUMNS, limit_rows, None, terminal)
        parts += ["", "limits (spend since each limit's last reset):", limits_table]
    return _print(*parts, terminal=terminal)


def render_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2)


def plain_decimal(value: float) -> str:
    """A float as a plain decimal with every digit it has: 1.8359999999999997e-05 -> 0.000018359999999999997."""
    text = format(Decimal(repr(value)), "f")
    return text[:-2] if text.endswith(".0") else text


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*report.group_by, *(name for name, _ in _COLUMNS), "priced_requests"])

    def number(value: Any) -> Any:
        if value is None:
            return ""
        return plain_decimal(value) if isinstance(value, float) else value

    for row in report.rows:
        writer.writerow(
            [
                *("" if row.group[d] is None else csv_cell(str(row.group[d])) for d in report.group_by),
                *(number(getattr(row, name)) for name, _ in _COLUMNS),
                row.priced_requests,
            ]
        )
    return out.getvalue()


def render(report: Report, fmt: str, terminal: bool = False) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "table":
        return render_table(report, terminal)
    raise ReportError(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
