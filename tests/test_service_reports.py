"""The reports API (`/api/v1/reports`) against known data, and `payi-otel report` agreeing with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from service_support import running_service, stored_requests

from payi_otel.cli import main
from payi_otel.service.store import Store

GPT4O = {"category": "system.openai", "resource": "gpt-4o"}


def _event(units, **extra):
    return {**GPT4O, "units": units, **extra}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    d = tmp_path_factory.mktemp("reports-api")
    with running_service(d) as service:
        store = Store(d)
        try:
            _, other_key = store.create_application("other", "g2")
        finally:
            store.close()
        old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
        sends = [
            (
                service.api_key,
                _event({"text": {"input": 100, "output": 10}}, end_to_end_latency_ms=100),
                {"xProxy-UseCase-Name": "chat", "xProxy-User-ID": "alice", "xProxy-Request-Tags": "prod,eu"},
            ),
            (
                service.api_key,
                _event(
                    {"text": {"input": 50, "output": 5}, "text_cache_read": {"input": 40}}, end_to_end_latency_ms=300
                ),
                {"xProxy-UseCase-Name": "chat", "xProxy-User-ID": "bob", "xProxy-Request-Tags": "prod"},
            ),
            (
                service.api_key,
                _event({"text": {"input": 7}}, resource="mystery-model", end_to_end_latency_ms=200),
                {"xProxy-UseCase-Name": "search", "xProxy-User-ID": "alice"},
            ),
            (
                service.api_key,
                _event({"text": {"input": 1000, "output": 100}}, event_timestamp=old),
                {"xProxy-UseCase-Name": "search", "xProxy-User-ID": "carol"},
            ),
            (service.api_key, _event({}, http_status_code=500), {"xProxy-UseCase-Name": "chat"}),
            (other_key, _event({"text": {"input": 9999, "output": 999}}), {"xProxy-User-ID": "mallory"}),
        ]
        results = []
        for key, body, headers in sends:
            r = httpx.post(f"{service.base_url}/api/v1/ingest", json=body, headers={"xProxy-api-key": key, **headers})
            assert r.status_code == 200, r.text
            results.append(r.json())
        service.other_key = other_key
        service.results = results
        yield service


def _get(svc, path, key=None, **params):
    return httpx.get(
        f"{svc.base_url}/api/v1/reports{path}", params=params, headers={"xProxy-api-key": key or svc.api_key}
    )


def _cost(result):
    cost = result["xproxy_result"].get("cost")
    return None if cost is None else cost["total"]["base"]


def test_report_totals_and_groups_from_known_data(svc):
    r = _get(svc, "", group_by=["use_case"])
    assert r.status_code == 200, r.text
    rep = r.json()
    costs = [_cost(x) for x in svc.results[:5]]  # the default application's five events
    total = rep["total"]
    assert total["requests"] == 5 and total["unpriced_requests"] == sum(c is None for c in costs)
    assert total["cost_usd"] == pytest.approx(sum(c for c in costs if c is not None))
    assert total["failures"] == 1
    assert total["units"]["text"] == {"input": 100 + 50 + 7 + 1000, "output": 10 + 5 + 100}
    assert total["units"]["text_cache_read"] == {"input": 40, "output": 0}
    assert total["latency_p50_ms"] == 200 and total["latency_p95_ms"] == 300
    rows = {row["group"]["use_case"]: row for row in rep["rows"]}
    assert rows["chat"]["requests"] == 3 and rows["chat"]["cost_usd"] == pytest.approx(costs[0] + costs[1] + costs[4])
    assert rows["search"]["unpriced_requests"] == 1


def test_filters_window_and_multi_valued_groups(svc):
    rep = _get(svc, "", group_by=["tag"], user="alice").json()
    assert rep["filters"] == {"user": "alice"}
    assert {row["group"]["tag"]: row["requests"] for row in rep["rows"]} == {"prod": 1, "eu": 1, None: 1}
    assert rep["total"]["requests"] == 2  # a request with two tags counts once
    recent = _get(svc, "", since="24h").json()
    assert recent["total"]["requests"] == 4
    older = _get(svc, "", until="2d", group_by=["day", "user"]).json()
    assert [row["group"]["user"] for row in older["rows"]] == ["carol"]
    tagged = _get(svc, "", tag="prod", group_by=["hour"]).json()
    assert tagged["total"]["requests"] == 2 and tagged["rows"][0]["group"]["hour"].endswith(":00Z")


def test_an_application_key_reads_only_its_application(svc):
    mine = _get(svc, "", group_by=["user"]).json()
    assert "mallory" not in {row["group"]["user"] for row in mine["rows"]}
    theirs = _get(svc, "", key=svc.other_key, group_by=["application", "user"]).json()
    assert [row["group"] for row in theirs["rows"]] == [{"application": "other", "user": "mallory"}]
    other_id = svc.results[5]["request_id"]
    assert _get(svc, f"/requests/{other_id}").status_code == 404
    assert _get(svc, f"/requests/{other_id}", key=svc.other_key).status_code == 200
    assert _get(svc, "", key="sk-nope").status_code == 401


def test_request_list_pages_and_detail(svc, tmp_path):
    seen = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = _get(svc, "/requests", **params).json()
        seen += body["items"]
        if not body["has_more"]:
            break
        cursor = body["cursor"]
    assert len(seen) == 5 and len({i["request_id"] for i in seen}) == 5
    stamps = [i["event_timestamp"] for i in seen]
    assert stamps == sorted(stamps, reverse=True)
    stored = {row["request_id"]: row for row in stored_requests(svc.data_dir)}
    first = svc.results[0]["request_id"]
    detail = _get(svc, f"/requests/{first}").json()
    assert detail["units"] == stored[first]["units"]
    assert detail["cost_total"] == pytest.approx(_cost(svc.results[0]))
    assert detail["request_tags"] == ["prod", "eu"] and detail["user_id"] == "alice"
    assert _get(svc, "/requests/no-such-id").json()["xproxy_error"]["code"] == "request_not_found"
    only_failed = _get(svc, "/requests", use_case="chat", sort_ascending="true").json()["items"]
    assert [i["failed"] for i in only_failed] == [False, False, True]


def test_bad_parameters_answer_pay_i_errors(svc):
    r = _get(svc, "", group_by=["colour"])
    assert r.status_code == 400 and "group_by" in r.json()["message"]
    r = _get(svc, "", since="1d", until="2d")  # an empty window: nothing in it
    assert r.status_code == 200 and r.json()["total"]["requests"] == 0 and r.json()["rows"] == []
    r = _get(svc, "", since="yesterday")
    assert r.status_code == 400 and "since" in r.json()["message"]
    r = _get(svc, "/requests", cursor="WzEsIngiXQ")  # [1,"x"]
    assert r.status_code == 400 and r.json()["xproxy_error"]["code"] == "invalid_cursor"


def test_cli_report_agrees_with_the_api(svc, capsys):
    api = _get(svc, "", group_by=["use_case", "tag"], since="7d", user="alice").json()
    assert api["total"]["requests"] == 2
    code = main(
        [
            "report",
            "--format",
            "json",
            "--by",
            "use_case,tag",
            "--since",
            "7d",
            "--where",
            "user=alice",
            "--app",
            "default",
            "--data-dir",
            str(svc.data_dir),
        ]
    )
    cli = json.loads(capsys.readouterr().out)
    assert code == 0
    assert cli["rows"] == api["rows"] and cli["total"] == api["total"]


def test_status_keeps_failed_or_unpriced_requests_in_the_api_and_the_cli(svc, capsys):
    failed = _get(svc, "/requests", status="failed").json()["items"]
    assert [i["request_id"] for i in failed] == [svc.results[4]["request_id"]]
    unpriced = _get(svc, "/requests", status="unpriced").json()["items"]
    assert {i["request_id"] for i in unpriced} == {r["request_id"] for r in svc.results[:5] if _cost(r) is None}
    rep = _get(svc, "", status="priced", group_by=["user"]).json()
    assert rep["filters"] == {"status": "priced"} and rep["total"]["unpriced_requests"] == 0
    assert rep["total"]["requests"] == sum(_cost(r) is not None for r in svc.results[:5])
    assert _get(svc, "", status="succeeded").json()["total"]["failures"] == 0
    bad = _get(svc, "", status="broken")
    assert bad.status_code == 400 and "status" in bad.json()["message"]
    assert main(["report", "--data-dir", str(svc.data_dir), "--status", "failed", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["requests"] == 1
