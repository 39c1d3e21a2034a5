"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright), over the demo's data.

The totals it shows must equal the reports API's and `payi-otel report`'s; its charts must draw the API's
numbers; a request's detail opens from the list; an application created in it gets a key the ingest API
accepts at once. Screenshots go to test-artifacts/dashboard/ (or $PAYI_OTEL_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from conftest import CHROMIUM
from playwright.sync_api import BrowserContext, Page, sync_playwright

from payi_otel.cli import DEFAULT_PORT
from payi_otel.service.admin import admin_token_path
from payi_otel.service.app import create_app
from payi_otel.service.firstrun import read_default_key
from payi_otel.service.report_render import format_cost
from payi_otel.service.server import AppThread

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("PAYI_OTEL_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "dashboard"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """The demo's data (payi-otel demo, as make run makes it), served as the demo's last lines say."""
    cwd = tmp_path_factory.mktemp("dashboard-demo")
    data = cwd / "demo"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}  # recorded responses
    run = subprocess.run(
        [sys.executable, "-m", "payi_otel.cli", "demo", "--fresh", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=cwd,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    *_, intro, command, url = run.stdout.strip().splitlines()
    assert intro.startswith("==> the dashboard of this data")
    assert url.strip() == f"then open http://127.0.0.1:{DEFAULT_PORT}/"
    # the printed command, as a user runs it (on a free port instead of the default, which may be taken)
    server = subprocess.Popen(
        shlex.split(command), cwd=cwd, stdout=subprocess.PIPE, text=True, env={**env, "PAYI_OTEL_PORT": "0"}
    )
    try:
        line = server.stdout.readline() if server.stdout else ""
        assert "listening on " in line, line
        base_url = line.split("listening on ")[1].strip()
        service_dir = data / "service"
        yield SimpleNamespace(base_url=base_url, data_dir=service_dir, api_key=read_default_key(service_dir))
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="payi-otel-chromium-") as profile:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=BROWSER_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    page.close()
    assert errors == [], f"the page reported errors: {errors}"


def _open(page: Page, base_url: str, view: str) -> None:
    page.goto(f"{base_url}/#/{view}")
    page.wait_for_selector(f'body[data-ready="{view.split("/")[0].split("?")[0]}"]', timeout=15_000)


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _cli_total_cost(data_dir: Path) -> str:
    command = [sys.executable, "-m", "payi_otel.cli", "report", "--data-dir", str(data_dir), "--by", "application"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    total = next(line for line in out.splitlines() if line.startswith("TOTAL"))
    return re.split(r"\s{2,}", total.strip())[2]  # TOTAL, requests, cost (plain output: not a terminal)


def _chart_data(page: Page, testid: str) -> list[float]:
    """The first dataset of the chart in that box, read from the Chart.js instance that drew it."""
    return page.evaluate(
        "id => Chart.getChart(document.querySelector(`[data-testid=${id}] canvas`)).data.datasets[0].data", testid
    )


def _drawn_pixels(page: Page, testid: str) -> int:
    return page.evaluate(
        """id => {
        const canvas = document.querySelector(`[data-testid=${id}] canvas`);
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let drawn = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) drawn++;
        return drawn;
    }""",
        testid,
    )


def test_overview_totals_equal_the_reports_api_and_the_cli(demo, page):
    api = httpx.get(f"{demo.base_url}/api/v1/reports").json()["total"]
    assert api["requests"] > 0 and api["cost_usd"] > 0
    _open(page, demo.base_url, "overview")
    shown = page.inner_text("[data-testid=total-cost]")
    assert shown == format_cost(api["cost_usd"]) == _cli_total_cost(demo.data_dir)
    assert page.inner_text("[data-testid=total-requests]") == f"{api['requests']:,}"
    assert page.inner_text("[data-testid=total-unpriced]") == str(api["unpriced_requests"])
    assert page.inner_text("[data-testid=latency-p95]") == f"{api['latency_p95_ms']:,.0f} ms"
    footer = page.inner_text("[data-testid=breakdown-table-total]")
    assert format_cost(api["cost_usd"]) in footer

    by_day = httpx.get(f"{demo.base_url}/api/v1/reports", params={"group_by": "day"}).json()["rows"]
    assert _chart_data(page, "chart-cost-over-time") == pytest.approx([r["cost_usd"] for r in by_day])
    by_app = httpx.get(f"{demo.base_url}/api/v1/reports", params={"group_by": "application"}).json()["rows"]
    assert _chart_data(page, "chart-breakdown") == pytest.approx([r["cost_usd"] for r in by_app])
    assert _drawn_pixels(page, "chart-cost-over-time") > 1000 and _drawn_pixels(page, "chart-breakdown") > 1000
    _shot(page, "overview-light")

    page.click("#theme")
    page.wait_for_selector('html[data-theme="dark"]')
    page.wait_for_selector('body[data-ready="overview"]')
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background != "rgb(246, 247, 249)"  # the dark theme's, not the light one's
    _shot(page, "overview-dark")
    page.click("#theme")


def test_a_request_opens_from_the_list_with_its_detail(demo, page):
    newest = httpx.get(f"{demo.base_url}/api/v1/reports/requests", params={"limit": 1}).json()["items"][0]
    detail = httpx.get(f"{demo.base_url}/api/v1/reports/requests/{newest['request_id']}").json()
    _open(page, demo.base_url, "requests")
    rows = page.locator("[data-testid=requests-table] tbody tr")
    assert rows.count() == httpx.get(f"{demo.base_url}/api/v1/reports").json()["total"]["requests"]
    _shot(page, "requests")
    rows.first.click()
    page.wait_for_selector("[data-testid=request-detail]")
    text = page.inner_text("[data-testid=request-detail]")
    assert detail["request_id"] in text and detail["resource"] in text
    assert format_cost(detail["cost_total"]) in text
    assert page.inner_text('[data-field="user"]') == detail["user_id"]
    units = page.inner_text("[data-testid=units-table]")
    for unit, amounts in detail["units"].items():
        assert unit in units and f"{amounts['input']:,}" in units
    _shot(page, "request-detail")


def test_an_application_created_in_the_dashboard_gets_a_key_ingest_accepts_at_once(demo, page):
    _open(page, demo.base_url, "organization")
    assert _drawn_pixels(page, "chart-applications") > 500
    page.click("[data-testid=create-application]")
    page.fill('[data-testid=create-dialog] input[name="name"]', "browser-app")
    page.fill('[data-testid=create-dialog] input[name="group"]', "team-b")
    page.click('[data-testid=create-dialog] button[type="submit"]')
    key = page.inner_text("[data-testid=new-key-1]")
    _shot(page, "create-application")
    ingest = httpx.post(
        f"{demo.base_url}/api/v1/ingest",
        headers={"xProxy-api-key": key},
        json={"category": "system.openai", "resource": "gpt-4o-mini", "units": {"text": {"input": 1000, "output": 0}}},
    )
    assert ingest.status_code == 200, ingest.text
    page.click("[data-testid=create-dialog] .actions button")
    page.wait_for_selector("[data-testid=group-team-b]")
    assert "browser-app" in page.inner_text("[data-testid=group-team-b]")

    _open(page, demo.base_url, "apps/browser-app")
    slots = page.inner_text("[data-testid=key-slots]")
    assert key[:16] in slots  # the prefix of key 1, never the key itself
    assert key not in slots
    _shot(page, "application-settings")


def test_limits_show_spend_against_max_and_state(demo, page):
    key = {"xProxy-api-key": demo.api_key}
    created = httpx.post(
        f"{demo.base_url}/api/v1/limits",
        headers=key,
        json={"limit_name": "browser-budget", "max": 0.000001, "limit_id": "browser-budget"},
    )
    assert created.status_code in (200, 201), created.text
    httpx.post(
        f"{demo.base_url}/api/v1/ingest",
        headers={**key, "xProxy-Limit-IDs": "browser-budget"},
        json={"category": "system.openai", "resource": "gpt-4o-mini", "units": {"text": {"input": 100}}},
    )
    limit = next(
        lim
        for lim in httpx.get(f"{demo.base_url}/api/v1/reports").json()["limits"]
        if lim["limit_id"] == "browser-budget"
    )
    _open(page, demo.base_url, "limits")
    row = page.locator("[data-testid=limits-table] tbody tr", has_text="browser-budget").inner_text()
    assert format_cost(limit["spend_usd"]) in row and format_cost(limit["max_usd"]) in row
    assert limit["state"] in row and limit["state"] != "ok"  # spent more than the max
    _shot(page, "limits")


def test_use_cases_and_a_phone_screen(demo, browser):
    page = browser.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        _open(page, demo.base_url, "use-cases")
        use_cases = httpx.get(f"{demo.base_url}/api/v1/reports/use_cases").json()["use_cases"]
        table = page.inner_text("[data-testid=use-cases-table]")
        assert use_cases and all(u["use_case_name"] in table for u in use_cases)
        _shot(page, "use-cases-phone")
        _open(page, demo.base_url, "overview")
        # nothing wider than the phone's screen but the tables' own scrolling boxes
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        _shot(page, "overview-phone")
    finally:
        page.close()


def test_the_dashboard_formats_money_exactly_as_the_cli(demo, page):
    values = [
        0.0,
        1.8359999999999997e-05,
        0.00066,
        7.17e-05,
        1.2e-07,
        0.0999,
        0.9994,
        0.9995,
        1.005,
        1234567.891,
        -0.5,
        3.3e-12,
    ]
    _open(page, demo.base_url, "overview")
    shown = page.evaluate(
        "values => import('/dashboard/assets/dashboard/js/format.js').then(f => values.map(f.money))", values
    )
    assert shown == [format_cost(v) for v in values]


def test_off_loopback_the_dashboard_asks_for_the_admin_token(tmp_path, browser):
    app = create_app(tmp_path, loopback_only=False)
    token = admin_token_path(tmp_path).read_text().strip()
    page = browser.new_page()  # its 401 answers are logged as console errors: only script errors count here
    script_errors: list[str] = []
    page.on("pageerror", lambda exc: script_errors.append(str(exc)))
    with AppThread(app) as server:
        page.goto(f"{server.base_url}/#/overview")
        page.wait_for_selector("#signin[open]")
        assert page.locator("[data-testid=total-cost]").count() == 0
        page.fill("#signin-token", "payi-admin-wrong")
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("#signin-error:not([hidden])")
        assert "admin token" in page.inner_text("#signin-error")
        page.fill("#signin-token", token)
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector('body[data-ready="overview"]')
        assert page.inner_text("[data-testid=total-requests]") == "0"
        # a new tab starts signed out, and takes the token from the address (never sent to the server)
        other = page.context.new_page()
        other.goto(f"{server.base_url}/#token={token}")
        other.wait_for_selector('body[data-ready="overview"]')
        assert token not in other.url
        other.close()
    page.close()
    assert script_errors == []


def test_a_top_spender_opens_their_requests(demo, page):
    rows = httpx.get(f"{demo.base_url}/api/v1/reports", params={"group_by": "user"}).json()["rows"]
    top = next(row for row in rows if row["group"]["user"])  # the first with a user, as the table lists them
    user = top["group"]["user"]
    _open(page, demo.base_url, "overview")
    page.locator("[data-testid=top-spenders-table] tbody tr", has_text=user).first.click()
    page.wait_for_selector('body[data-ready="requests"]')
    assert page.input_value('input[name="user"]') == user
    listed = page.locator("[data-testid=requests-table] tbody tr")
    assert listed.count() == top["requests"]
    assert all(user in text for text in listed.all_inner_texts())


def test_the_failures_figure_opens_the_failed_requests(demo, page):
    event = {"category": "system.openai", "resource": "gpt-4o-mini", "units": {}, "http_status_code": 429}
    sent = httpx.post(f"{demo.base_url}/api/v1/ingest", headers={"xProxy-api-key": demo.api_key}, json=event)
    assert sent.status_code == 200
    failed = httpx.get(f"{demo.base_url}/api/v1/reports/requests", params={"status": "failed"}).json()["items"]
    assert failed
    _open(page, demo.base_url, "overview")
    page.click("text=see them")
    page.wait_for_selector('body[data-ready="requests"]')
    assert page.input_value('select[name="status"]') == "failed"
    rows = page.locator("[data-testid=requests-table] tbody tr")
    assert rows.count() == len(failed)
    assert all("failed 429" in text for text in rows.all_inner_texts())
