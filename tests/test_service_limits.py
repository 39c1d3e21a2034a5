"""Limits API and limit accounting on ingest, through real HTTP on 127.0.0.1 and the official `payi` client."""

from __future__ import annotations

import math
import threading

import httpx
import pytest
from payi import AsyncPayi, AuthenticationError, BadRequestError, NotFoundError, Payi
from service_support import running_service

from payi_otel.service.store import Store

GPT4O = {"category": "system.openai", "resource": "gpt-4o", "units": {"text": {"input": 1000, "output": 100}}}


@pytest.fixture
def svc(tmp_path):
    with running_service(tmp_path) as service:
        yield service


@pytest.fixture
def client(svc):
    with httpx.Client(base_url=svc.base_url, headers={"xProxy-api-key": svc.api_key}) as c:
        yield c


@pytest.fixture
def payi(svc):
    with Payi(api_key=svc.api_key, base_url=svc.base_url, max_retries=0) as p:
        yield p


def _cost(body: dict) -> float:
    return body["xproxy_result"]["cost"]["total"]["base"]


def test_limit_crud_with_the_official_client(payi, svc):
    created = payi.limits.create(
        limit_name="jane-monthly",
        max=10.0,
        threshold=0.8,
        properties={"team": "red"},
        extra_body={"reset_schedule": "Monthly"},
    )
    limit = created.limit
    assert (limit.limit_name, limit.max, limit.threshold, limit.limit_type) == ("jane-monthly", 10.0, 0.8, "allow")
    assert limit.totals.requests.total == 0 and limit.totals.cost.total.base == 0
    assert limit.model_extra["reset_schedule"] == "monthly" and limit.model_extra["properties"] == {"team": "red"}
    assert limit.model_extra["next_reset_timestamp"].endswith("T00:00:00Z")

    assert payi.limits.retrieve(limit.limit_id).limit.limit_name == "jane-monthly"
    updated = payi.limits.update(limit.limit_id, max=20.0, limit_name="jane")
    assert (updated.limit.max, updated.limit.limit_name) == (20.0, "jane")
    props = payi.limits.properties.update(limit.limit_id, properties={"team": None, "tier": "gold"})
    assert props[0].limit.model_extra["properties"] == {"tier": "gold"}

    # caller-chosen id; the same id again, or the same name, is refused with Pay-i's codes
    mine = payi.limits.create(limit_id="org-budget", limit_name="org", max=100, limit_type="block")
    assert mine.limit.limit_id == "org-budget" and mine.limit.limit_type == "block"
    with pytest.raises(BadRequestError) as exc:
        payi.limits.create(limit_id="org-budget", limit_name="other", max=1)
    assert exc.value.body["xproxy_error"]["code"] == "duplicate_limit_id"
    with pytest.raises(BadRequestError) as exc:
        payi.limits.create(limit_name="jane", max=1)
    assert exc.value.body["xproxy_error"]["code"] == "limit_name_already_exist"
    with pytest.raises(BadRequestError) as exc:
        payi.limits.update(limit.limit_id, limit_name="org")
    assert exc.value.body["xproxy_error"]["code"] == "limit_name_already_exist"

    deleted = payi.limits.delete("org-budget")
    assert deleted.request_id
    with pytest.raises(NotFoundError) as exc:
        payi.limits.retrieve("org-budget")
    assert exc.value.status_code == 404 and exc.value.body["xproxy_error"]["code"] == "limit_not_found"
    with pytest.raises(NotFoundError):
        payi.limits.delete("org-budget")
    with pytest.raises(AuthenticationError):
        payi.with_options(api_key="sk-payi-wrong").limits.retrieve(limit.limit_id)


def test_list_pages_with_cursors(payi):
    ids = [payi.limits.create(limit_name=f"l{i:02}", max=1 + i).limit.limit_id for i in range(30)]
    first = payi.limits.list()
    assert len(first.items) == 25 and first.cursor and first.model_extra["has_more"] is True
    assert [lim.limit_id for lim in payi.limits.list(limit=7)] == ids  # auto-pagination follows the cursors
    pages = list(payi.limits.list(limit=10).iter_pages())
    assert [len(p.items) for p in pages] == [10, 10, 10] and pages[-1].cursor is None
    assert [lim.limit_id for lim in payi.limits.list(limit=100, sort_ascending=False)] == ids[::-1]
    assert [lim.limit_name for lim in payi.limits.list(limit_name="l05")] == ["l05"]
    with pytest.raises(BadRequestError) as exc:
        payi.limits.list(limit=101)
    assert "limit" in exc.value.body["message"]
    with pytest.raises(BadRequestError) as exc:
        payi.limits.list(cursor="not-a-cursor")
    assert exc.value.body["xproxy_error"]["code"] == "invalid_cursor"


