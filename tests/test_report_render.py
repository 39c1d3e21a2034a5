"""`payi-otel report` as people and programs read it: money formatting, aligned tables, plain CSV decimals."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import httpx
import pytest
from service_support import running_service

from payi_otel.cli import main
from payi_otel.service.report_render import format_cost, plain_decimal, render
from payi_otel.service.reports import build_report
from payi_otel.service.store import Store


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.000660, "$0.000660"),
        (0.0000717, "$0.0000717"),
        (0.00000012, "$0.000000120"),
        (0.5, "$0.500"),
        (0.999, "$0.999"),
        (0.9999, "$1.00"),
        (1234.567, "$1,234.57"),
        (0.0, "$0.00"),
    ],
)
def test_costs_read_as_money(value, shown):
    assert format_cost(value) == shown


def test_csv_decimals_are_plain_and_exact():
    for value in (1.8359999999999997e-05, 1e-07, 123456789.125, 0.1 + 0.2):
        text = plain_decimal(value)
        assert "e" not in text.lower() and float(text) == value


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("render")
    events = [
        ("big", {"text": {"input": 1_234_567, "output": 23_456}}),
        ("tiny", {"text": {"input": 3}}),
        ("=cmd|' /C calc'!A0", {"text": {"input": 11}}),
    ]
    costs = {}
    with running_service(d) as svc:
        for user, units in events:
            r = httpx.post(
                f"{svc.base_url}/api/v1/ingest",
                headers={"xProxy-api-key": svc.api_key, "xProxy-User-ID": user.replace(" ", "")},
                json={"category": "system.openai", "resource": "gpt-4o-mini", "units": units},
            )
            assert r.status_code == 200, r.text
            costs[user.replace(" ", "")] = r.json()["xproxy_result"]["cost"]["total"]["base"]
    return str(d), costs


def test_plain_table_is_aligned_with_a_totals_row(data, capsys):
    d, costs = data
    assert main(["report", "--by", "user", "--data-dir", d]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "\x1b" not in "".join(lines) and "─" not in "".join(lines)  # plain text when not a terminal
    header = lines[0]
    body = [line for line in lines[2:] if line and not line.startswith(("-", "window"))]
    assert body[-1].startswith("TOTAL")
    cost_end = header.index("cost (USD)") + len("cost (USD)")
    for line in body:  # numbers right-aligned under their header
        cost = next(tok for tok in line.split() if tok.startswith("$"))
        assert line.index(cost) + len(cost) == cost_end
    big = next(line for line in body if line.startswith("big"))
    assert format_cost(costs["big"]) in big and "1,234,567" in big and "23,456" in big
    total = sum(costs.values())
    assert format_cost(total) in body[-1]


def test_terminal_table_uses_rich_styling(data):
    d, _ = data
    store = Store(d, create=False)
    try:
        report = build_report(store, ["user"])
    finally:
        store.close()
    text = render(report, "table", terminal=True)
    assert "\x1b[1m" in text and "│" in text and "TOTAL" in text
    assert "[bold]" not in render(report, "table", terminal=False)


def test_csv_has_plain_decimals_and_keeps_formula_escaping(data, capsys):
    d, costs = data
    assert main(["report", "--by", "user", "--format", "csv", "--data-dir", d]) == 0
    out = capsys.readouterr().out
    assert "e-0" not in out and "E-0" not in out
    rows = {row["user"]: row for row in csv.DictReader(io.StringIO(out))}
    assert Decimal(rows["tiny"]["cost_usd"]) == Decimal(repr(costs["tiny"]))
    assert "'=cmd|'/Ccalc'!A0" in rows and not any(u.startswith("=") for u in rows)
