"""The local service's ingest API over real HTTP on 127.0.0.1: validation, auth, dedupe, pricing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from service_support import running_service

from payi_otel.service.store import Store

GPT4O = {"category": "system.openai", "resource": "gpt-4o", "units": {"text": {"input": 100, "output": 10}}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("svc")) as service:
        yield service


@pytest.fixture
def client(svc):
    with httpx.Client(base_url=svc.base_url, headers={"xProxy-api-key": svc.api_key}) as c:
        yield c


def other_app_client(svc, name):
    store = Store(svc.data_dir)
    try:
        _, key = store.create_application(name, "other-group")
    finally:
        store.close()
    return httpx.Client(base_url=svc.base_url, headers={"xProxy-api-key": key})


def assert_error(resp, status, code, *words):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["statusCode"] == status
    assert body["xproxy_error"]["code"] == code
    for w in words:
        assert w in body["message"], body["message"]


def test_ingest_prices_and_echoes_attribution(client):
    resp = client.post(
        "/api/v1/ingest",
        json=GPT4O,
        headers={
            "xProxy-UseCase-Name": "summarize",
            "xProxy-UseCase-Step": "draft",
            "xproxy-user-id": "jane",  # header names are case-insensitive
            "xProxy-Account-Name": "acme",
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"request_id", "event_timestamp", "ingest_timestamp", "xproxy_result"}
    result = body["xproxy_result"]
    assert result["request_id"] == body["request_id"]
    assert result["use_case_name"] == "summarize" and result["use_case_step"] == "draft"
    assert result["use_case_id"]  # server-generated instance id
    assert result["user_id"] == "jane" and result["account_name"] == "acme"
    cost = result["cost"]
    assert cost["currency"] == "usd"
    assert cost["input"]["base"] == pytest.approx(100 * 2.5e-6)
    assert cost["output"]["base"] == pytest.approx(10 * 10e-6)
    assert cost["total"]["base"] == pytest.approx(100 * 2.5e-6 + 10 * 10e-6)
    assert cost["total"]["overrun_base"] == 0
    assert result["resource_id"].startswith("gp-")
    assert result["limits"] == {} and result["unknown_units"] == {} and result["duplicate_request"] is False


def test_same_use_case_id_keeps_instance_and_merges_properties(client, svc):
    headers = {"xProxy-UseCase-Name": "chat", "xProxy-UseCase-ID": "inst-1"}
    client.post("/api/v1/ingest", json={**GPT4O, "use_case_properties": {"a": "1", "b": "2"}}, headers=headers)
    r = client.post("/api/v1/ingest", json={**GPT4O, "use_case_properties": {"b": None, "c": "3"}}, headers=headers)
    assert r.json()["xproxy_result"]["use_case_id"] == "inst-1"
    store = Store(svc.data_dir)
    try:
        app = store.authenticate(svc.api_key)
        assert store.use_case_instance_properties(app.id, "inst-1") == {"a": "1", "c": "3"}
    finally:
        store.close()


def test_cache_and_reasoning_units_are_priced_separately(client):
    units = {"text": {"input": 600, "output": 100}, "text_cache_read": {"input": 400}}
    r = client.post("/api/v1/ingest", json={"category": "system.openai", "resource": "gpt-4o", "units": units})
    cost = r.json()["xproxy_result"]["cost"]
    assert cost["input"]["base"] == pytest.approx(600 * 2.5e-6 + 400 * 1.25e-6)


def test_unknown_units_are_echoed_not_rejected(client):
    units = {"text": {"input": 10}, "guardrail_topic": {"input": 3}}
    r = client.post("/api/v1/ingest", json={"category": "system.openai", "resource": "gpt-4o", "units": units})
    assert r.status_code == 200
    assert r.json()["xproxy_result"]["unknown_units"] == {"guardrail_topic": {"input": 3}}


def test_unpriced_event_is_stored_with_reason_never_zero(client):
    r = client.post(
        "/api/v1/ingest",
        json={"category": "system.openai", "resource": "no-such-model-x", "units": {"text": {"input": 5}}},
    )
    assert r.status_code == 200
    result = r.json()["xproxy_result"]
    assert result["cost"] is None and result["resource_id"] is None
    assert "no-such-model-x" in result["warnings"][0]
    stored = client.get(f"/api/v1/requests/{result['request_id']}/result").json()["xproxy_result"]
    assert stored["cost"] is None


INCOMPLETE = {"system.usage_incomplete": "true", "system.usage_incomplete.reason": "stream closed early"}


@pytest.mark.parametrize(
    ("status", "units", "priced"),
    [
        (200, {"text": {"input": 17, "output": 3}}, False),  # a stream left before its final usage report
        (299, {"text": {"input": 17, "output": 3}}, False),  # a stream that failed after its response began
        (299, {}, False),  # a dropped connection before any usage was seen: the cost is unknown, not $0
        (429, {}, True),  # an error status: the provider bills nothing
    ],
)
def test_usage_not_reported_in_full_is_not_priced_as_a_cost(client, status, units, priced):
    event = {"category": "system.openai", "resource": "gpt-4o", "units": units, "http_status_code": status}
    result = client.post("/api/v1/ingest", json={**event, "properties": INCOMPLETE}).json()["xproxy_result"]
    stored = client.get(f"/api/v1/requests/{result['request_id']}/result").json()["xproxy_result"]
    if priced:
        assert result["cost"]["total"]["base"] == 0 and stored["cost"]["total"]["base"] == 0
    else:
        assert result["cost"] is None and stored["cost"] is None
        expected = "usage not reported in full" if units else "usage not reported"
        assert result["warnings"] == [f"unpriced: {expected} (stream closed early)"]


def test_backfilled_event_is_priced_at_the_price_then(client):
    # genai-prices: o3 cost $10/$40 per MTok until 2025-06-10, then $2/$8.
    units = {"text": {"input": 1000, "output": 100}}
    old = client.post(
        "/api/v1/ingest",
        json={"category": "system.openai", "resource": "o3", "units": units, "event_timestamp": "2025-05-01T12:00:00Z"},
    ).json()
    new = client.post("/api/v1/ingest", json={"category": "system.openai", "resource": "o3", "units": units}).json()
    assert old["xproxy_result"]["cost"]["total"]["base"] == pytest.approx(1000 * 10e-6 + 100 * 40e-6)
    assert new["xproxy_result"]["cost"]["total"]["base"] == pytest.approx(1000 * 2e-6 + 100 * 8e-6)
    assert old["xproxy_result"]["resource_id"] != new["xproxy_result"]["resource_id"]
    assert old["event_timestamp"].startswith("2025-05-01T12:00:00")


def test_dedupe_by_query_id(client):
    first = client.post("/api/v1/ingest?id=dedupe-q-1", json=GPT4O).json()
    second = client.post("/api/v1/ingest?id=dedupe-q-1", json=GPT4O).json()
    assert second["request_id"] == first["request_id"]
    assert second["xproxy_result"]["duplicate_request"] is True
    assert first["xproxy_result"]["duplicate_request"] is False


def test_dedupe_by_provider_response_id_per_category(client):
    event = {**GPT4O, "provider_response_id": "chatcmpl-dup"}
    first = client.post("/api/v1/ingest", json=event).json()
    second = client.post("/api/v1/ingest", json=event).json()
    assert second["request_id"] == first["request_id"] and second["xproxy_result"]["duplicate_request"]
    other = client.post("/api/v1/ingest", json={**event, "category": "system.azureopenai"}).json()
    assert other["request_id"] != first["request_id"]


def test_failures_are_stored_with_failure_property(client, svc):
    r = client.post(
        "/api/v1/ingest", json={"category": "system.openai", "resource": "gpt-4o", "units": {}, "http_status_code": 429}
    )
    rid = r.json()["request_id"]
    r2 = client.post(
        "/api/v1/ingest",
        json={
            "category": "system.openai",
            "resource": "gpt-4o",
            "units": {},
            "http_status_code": 299,
            "properties": {"system.failure": "APITimeoutError"},
        },
    )
    store = Store(svc.data_dir)
    try:
        app = store.authenticate(svc.api_key)
        assert store.request_properties(app.id, rid) == {"system.failure": "http_status_429"}
        assert store.request_properties(app.id, r2.json()["request_id"]) == {"system.failure": "APITimeoutError"}
    finally:
        store.close()


@pytest.mark.parametrize(
    ("body", "headers", "code", "words"),
    [
        (b"{not json", {}, "invalid_json", ["JSON"]),
        (b"", {}, "invalid_json", ["empty"]),
        (b'{"units": {}}', {}, "required_field_missing", ["category"]),
        (b'{"category": "system.openai"}', {}, "required_field_missing", ["units"]),
        (b'{"category": "", "units": {}}', {}, "invalid_field_value", ["category"]),
        (b'{"category": "system.openai", "units": {}, "colour": 1}', {}, "unknown_field", ["colour"]),
        (b'{"category": "system.openai", "units": {"text": {"input": -1}}}', {}, "invalid_units", ["units.text.input"]),
        (
            b'{"category": "system.openai", "units": {"text": {"inputs": 1}}}',
            {},
            "unknown_field",
            ["units.text.inputs"],
        ),
        (b'{"category": "system.openai", "units": {"text": 5}}', {}, "invalid_units", ["units.text"]),
        (b'{"category": "system.openai", "units": {}}', {"xProxy-User-ID": "jane doe"}, "invalid_user_id", ["spaces"]),
        (
            b'{"category": "system.openai", "units": {}}',
            {"xProxy-Request-Tags": "ok,no way"},
            "invalid_tags",
            ["no way"],
        ),
        (
            b'{"category": "system.openai", "units": {}}',
            {"xProxy-UseCase-Name": "has space"},
            "invalid_use_case_name",
            ["64"],
        ),
        (b'{"category": "system.openai", "units": {}}', {"xProxy-UseCase-Name": "x" * 65}, "invalid_use_case_name", []),
        (
            b'{"category": "system.openai", "units": {}}',
            {"xProxy-UseCase-ID": "abc"},
            "header_is_missing",
            ["xProxy-UseCase-Name"],
        ),
        (
            b'{"category": "system.openai", "units": {}}',
            {"xProxy-UseCase-Name": "u", "xProxy-UseCase-Version": "v2"},
            "invalid_use_case_version",
            ["integer"],
        ),
        (b'{"category": "system.openai", "units": {}}', {"xProxy-Limit-IDs": "lim-1"}, "invalid_limit_ids", ["lim-1"]),
        (b'{"category": "system.openai", "units": {}}', {"xProxy-Limit-IDs": "a,a"}, "duplicate_limit_id", []),
    ],
)
def test_bad_events_get_payi_errors(client, body, headers, code, words):
    resp = client.post("/api/v1/ingest", content=body, headers={"content-type": "application/json", **headers})
    assert_error(resp, 400, code, *words)


def test_future_timestamp_rejected_past_accepted(client):
    future = (datetime.now(UTC) + timedelta(minutes=6)).isoformat()
    assert_error(
        client.post("/api/v1/ingest", json={**GPT4O, "event_timestamp": future}),
        400,
        "invalid_ingest_event_timestamp",
        "5 minutes",
    )
    near = (datetime.now(UTC) + timedelta(minutes=4)).isoformat()
    assert client.post("/api/v1/ingest", json={**GPT4O, "event_timestamp": near}).status_code == 200


def test_missing_or_bad_key_is_401(svc):
    r = httpx.post(f"{svc.base_url}/api/v1/ingest", json=GPT4O)
    assert_error(r, 401, "invalid_api_key", "missing")
    r = httpx.post(f"{svc.base_url}/api/v1/ingest", json=GPT4O, headers={"xProxy-Api-Key": "sk-payi-app-wrong"})
    assert_error(r, 401, "invalid_api_key")


def test_applications_cannot_read_each_other(client, svc):
    rid = client.post("/api/v1/ingest", json={**GPT4O, "provider_response_id": "iso-1"}).json()["request_id"]
    with other_app_client(svc, "isolated") as other:
        assert other.get(f"/api/v1/requests/{rid}/result").status_code == 404
        assert other.get("/api/v1/requests/provider/system.openai/iso-1/result").status_code == 404
        assert other.put(f"/api/v1/requests/{rid}/properties", json={"properties": {"x": "y"}}).status_code == 404
        # the same provider id in another application is a different request, not a duplicate
        mine = other.post("/api/v1/ingest", json={**GPT4O, "provider_response_id": "iso-1"}).json()
        assert mine["xproxy_result"]["duplicate_request"] is False and mine["request_id"] != rid
    assert client.get(f"/api/v1/requests/{rid}/result").status_code == 200


def test_request_tags_header_is_kept(client):
    r = client.post("/api/v1/ingest", json=GPT4O, headers={"xProxy-Request-Tags": "alpha, beta-2"})
    assert r.json()["xproxy_result"]["request_tags"] == ["alpha", "beta-2"]


def test_bulk_stores_good_items_and_reports_bad_ones(client):
    items = [
        {
            **GPT4O,
            "user_id": "bulk-user",
            "use_case_name": "bulk",
            "request_tags": ["t1"],
            "provider_response_id": "b-1",
        },
        {**GPT4O, "user_id": "has space"},
        {"units": {}},
        {**GPT4O, "limit_ids": ["nope"]},
        {**GPT4O, "provider_response_id": "b-1"},  # duplicate of item 0
        {**GPT4O, "extra": True},
        "not an object",
    ]
    r = client.post("/api/v1/ingest/bulk", json=items)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total_count"] == 7 and body["ingest_count"] == 1 and body["duplicate_count"] == 1
    assert body["error_count"] == body["item_error_count"] == 5
    codes = {e["item_index"]: e["xproxy_result"]["xproxy_error"]["code"] for e in body["errors"]}
    assert codes == {
        1: "invalid_user_id",
        2: "required_field_missing",
        3: "invalid_limit_ids",
        5: "unknown_field",
        6: "invalid_json",
    }
    stored = client.get("/api/v1/requests/provider/system.openai/b-1/result").json()["xproxy_result"]
    assert stored["user_id"] == "bulk-user" and stored["use_case_name"] == "bulk" and stored["request_tags"] == ["t1"]


def test_bulk_body_must_be_an_array(client):
    assert_error(client.post("/api/v1/ingest/bulk", json={"events": []}), 400, "invalid_json", "array")
    assert_error(
        client.post("/api/v1/ingest/bulk", content=b"[", headers={"content-type": "application/json"}),
        400,
        "invalid_json",
    )


def test_openapi_describes_the_api(svc):
    spec = httpx.get(f"{svc.base_url}/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/v1/ingest",
        "/api/v1/ingest/bulk",
        "/api/v1/requests/{request_id}/result",
        "/api/v1/requests/provider/{category}/{provider_response_id}/result",
        "/api/v1/requests/{request_id}/properties",
        "/api/v1/requests/provider/{category}/{provider_response_id}/properties",
    ):
        assert path in paths
    ingest_schema = spec["components"]["schemas"]["IngestRequest"]
    assert ingest_schema["additionalProperties"] is False
    assert set(ingest_schema["required"]) == {"category", "units"}
    bulk_body = paths["/api/v1/ingest/bulk"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert bulk_body["type"] == "array"
    assert "use_case_name" in spec["components"]["schemas"]["BulkIngestRequest"]["properties"]
    assert spec["components"]["securitySchemes"]["ApiKey"]["name"] == "xProxy-api-key"


def test_price_as_headers_price_the_call_as_another_resource(client):
    deployment = {
        "category": "system.azureopenai",
        "resource": "my-gpt4o-deployment",
        "units": {"text": {"input": 100, "output": 10}},
    }
    plain = client.post("/api/v1/ingest", json={**deployment, "provider_response_id": "pa-0"}).json()["xproxy_result"]
    assert plain["cost"] is None  # a deployment name has no price of its own
    direct = client.post("/api/v1/ingest", json=GPT4O).json()["xproxy_result"]

    r = client.post(
        "/api/v1/ingest",
        json={**deployment, "provider_response_id": "pa-1"},
        headers={"xProxy-PriceAs-Category": "system.openai", "xproxy-priceas-resource": "gpt-4o"},
    )
    assert r.status_code == 200, r.text
    result = r.json()["xproxy_result"]
    assert result["cost"]["total"]["base"] == pytest.approx(100 * 2.5e-6 + 10 * 10e-6)
    assert result["resource_id"] == direct["resource_id"]  # the same price snapshot as a direct gpt-4o call
    # the request itself stays filed under the category it was sent with
    stored = client.get("/api/v1/requests/provider/system.azureopenai/pa-1/result").json()["xproxy_result"]
    assert stored == result
    assert client.get("/api/v1/requests/provider/system.openai/pa-1/result").status_code == 404


def test_price_as_category_alone_keeps_the_resource(client):
    event = {"category": "acme.gateway", "resource": "gpt-4o", "units": {"text": {"input": 100, "output": 10}}}
    assert client.post("/api/v1/ingest", json=event).json()["xproxy_result"]["cost"] is None
    priced = client.post("/api/v1/ingest", json=event, headers={"xProxy-PriceAs-Category": "system.openai"}).json()
    assert priced["xproxy_result"]["cost"]["total"]["base"] == pytest.approx(100 * 2.5e-6 + 10 * 10e-6)


def test_price_as_resource_without_a_price_is_unpriced_with_its_name(client):
    r = client.post("/api/v1/ingest", json=GPT4O, headers={"xProxy-PriceAs-Resource": "negotiated-model-x"})
    result = r.json()["xproxy_result"]
    assert result["cost"] is None and "negotiated-model-x" in result["warnings"][0]


def test_bulk_items_have_no_price_as_fields(client):
    r = client.post("/api/v1/ingest/bulk", json=[{**GPT4O, "price_as_resource": "gpt-4o-mini"}])
    body = r.json()
    assert body["ingest_count"] == 0
    assert body["errors"][0]["xproxy_result"]["xproxy_error"]["code"] == "unknown_field"
    assert "price_as_resource" in body["errors"][0]["xproxy_result"]["message"]


def test_stored_result_is_the_one_answered_at_ingest(client):
    event = {
        "category": "system.openai",
        "resource": "gpt-4o",
        "units": {"text": {"input": 100, "output": 10}, "guardrail_topic": {"input": 2}},
        "provider_response_id": "same-result-1",
    }
    headers = {
        "xProxy-UseCase-Name": "same",
        "xProxy-UseCase-Step": "s1",
        "xProxy-User-ID": "u9",
        "xProxy-Account-Name": "acct",
        "xProxy-Request-Tags": "t1,t2",
    }
    answered = client.post("/api/v1/ingest", json=event, headers=headers).json()["xproxy_result"]
    assert answered["request_tags"] == ["t1", "t2"] and answered["unknown_units"] == {"guardrail_topic": {"input": 2}}
    by_id = client.get(f"/api/v1/requests/{answered['request_id']}/result").json()["xproxy_result"]
    by_provider = client.get("/api/v1/requests/provider/system.openai/same-result-1/result").json()["xproxy_result"]
    assert by_id == by_provider == answered
    again = client.post("/api/v1/ingest", json=event, headers=headers).json()["xproxy_result"]
    assert again == {**answered, "duplicate_request": True}


def test_bulk_of_valid_items_dedupes_within_the_body_and_stores_each_like_single_ingest(client):
    item = {
        **GPT4O,
        "use_case_name": "bulk_ok",
        "user_id": "bu",
        "request_tags": ["x"],
        "provider_response_id": "bok-1",
    }
    items = [item, {**item, "provider_response_id": "bok-2", "user_id": "bv"}, item]
    body = client.post("/api/v1/ingest/bulk", json=items).json()
    assert (body["total_count"], body["ingest_count"], body["duplicate_count"], body["error_count"]) == (3, 2, 1, 0)
    first = client.get("/api/v1/requests/provider/system.openai/bok-1/result").json()["xproxy_result"]
    second = client.get("/api/v1/requests/provider/system.openai/bok-2/result").json()["xproxy_result"]
    assert first["user_id"] == "bu" and second["user_id"] == "bv"
    assert first["use_case_id"] != second["use_case_id"]  # no id given: each event is its own instance
    single = client.post("/api/v1/ingest", json=GPT4O).json()["xproxy_result"]
    assert first["cost"] == single["cost"] and first["resource_id"] == single["resource_id"]
    assert first["request_tags"] == ["x"] and first["duplicate_request"] is False
    # sent again, every item is recognised as already stored
    again = client.post("/api/v1/ingest/bulk", json=items).json()
    assert (again["ingest_count"], again["duplicate_count"]) == (0, 3)


def test_concurrent_single_ingests_are_answered_each_by_its_own_outcome(svc, client):
    """Single ingests that arrive together are written as one batch: a bad one is refused alone, repeats
    of one ?id= store one request, and the limit they name counts each stored one once."""
    import asyncio

    created = client.post("/api/v1/limits", json={"limit_name": "batch-budget", "max": 1000})
    limit_id = created.json()["limit"]["limit_id"]
    good = {"xProxy-Limit-IDs": limit_id}
    bad = {"xProxy-Limit-IDs": f"{limit_id},no-such-limit"}

    async def send(http, i):
        headers, params = (bad, None) if i % 5 == 0 else (good, {"id": f"batch-call-{i % 7}"} if i % 3 == 0 else None)
        return i, await http.post("/api/v1/ingest", json=GPT4O, headers=headers, params=params)

    async def burst():
        async with httpx.AsyncClient(base_url=svc.base_url, headers={"xProxy-api-key": svc.api_key}) as http:
            return await asyncio.gather(*(send(http, i) for i in range(120)))

    answers = asyncio.run(burst())
    stored, by_dedupe_id = set(), {}
    for i, r in answers:
        if i % 5 == 0:
            assert_error(r, 400, "invalid_limit_ids", "no-such-limit")
            continue
        assert r.status_code == 200, r.text
        result = r.json()["xproxy_result"]
        assert result["limits"] == {limit_id: {"state": "ok"}}
        if i % 3 == 0:
            answer = (r.json()["request_id"], result["duplicate_request"])
            by_dedupe_id.setdefault(f"batch-call-{i % 7}", []).append(answer)
        if not result["duplicate_request"]:
            stored.add(r.json()["request_id"])
    for repeats in by_dedupe_id.values():  # one request per id; exactly one answer stored it
        assert len({rid for rid, _ in repeats}) == 1 and [dup for _, dup in repeats].count(False) == 1
    cost = answers[1][1].json()["xproxy_result"]["cost"]["total"]["base"]
    totals = client.get(f"/api/v1/limits/{limit_id}").json()["limit"]["totals"]
    assert totals["requests"]["total"] == len(stored) == 96 - sum(len(r) - 1 for r in by_dedupe_id.values())
    assert totals["cost"]["total"]["base"] == pytest.approx(cost * len(stored))