def test_raw_and_streaming_responses(payi):
    raw = payi.limits.with_raw_response.create(limit_name="raw", max=5)
    assert raw.status_code == 201 and raw.headers["content-type"] == "application/json"
    limit_id = raw.parse().limit.limit_id
    with payi.limits.with_streaming_response.retrieve(limit_id) as streamed:
        assert streamed.status_code == 200
        assert streamed.parse().limit.limit_name == "raw"
    assert payi.with_options(timeout=5).limits.retrieve(limit_id).limit.max == 5


async def test_async_client_drives_limits(svc):
    async with AsyncPayi(api_key=svc.api_key, base_url=svc.base_url, max_retries=0) as payi:
        ids = [(await payi.limits.create(limit_name=f"a{i}", max=2)).limit.limit_id for i in range(12)]
        assert [lim.limit_id async for lim in payi.limits.list(limit=5)] == ids
        history = await payi.limits.reset(ids[0])
        assert history.limit_history.limit_id == ids[0] and history.limit_history.totals.requests.total == 0
        raw = await payi.limits.with_raw_response.update(ids[1], max=3)
        assert raw.status_code == 200 and (await raw.parse()).limit.max == 3
        with pytest.raises(NotFoundError):
            await payi.limits.retrieve("missing")
        with pytest.raises(BadRequestError) as exc:
            await payi.limits.create(limit_name="", max=1)
        assert exc.value.body["xproxy_error"]["code"] == "create_limit_validation_failed"
        assert "limit_name" in exc.value.body["message"]


def test_ingest_accounts_each_named_limit_with_its_state(client, payi):
    one = client.post("/api/v1/ingest", json=GPT4O).json()
    cost = _cost(one)  # what one event costs, as priced by the service
    # threshold at 2.5 events' cost, max at 3.5: states go ok, ok, exceeded, overrun
    small = payi.limits.create(limit_name="small", max=cost * 3.5, threshold=2.5 / 3.5).limit
    big = payi.limits.create(limit_name="big", max=cost * 100).limit
    h = {"xProxy-Limit-IDs": f"{small.limit_id},{big.limit_id}"}
    states, costs = [], []
    for _ in range(4):
        body = client.post("/api/v1/ingest", json=GPT4O, headers=h).json()
        states.append(body["xproxy_result"]["limits"][small.limit_id]["state"])
        assert body["xproxy_result"]["limits"][big.limit_id] == {"state": "ok"}
        costs.append(_cost(body))
    assert states == ["ok", "ok", "exceeded", "overrun"]
    failed = client.post("/api/v1/ingest", json={**GPT4O, "http_status_code": 500}, headers=h).json()
    assert failed["xproxy_result"]["limits"] == {small.limit_id: {"state": "failed"}, big.limit_id: {"state": "failed"}}
    # the stored result answers the same states
    stored = client.get(f"/api/v1/requests/{failed['request_id']}/result").json()
    assert stored["xproxy_result"]["limits"] == failed["xproxy_result"]["limits"]

    totals = payi.limits.retrieve(small.limit_id).limit.totals
    assert totals.requests.model_dump() == {
        "ok": 2,
        "exceeded": 1,
        "overrun": 1,
        "blocked": 0,
        "blocked_external": 0,
        "failed": 1,
        "total": 5,
    }
    assert totals.cost.total.base == pytest.approx(math.fsum(costs), rel=1e-12)
    assert totals.cost.input.base + totals.cost.output.base == pytest.approx(totals.cost.total.base, rel=1e-12)
    assert totals.cost.total.overrun_base == pytest.approx(math.fsum(costs) - cost * 3.5, rel=1e-9)

    # the max cannot fall below the spend; a reset keeps the snapshot and starts from zero
    with pytest.raises(BadRequestError) as exc:
        payi.limits.update(small.limit_id, max=cost)
    assert exc.value.body["xproxy_error"]["code"] == "invalid_max_limit_update"
    history = payi.limits.reset(small.limit_id, reset_date="2026-01-31T00:00:00Z").limit_history
    assert history.totals.requests.total == 5 and history.limit_reset_timestamp.isoformat().startswith("2026-01-31")
    assert history.totals.cost.total.base == totals.cost.total.base
    after = payi.limits.retrieve(small.limit_id).limit.totals
    assert after.requests.total == 0 and after.cost.total.base == 0
    kept = client.get(f"/api/v1/limits/{small.limit_id}/history").json()["items"]
    assert [k["trigger"] for k in kept] == ["manual"] and kept[0]["totals"]["requests"]["total"] == 5


