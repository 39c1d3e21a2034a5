"""Requests API, restart durability and compatibility with the official `payi` client."""

from __future__ import annotations

import httpx
import pytest
from payi import AsyncPayi, NotFoundError, Payi
from service_support import running_service

from payi_otel.service.store import Store

GPT4O = {"category": "system.openai", "resource": "gpt-4o", "units": {"text": {"input": 100, "output": 10}}}


def test_properties_merge_and_null_deletes(tmp_path):
    with (
        running_service(tmp_path) as svc,
        httpx.Client(base_url=svc.base_url, headers={"xProxy-api-key": svc.api_key}) as c,
    ):
        rid = c.post(
            "/api/v1/ingest", json={**GPT4O, "properties": {"a": "1", "b": "2"}, "provider_response_id": "p/1"}
        ).json()["request_id"]
        r = c.put(f"/api/v1/requests/{rid}/properties", json={"properties": {"b": None, "c": "3"}})
        assert r.status_code == 200 and r.json() == {"request_id": rid}
        # the provider form addresses the same request; '/' in the provider id is percent-encoded
        r = c.put("/api/v1/requests/provider/system.openai/p%2F1/properties", json={"properties": {"d": "4"}})
        assert r.json() == {"request_id": rid}
        assert c.put("/api/v1/requests/nope/properties", json={"properties": {}}).status_code == 404
        r = c.put(f"/api/v1/requests/{rid}/properties", json={"props": {}})
        assert r.status_code == 400 and r.json()["xproxy_error"]["code"] in ("required_field_missing", "unknown_field")
        store = Store(svc.data_dir)
        try:
            app = store.authenticate(svc.api_key)
            assert store.request_properties(app.id, rid) == {"a": "1", "c": "3", "d": "4"}
        finally:
            store.close()


def test_data_survives_restart(tmp_path):
    with running_service(tmp_path) as svc:
        key = svc.api_key
        body = httpx.post(f"{svc.base_url}/api/v1/ingest?id=r-1", json=GPT4O, headers={"xProxy-api-key": key}).json()
    with running_service(tmp_path) as svc2:
        assert svc2.api_key == key  # no second default application on restart
        h = {"xProxy-api-key": key}
        stored = httpx.get(f"{svc2.base_url}/api/v1/requests/{body['request_id']}/result", headers=h).json()
        assert stored["xproxy_result"]["cost"] == body["xproxy_result"]["cost"]
        again = httpx.post(f"{svc2.base_url}/api/v1/ingest?id=r-1", json=GPT4O, headers=h).json()
        assert again["xproxy_result"]["duplicate_request"] is True and again["request_id"] == body["request_id"]


def test_official_payi_client_works_against_the_service(tmp_path):
    with running_service(tmp_path) as svc:
        client = Payi(api_key=svc.api_key, base_url=svc.base_url, max_retries=0)
        resp = client.ingest.units(
            category="system.openai",
            resource="gpt-4o",
            units={"text": {"input": 100, "output": 10}},
            provider_response_id="chatcmpl-sdk-1",
            use_case_name="sdk_case",
            user_id="u-1",
            limit_ids=[],
            properties={"k": "v"},
        )
        assert resp.xproxy_result.cost.total.base == pytest.approx(0.00035)
        assert resp.xproxy_result.use_case_name == "sdk_case" and resp.xproxy_result.user_id == "u-1"

        by_id = client.requests.request_id.result.retrieve(resp.request_id)
        assert by_id.xproxy_result.request_id == resp.request_id
        by_provider = client.requests.response_id.result.retrieve("chatcmpl-sdk-1", category="system.openai")
        assert by_provider.xproxy_result.request_id == resp.request_id

        bulk = client.ingest.bulk(
            events=[
                {
                    "category": "system.anthropic",
                    "resource": "claude-3-5-sonnet",
                    "units": {"text": {"input": 10, "output": 5}},
                    "user_id": "u-2",
                },
                {"category": "system.openai", "units": {}, "user_id": "bad user"},
            ]
        )
        assert bulk.ingest_count == 1 and bulk.error_count == 1
        assert bulk.errors[0].item_index == 1

        with pytest.raises(NotFoundError):
            client.requests.request_id.result.retrieve("does-not-exist")

        bad = Payi(api_key="sk-payi-app-wrong", base_url=svc.base_url, max_retries=0)
        from payi import AuthenticationError

        with pytest.raises(AuthenticationError) as info:
            bad.ingest.units(category="system.openai", units={})
        assert info.value.body["xproxy_error"]["code"] == "invalid_api_key"


async def test_official_async_payi_client(tmp_path):
    with running_service(tmp_path) as svc:
        client = AsyncPayi(api_key=svc.api_key, base_url=svc.base_url, max_retries=0)
        resp = await client.ingest.units(category="system.openai", resource="gpt-4o", units={"text": {"input": 1}})
        assert resp.xproxy_result.cost.input.base == pytest.approx(2.5e-6)
        await client.close()
