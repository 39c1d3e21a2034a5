"""Categories and custom resources: reads, versions by start_timestamp, price-as and resource scope, unknown units,
read-only system categories and deletes, through real HTTP on 127.0.0.1 and the official `payi` client."""

from __future__ import annotations

import httpx
import pytest
from payi import AsyncPayi, NotFoundError, Payi, PermissionDeniedError
from service_support import running_service

JAN, FEB = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"
V1 = {"text": {"input_price": 0.001, "output_price": 0.002}}
V2 = {"text": {"input_price": 0.003, "output_price": 0.004}, "text_cache_read": {"input_price": 0.0005}}


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


def _event(units, when, **extra):
    return {"category": "acme", "resource": "model-x", "units": units, "event_timestamp": when, **extra}


def test_versions_price_events_by_their_timestamp(payi, client):
    v1 = payi.categories.resources.create("model-x", category="acme", units=V1, start_timestamp=JAN)
    v2 = payi.categories.resources.create("model-x", category="acme", units=V2, start_timestamp=FEB)
    assert v1.resource_id != v2.resource_id and v1.category == "acme" and v1.proxy_allowed is False
    units = {"text": {"input": 100, "output": 10}, "text_cache_read": {"input": 40}}
    jan = client.post("/api/v1/ingest", json=_event(units, "2026-01-15T00:00:00Z")).json()["xproxy_result"]
    feb = client.post("/api/v1/ingest", json=_event(units, "2026-02-15T00:00:00Z")).json()["xproxy_result"]
    assert jan["resource_id"] == v1.resource_id and feb["resource_id"] == v2.resource_id
    assert jan["cost"]["input"]["base"] == pytest.approx(100 * 0.001)  # v1 has no cache-read price
    assert jan["unknown_units"] == {"text_cache_read": {"input": 40}} and "text_cache_read" in jan["warnings"][0]
    assert feb["cost"]["input"]["base"] == pytest.approx(100 * 0.003 + 40 * 0.0005)
    assert feb["cost"]["output"]["base"] == pytest.approx(10 * 0.004) and feb["unknown_units"] == {}
    # units the version has no price for at all: stored unpriced with a warning, never a priced $0
    none = client.post("/api/v1/ingest", json=_event({"video": {"input": 5}}, "2026-02-15T00:00:00Z")).json()
    assert none["xproxy_result"]["cost"] is None and none["xproxy_result"]["unknown_units"] == {"video": {"input": 5}}
    assert "unpriced" in none["xproxy_result"]["warnings"][0] and "video" in none["xproxy_result"]["warnings"][0]
    # before the first version there is no price
    early = client.post("/api/v1/ingest", json=_event(units, "2025-12-31T00:00:00Z")).json()["xproxy_result"]
    assert early["cost"] is None


def test_price_as_and_resource_scope_select_the_price(payi, client):
    payi.categories.resources.create("model-x", category="acme", units=V1, start_timestamp=JAN)
    payi.categories.resources.create(
        "model-x", category="acme", units=V2, start_timestamp=JAN, extra_body={"scope": "datazone"}
    )
    units = {"text": {"input": 1000, "output": 0}}
    plain = client.post("/api/v1/ingest", json=_event(units, FEB)).json()["xproxy_result"]
    zoned = client.post("/api/v1/ingest", json=_event(units, FEB), headers={"xProxy-Resource-Scope": "datazone"})
    assert plain["cost"]["total"]["base"] == pytest.approx(1000 * 0.001)
    assert zoned.json()["xproxy_result"]["cost"]["total"]["base"] == pytest.approx(1000 * 0.003)
    bulk = client.post("/api/v1/ingest/bulk", json=[{**_event(units, FEB), "scope": "datazone"}]).json()
    assert bulk["ingest_count"] == 1
    # an OpenAI call priced as the custom resource (negotiated price)
    sent = {"category": "system.openai", "resource": "my-deployment", "units": units, "event_timestamp": FEB}
    priced_as = client.post(
        "/api/v1/ingest", json=sent, headers={"xProxy-PriceAs-Category": "acme", "xProxy-PriceAs-Resource": "model-x"}
    ).json()["xproxy_result"]
    assert priced_as["cost"]["total"]["base"] == pytest.approx(1000 * 0.001)


