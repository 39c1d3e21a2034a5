"""Admin access to the reports API, the organization API and the dashboard: the admin token off loopback,
open on loopback, and application keys that never read another application's data."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from service_support import running_service

from payi_otel.service.admin import admin_token_path
from payi_otel.service.app import create_app
from payi_otel.service.firstrun import read_default_key
from payi_otel.service.server import AppThread

EVENT = {"category": "system.openai", "resource": "gpt-4o-mini", "units": {"text": {"input": 100, "output": 10}}}


def _ingest(base_url: str, key: str, user: str) -> httpx.Response:
    return httpx.post(f"{base_url}/api/v1/ingest", json=EVENT, headers={"xProxy-api-key": key, "xProxy-User-ID": user})


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """The service as it runs when it listens on a non-loopback address (here served on 127.0.0.1)."""
    data = tmp_path_factory.mktemp("admin-remote")
    app = create_app(data, loopback_only=False)
    with AppThread(app) as server:
        server.data_dir = data
        server.api_key = read_default_key(data)
        server.admin = admin_token_path(data).read_text().strip()
        created = httpx.post(
            f"{server.base_url}/api/v1/admin/applications",
            json={"name": "other", "group": "g2"},
            headers={"Authorization": f"Bearer {server.admin}"},
        )
        assert created.status_code == 201, created.text
        server.other_key = created.json()["keys"][0]["key"]
        server.mine = _ingest(server.base_url, server.api_key, "alice").json()
        server.theirs = _ingest(server.base_url, server.other_key, "mallory").json()
        yield server


def test_the_admin_token_is_created_at_first_run_with_owner_only_access(remote):
    path = admin_token_path(remote.data_dir)
    assert path.stat().st_mode & 0o777 == 0o600
    assert remote.admin.startswith("payi-admin-") and len(remote.admin) > 40
    printed = subprocess.run(
        [sys.executable, "-m", "payi_otel.cli", "admin-token", "--data-dir", str(remote.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert printed.stdout.strip() == remote.admin


@pytest.mark.parametrize(
    "path", ["/api/v1/reports", "/api/v1/reports/requests", "/api/v1/reports/use_cases", "/api/v1/admin/organization"]
)
def test_off_loopback_reports_and_admin_need_the_admin_token(remote, path):
    url = f"{remote.base_url}{path}"
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401 and anonymous.json()["xproxy_error"]["code"] == "admin_token_required"
    wrong = httpx.get(url, headers={"Authorization": "Bearer payi-admin-wrong"})
    assert wrong.status_code == 401 and wrong.json()["xproxy_error"]["code"] == "invalid_admin_token"
    assert httpx.get(url, headers={"Authorization": f"Bearer {remote.admin}"}).status_code == 200


def test_the_admin_token_reads_every_application(remote):
    admin = {"Authorization": f"Bearer {remote.admin}"}
    rep = httpx.get(f"{remote.base_url}/api/v1/reports", params={"group_by": "application"}, headers=admin).json()
    costs = {row["group"]["application"]: row["cost_usd"] for row in rep["rows"]}
    assert costs == {
        "default": remote.mine["xproxy_result"]["cost"]["total"]["base"],
        "other": remote.theirs["xproxy_result"]["cost"]["total"]["base"],
    }
    one = httpx.get(f"{remote.base_url}/api/v1/reports", params={"application": "other"}, headers=admin).json()
    assert one["total"]["requests"] == 1
    detail = httpx.get(f"{remote.base_url}/api/v1/reports/requests/{remote.theirs['request_id']}", headers=admin)
    assert detail.status_code == 200 and detail.json()["user_id"] == "mallory"


def test_application_keys_never_read_other_applications(remote):
    mine = {"xProxy-api-key": remote.api_key}
    rep = httpx.get(f"{remote.base_url}/api/v1/reports", params={"group_by": "user"}, headers=mine).json()
    assert [row["group"]["user"] for row in rep["rows"]] == ["alice"]
    # asking for the other application by filter finds nothing rather than its data
    other = httpx.get(f"{remote.base_url}/api/v1/reports", params={"application": "other"}, headers=mine).json()
    assert other["total"]["requests"] == 0
    listed = httpx.get(f"{remote.base_url}/api/v1/reports/requests", params={"application": "other"}, headers=mine)
    assert listed.json()["items"] == []
    theirs = httpx.get(f"{remote.base_url}/api/v1/reports/requests/{remote.theirs['request_id']}", headers=mine)
    assert theirs.status_code == 404
    use_cases = httpx.get(f"{remote.base_url}/api/v1/reports/use_cases", params={"application": "other"}, headers=mine)
    assert use_cases.json()["use_cases"] == [] and use_cases.json()["recent_instances"] == []
    # and no admin action
    org = httpx.get(f"{remote.base_url}/api/v1/admin/organization", headers=mine)
    assert org.status_code == 403 and org.json()["xproxy_error"]["code"] == "admin_required"
    create = httpx.post(f"{remote.base_url}/api/v1/admin/applications", json={"name": "x"}, headers=mine)
    assert create.status_code == 403


def test_created_applications_keys_are_accepted_at_once_and_rotation_retires_the_old_key(remote):
    admin = {"Authorization": f"Bearer {remote.admin}"}
    created = httpx.post(
        f"{remote.base_url}/api/v1/admin/applications", json={"name": "fresh", "group": "team-a"}, headers=admin
    )
    assert created.status_code == 201
    body = created.json()
    assert body["group"] == "team-a" and [k["slot"] for k in body["keys"]] == [1, 2]
    for key in body["keys"]:
        assert _ingest(remote.base_url, key["key"], "u").status_code == 200
    org = httpx.get(f"{remote.base_url}/api/v1/admin/organization", headers=admin).json()
    groups = {g["name"]: g for g in org["groups"]}
    fresh = groups["team-a"]["applications"][0]
    assert fresh["name"] == "fresh" and fresh["requests"] == 2
    assert [k["prefix"] for k in fresh["keys"]] == [k["prefix"] for k in body["keys"]]
    assert all(k["key"].startswith(k["prefix"].removesuffix("...")) for k in body["keys"])
    again = httpx.post(f"{remote.base_url}/api/v1/admin/applications", json={"name": "fresh"}, headers=admin)
    assert again.status_code == 409 and again.json()["xproxy_error"]["code"] == "application_already_exists"
    bad = httpx.post(f"{remote.base_url}/api/v1/admin/applications", json={"name": "no spaces"}, headers=admin)
    assert bad.status_code == 400 and "name" in bad.json()["message"]

    rotated = httpx.post(f"{remote.base_url}/api/v1/admin/applications/fresh/keys/1", headers=admin).json()
    assert _ingest(remote.base_url, body["keys"][0]["key"], "u").status_code == 401
    assert _ingest(remote.base_url, rotated["key"], "u").status_code == 200
    assert _ingest(remote.base_url, body["keys"][1]["key"], "u").status_code == 200  # the other slot still works
    missing = httpx.post(f"{remote.base_url}/api/v1/admin/applications/nobody/keys/1", headers=admin)
    assert missing.status_code == 404


def test_rotating_the_default_key_in_the_dashboard_keeps_the_key_file_working(tmp_path):
    with running_service(tmp_path) as svc:
        before = read_default_key(tmp_path)
        new = httpx.post(f"{svc.base_url}/api/v1/admin/applications/default/keys/1").json()["key"]
        assert new != before and read_default_key(tmp_path) == new
        assert _ingest(svc.base_url, new, "u").status_code == 200


def test_on_loopback_the_dashboard_and_reports_are_open_but_not_to_other_host_names(tmp_path):
    with running_service(tmp_path) as svc:
        _ingest(svc.base_url, svc.api_key, "alice")
        assert httpx.get(f"{svc.base_url}/api/v1/reports").json()["total"]["requests"] == 1
        assert httpx.get(f"{svc.base_url}/api/v1/admin/organization").status_code == 200
        # a page whose domain was made to resolve to 127.0.0.1 (DNS rebinding) sends its own Host
        rebound = httpx.get(f"{svc.base_url}/api/v1/reports", headers={"Host": "attacker.example:80"})
        assert rebound.status_code == 401
        localhost = httpx.get(f"{svc.base_url}/api/v1/reports", headers={"Host": "localhost"})
        assert localhost.status_code == 200
        # an application key sent on loopback still reads its own application only
        _, other_key = _other_application(svc)
        assert (
            httpx.get(f"{svc.base_url}/api/v1/reports", headers={"xProxy-api-key": other_key}).json()["total"][
                "requests"
            ]
            == 0
        )
        security = httpx.get(f"{svc.base_url}/openapi.json").json()["paths"]["/api/v1/reports"]["get"]["security"]
        assert {} in security


def _other_application(svc):
    created = httpx.post(f"{svc.base_url}/api/v1/admin/applications", json={"name": "other"})
    assert created.status_code == 201
    return created.json()["name"], created.json()["keys"][0]["key"]


def test_the_dashboard_page_and_its_assets_are_served_by_the_service(tmp_path):
    with running_service(tmp_path) as svc:
        for path in ("/", "/dashboard"):
            page = httpx.get(f"{svc.base_url}{path}")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert '<script type="module" src="/dashboard/assets/dashboard/js/main.js">' in page.text
        chart = httpx.get(f"{svc.base_url}/dashboard/assets/vendor/chartjs/chart.umd.min.js")
        assert chart.status_code == 200 and "Chart.js" in chart.text[:200]
        licence = httpx.get(f"{svc.base_url}/dashboard/assets/vendor/chartjs/LICENSE.md")
        assert "MIT License" in licence.text
        assert httpx.get(f"{svc.base_url}/dashboard/assets/dashboard/js/main.js").status_code == 200


def test_serve_on_a_non_loopback_address_asks_for_the_admin_token(tmp_path):
    command = [sys.executable, "-m", "payi_otel.cli", "serve", "--host", "0.0.0.0", "--port", "0"]
    server = subprocess.Popen([*command, "--data-dir", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any("admin token" in line for line in lines):
            line = server.stdout.readline() if server.stdout else ""
            assert line, "".join(lines)
            lines.append(line)
        port = lines[0].strip().rsplit(":", 1)[1]
        assert any(line.strip() == f"dashboard: http://0.0.0.0:{port}/" for line in lines)
        assert str(admin_token_path(tmp_path)) in lines[-1]
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/v1/reports").status_code == 401
        assert httpx.get(f"{base}/api/v1/admin/organization").status_code == 401
        token = admin_token_path(tmp_path).read_text().strip()
        assert httpx.get(f"{base}/api/v1/reports", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(f"{base}/").status_code == 200  # the page itself holds no data: it asks for the token
    finally:
        server.terminate()
        server.wait(30)


def test_use_cases_overview_has_instances_and_kpi_scores(tmp_path):
    with running_service(tmp_path) as svc:
        key = {"xProxy-api-key": svc.api_key}
        base = f"{svc.base_url}/api/v1/use_cases"
        assert httpx.post(f"{base}/definitions", headers=key, json={"name": "triage", "description": "d"}).is_success
        kpi = {"name": "helpful", "description": "h", "kpi_type": "number", "goal": 10}
        assert httpx.post(f"{base}/definitions/triage/kpis", headers=key, json=kpi).is_success
        ids = [httpx.post(f"{base}/instances/triage", headers=key).json()["use_case_id"] for _ in range(3)]
        for use_case_id, score in zip(ids, (4, 8), strict=False):  # the third instance is not scored
            r = httpx.put(f"{base}/instances/triage/{use_case_id}/kpis/helpful", headers=key, json={"score": score})
            assert r.is_success, r.text
        overview = httpx.get(f"{svc.base_url}/api/v1/reports/use_cases", params={"recent": 2}).json()
        (summary,) = overview["use_cases"]
        assert summary["use_case_name"] == "triage" and summary["instances"] == 3
        assert summary["kpis"] == [
            {"name": "helpful", "kpi_type": "number", "goal": 10.0, "mean_score": 6.0, "scored_instances": 2}
        ]
        recent = overview["recent_instances"]
        assert len(recent) == 2 and {i["use_case_id"] for i in recent} <= set(ids)
        scores = {i["use_case_id"]: i["kpi_scores"] for i in recent}
        assert all(
            scores[i] == ({"helpful": 4.0} if i == ids[0] else {"helpful": 8.0} if i == ids[1] else {}) for i in scores
        )


def test_on_loopback_another_site_s_page_cannot_act_as_administrator(tmp_path):
    with running_service(tmp_path) as svc:
        rotate = f"{svc.base_url}/api/v1/admin/applications/default/keys/1"
        # what a browser sends for fetch(url, {method: "POST", mode: "no-cors"}) from another site: no preflight
        for headers in ({"Origin": "http://attacker.example"}, {"Sec-Fetch-Site": "cross-site"}):
            refused = httpx.post(rotate, headers=headers)
            assert refused.status_code == 401, refused.text
        assert _ingest(svc.base_url, svc.api_key, "u").status_code == 200  # the key still works
        own = httpx.post(rotate, headers={"Origin": svc.base_url, "Sec-Fetch-Site": "same-origin"})
        assert own.status_code == 200  # the dashboard's own page