def test_unpriced_success_counts_without_cost(client, payi):
    limit = payi.limits.create(limit_name="l", max=1).limit
    body = client.post(
        "/api/v1/ingest", json={**GPT4O, "resource": "no-such-model"}, headers={"xProxy-Limit-IDs": limit.limit_id}
    ).json()
    assert body["xproxy_result"]["cost"] is None and body["xproxy_result"]["limits"][limit.limit_id]["state"] == "ok"
    totals = payi.limits.retrieve(limit.limit_id).limit.totals
    assert totals.requests.ok == 1 and totals.cost.total.base == 0


@pytest.mark.parametrize("bulk", [False, True])
def test_limit_id_errors(client, payi, svc, bulk):
    allow = payi.limits.create(limit_name="allow", max=5).limit.limit_id
    block = payi.limits.create(limit_name="block", max=5, limit_type="block").limit.limit_id
    store = Store(svc.data_dir)
    try:
        _, other_key = store.create_application("other", "default")
    finally:
        store.close()
    foreign = Payi(api_key=other_key, base_url=svc.base_url, max_retries=0).limits.create(limit_name="x", max=1)
    cases = {
        "invalid_limit_ids": [allow, "nope"],
        "duplicate_limit_id": [allow, allow],
        "blocking_limit_not_allowed": [allow, block],
    }
    cases_foreign = {"invalid_limit_ids": [foreign.limit.limit_id]}
    for code, ids in [*cases.items(), *cases_foreign.items()]:
        if bulk:
            r = client.post("/api/v1/ingest/bulk", json=[{**GPT4O, "limit_ids": ids}])
            assert r.status_code == 200 and r.json()["errors"][0]["xproxy_result"]["xproxy_error"]["code"] == code
        else:
            r = client.post("/api/v1/ingest", json=GPT4O, headers={"xProxy-Limit-IDs": ",".join(ids)})
            assert r.status_code == 400 and r.json()["xproxy_error"]["code"] == code, r.json()
    # nothing of the refused events was counted
    assert payi.limits.retrieve(allow).limit.totals.requests.total == 0