def test_reads_system_read_only_and_deletes(payi):
    v1 = payi.categories.resources.create("model-x", category="acme", units=V1, start_timestamp=JAN)
    v2 = payi.categories.resources.create("model-x", category="acme", units=V2, start_timestamp=FEB)
    payi.categories.resources.create("model-y", category="acme", units=V1, start_timestamp=JAN)
    cats = {c.category: c.model_extra["category_type"] for c in payi.categories.list(limit=3)}
    assert cats["system.openai"] == "system" and cats["acme"] == "custom"
    system = {r.resource: r for r in payi.categories.list_resources("system.openai", limit=100)}
    assert system["gpt-4o"].units["text"].input_price > 0 and system["gpt-4o"].active
    gpt = payi.categories.resources.list("gpt-4o", category="system.openai").items[0]
    assert payi.categories.resources.retrieve(gpt.resource_id, category="system.openai", resource="gpt-4o").active
    current = {r.resource: r.resource_id for r in payi.categories.list_resources("acme")}
    assert current == {"model-x": v2.resource_id, "model-y": current["model-y"]}
    versions = payi.categories.resources.list("model-x", category="acme")
    assert [(v.resource_id, v.active) for v in versions] == [(v1.resource_id, False), (v2.resource_id, True)]
    assert versions.items[0].end_timestamp == versions.items[1].start_timestamp
    assert [v.resource_id for v in payi.categories.resources.list("model-x", category="acme", active=True)] == [
        v2.resource_id
    ]
    got = payi.categories.resources.retrieve(v1.resource_id, category="acme", resource="model-x")
    assert got.units["text"].input_price == 0.001

    for call in (
        lambda: payi.categories.resources.create("gpt-4o", category="system.openai", units=V1),
        lambda: payi.categories.delete("system.openai"),
        lambda: payi.categories.delete_resource("gpt-4o", category="system.openai"),
    ):
        with pytest.raises(PermissionDeniedError) as exc:
            call()
        assert exc.value.status_code == 403 and exc.value.body["xproxy_error"]["code"] == "category_read_only"

    deleted = payi.categories.resources.delete(v1.resource_id, category="acme", resource="model-x")
    assert deleted.resource_id == v1.resource_id
    assert [v.resource_id for v in payi.categories.resources.list("model-x", category="acme")] == [v2.resource_id]
    assert [r.resource for r in payi.categories.delete_resource("model-x", category="acme")] == ["model-x"]
    with pytest.raises(NotFoundError):
        payi.categories.resources.list("model-x", category="acme")
    assert [r.resource for r in payi.categories.delete("acme")] == ["model-y"]
    with pytest.raises(NotFoundError) as exc:
        payi.categories.list_resources("acme")
    assert exc.value.body["xproxy_error"]["code"] == "category_not_found"


def test_deleting_the_last_version_removes_the_resource(payi):
    """A resource is its versions: once its last version is deleted, reading or deleting it answers 404 (the
    sequence the fuzzer's resource-availability check does not know about, see tests/fuzz/schemathesis.toml)."""
    only = payi.categories.resources.create("model-z", category="solo", units=V1, start_timestamp=JAN)
    payi.categories.resources.delete(only.resource_id, category="solo", resource="model-z")
    for call in (
        lambda: payi.categories.resources.list("model-z", category="solo"),
        lambda: payi.categories.delete_resource("model-z", category="solo"),
    ):
        with pytest.raises(NotFoundError) as exc:
            call()
        assert exc.value.body["xproxy_error"]["code"] == "category_resource_not_found"


async def test_async_client_drives_categories(svc):
    async with AsyncPayi(api_key=svc.api_key, base_url=svc.base_url, max_retries=0) as payi:
        for i in range(4):
            await payi.categories.resources.create(f"m{i}", category="acme", units=V1)
        listed = [r.resource async for r in payi.categories.list_resources("acme", limit=3)]
        assert listed == [f"m{i}" for i in range(4)]
        raw = await payi.categories.with_raw_response.list()
        assert raw.status_code == 200 and "acme" in [c.category for c in (await raw.parse()).items]
        with pytest.raises(PermissionDeniedError):
            await payi.categories.delete("system.anthropic")


@pytest.mark.parametrize("field", ["max_input_units", "max_output_units", "max_total_units"])
def test_unit_maxima_beyond_int64_are_refused_by_name(client, field):
    path = "/api/v1/categories/acme/resources/model-x"
    too_big = client.post(path, json={"units": V1, field: 2**63})
    assert too_big.status_code == 400, too_big.text
    assert field in too_big.text and "less than or equal" in too_big.text
    largest = client.post(path, json={"units": V1, field: 2**63 - 1})
    assert largest.status_code == 201, largest.text
    assert largest.json()[field] == 2**63 - 1