def test_totals_stay_exact_under_concurrent_ingest(client, payi, svc):
    limit_id = payi.limits.create(limit_name="shared", max=1e6).limit.limit_id
    costs: list[float] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with httpx.Client(base_url=svc.base_url, headers={"xProxy-api-key": svc.api_key}) as c:
            mine = []
            for i in range(n):
                units = {"text": {"input": 100 + i, "output": 10 + i % 7}}
                body = c.post("/api/v1/ingest", json={**GPT4O, "units": units}, headers={"xProxy-Limit-IDs": limit_id})
                assert body.status_code == 200
                mine.append(_cost(body.json()))
            with lock:
                costs.extend(mine)

    threads = [threading.Thread(target=worker, args=(125,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals = payi.limits.retrieve(limit_id).limit.totals
    assert len(costs) == 1000 and totals.requests.total == 1000 and totals.requests.ok == 1000
    # a lost update would be off by a whole event's cost; float addition order only moves the last bits
    assert totals.cost.total.base == pytest.approx(math.fsum(costs), rel=1e-12, abs=0)


def test_errors_have_payi_shape_everywhere(client, svc):
    r = client.get("/api/v1/nowhere")
    assert r.status_code == 404 and r.json()["xproxy_error"]["code"] == "not_found" and "detail" not in r.json()
    r = client.patch("/api/v1/limits")
    assert r.status_code == 405 and r.json()["xproxy_error"]["code"] == "method_not_allowed"
    # a missing or wrong key answers 401 before the body is looked at
    for headers in ({}, {"xProxy-api-key": "sk-payi-wrong"}):
        r = httpx.post(f"{svc.base_url}/api/v1/limits", content=b"{not json", headers=headers)
        assert r.status_code == 401 and r.json()["xproxy_error"]["code"] == "invalid_api_key"
    r = client.post("/api/v1/limits", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["xproxy_error"]["code"] == "create_limit_validation_failed"
    r = client.post("/api/v1/limits", json={"limit_name": "x", "max": -1})
    assert r.status_code == 400 and r.json()["xproxy_error"]["code"] == "invalid_max_limit"
    assert "max" in r.json()["message"]
    lid = client.post("/api/v1/limits", json={"limit_name": "y", "max": 1}).json()["limit"]["limit_id"]
    r = client.put(f"/api/v1/limits/{lid}", json={"max": 0})
    assert r.status_code == 400 and r.json()["xproxy_error"]["code"] == "invalid_max_limit"
    for method, path, code in (
        ("POST", "/api/v1/limits", "create_limit_validation_failed"),
        ("PUT", f"/api/v1/limits/{lid}", "update_limit_validation_failed"),
    ):
        r = client.request(method, path, json={"limit_name": "x", "max": 1, "reset_schedule": "hourly"})
        assert r.status_code == 400 and r.json()["xproxy_error"]["code"] == code
        assert "reset_schedule" in r.json()["message"]
    r = client.put("/api/v1/limits/x", json={"max": 1, "threshold": 0.5})
    assert r.status_code == 400 and r.json()["xproxy_error"]["code"] == "update_limit_validation_failed"
    assert "threshold" in r.json()["message"]
    # numbers that are not finite (JSON parsers read 1e999 as infinity): refused, never stored as null
    for body in (b'{"limit_name": "inf", "max": 1e999}', b'{"limit_name": "inf", "max": Infinity}',
                 b'{"limit_name": "nan", "max": NaN}'):  # fmt: skip
        r = client.post("/api/v1/limits", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["xproxy_error"]["code"] == "invalid_max_limit", r.text
        assert "max" in r.json()["message"]


def test_swagger_page_loads_nothing_from_the_internet(svc):
    import re

    page = httpx.get(f"{svc.base_url}/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert assets and all(a.startswith("/") for a in assets), assets
    for asset in assets:
        assert httpx.get(f"{svc.base_url}{asset}").status_code == 200, asset
    assert '"validatorUrl": null' in page.text
    assert "https://" not in re.sub(r"<!--.*?-->", "", page.text, flags=re.S)


def test_openapi_describes_every_management_route(svc):
    doc = httpx.get(f"{svc.base_url}/openapi.json").json()
    paths = doc["paths"]
    for path, method in [
        ("/api/v1/limits", "post"),
        ("/api/v1/limits", "get"),
        ("/api/v1/limits/{limit_id}", "put"),
        ("/api/v1/limits/{limit_id}/reset", "post"),
        ("/api/v1/limits/{limit_id}/properties", "put"),
        ("/api/v1/use_cases/definitions/{use_case_name}/increment_version", "post"),
        ("/api/v1/use_cases/instances/{use_case_name}/{use_case_id}/kpis/{kpi_name}", "put"),
        ("/api/v1/categories/{category}/resources/{resource}", "post"),
        ("/api/v1/categories/{category}/resources/{resource}/{resource_id}", "delete"),
    ]:
        op = paths[path][method]
        assert "401" in op["responses"] and "422" not in op["responses"], (path, method)
        assert op["security"] == [{"ApiKey": []}]
        assert all(r["content"]["application/json"]["schema"] for r in op["responses"].values() if "content" in r)
    assert paths["/api/v1/categories/{category}"]["delete"]["responses"]["403"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_bulk_counts_each_item_in_order_against_its_limits(client, payi):
    cost = _cost(client.post("/api/v1/ingest", json=GPT4O).json())
    limit = payi.limits.create(limit_name="bulk", max=cost * 3.5, threshold=2.5 / 3.5).limit
    items = [{**GPT4O, "limit_ids": [limit.limit_id]}] * 4 + [
        {**GPT4O, "limit_ids": [limit.limit_id], "http_status_code": 503}
    ]
    assert client.post("/api/v1/ingest/bulk", json=items).json()["ingest_count"] == 5
    totals = payi.limits.retrieve(limit.limit_id).limit.totals
    assert (totals.requests.ok, totals.requests.exceeded, totals.requests.overrun, totals.requests.failed) == (
        2,
        1,
        1,
        1,
    )
    assert totals.cost.total.base == pytest.approx(cost * 4, rel=1e-12)


def test_a_batch_counts_requests_by_state_in_each_limit_it_names(client, payi):
    """One body counted in three limits: two get the same counts by state (every request ok), the third others."""
    cost = _cost(client.post("/api/v1/ingest", json=GPT4O).json())
    tight = payi.limits.create(limit_name="tight", max=cost * 3.5, threshold=2.5 / 3.5).limit
    roomy = [payi.limits.create(limit_name=f"roomy-{i}", max=cost * 100).limit for i in range(2)]
    ids = [tight.limit_id, *(limit.limit_id for limit in roomy)]
    items = [{**GPT4O, "limit_ids": ids}] * 4 + [{**GPT4O, "limit_ids": ids, "http_status_code": 503}]
    assert client.post("/api/v1/ingest/bulk", json=items).json()["ingest_count"] == 5
    for limit, expected in ((tight, (2, 1, 1, 1)), *((limit, (4, 0, 0, 1)) for limit in roomy)):
        totals = payi.limits.retrieve(limit.limit_id).limit.totals
        counts = (totals.requests.ok, totals.requests.exceeded, totals.requests.overrun, totals.requests.failed)
        assert counts == expected, limit.limit_name
        assert totals.requests.total == 5
        assert totals.cost.total.base == pytest.approx(cost * 4, rel=1e-12)
