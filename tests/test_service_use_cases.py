"""Use cases API (definitions, versions, instances, properties, KPIs, limit_config) and use case rules on ingest,
through real HTTP on 127.0.0.1 and the official `payi` client."""

from __future__ import annotations

import httpx
import pytest
from payi import AsyncPayi, BadRequestError, NotFoundError, Payi
from service_support import running_service

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


def test_definitions_versions_and_instances(payi, client, svc):
    d = payi.use_cases.definitions.create(name="summarize", description="Summaries", logging_enabled=False)
    assert (d.name, d.description, d.type_version, d.logging_enabled) == ("summarize", "Summaries", 1, False)
    with pytest.raises(BadRequestError) as exc:
        payi.use_cases.definitions.create(name="summarize", description="again")
    assert exc.value.body["xproxy_error"]["code"] == "use_case_already_exists"
    with pytest.raises(BadRequestError) as exc:
        payi.use_cases.definitions.create(name="has space", description="x")
    assert exc.value.body["xproxy_error"]["code"] == "invalid_use_case_name"
    assert "name" in exc.value.body["message"]
    with pytest.raises(BadRequestError) as exc:
        payi.use_cases.definitions.create(name="no-description", description="")
    assert exc.value.body["xproxy_error"]["code"] == "invalid_use_case_description"
    assert "description" in exc.value.body["message"]

    v1 = payi.use_cases.create("summarize")
    assert v1.type_version == 1 and v1.use_case_name == "summarize" and v1.limit_id is None
    assert payi.use_cases.definitions.version.increment("summarize").type_version == 2
    updated = payi.use_cases.definitions.update("summarize", description="Short summaries")
    assert (updated.description, updated.type_version) == ("Short summaries", 2)  # editing keeps the version
    assert payi.use_cases.create("summarize").type_version == 2

    # ingest: the newest version unless one is pinned; a version that does not exist is refused
    h = {"xProxy-UseCase-Name": "summarize"}
    assert client.post("/api/v1/ingest", json=GPT4O, headers=h).json()["xproxy_result"]["use_case_version"] == 2
    pinned = client.post("/api/v1/ingest", json=GPT4O, headers={**h, "xProxy-UseCase-Version": "1"}).json()
    assert pinned["xproxy_result"]["use_case_version"] == 1
    for bad in ("3", "0", "-1"):
        r = client.post("/api/v1/ingest", json=GPT4O, headers={**h, "xProxy-UseCase-Version": bad})
        assert r.status_code == 400 and r.json()["xproxy_error"]["code"] == "invalid_use_case_version", bad
        assert "xProxy-UseCase-Version" in r.json()["message"]
    r = client.post("/api/v1/ingest/bulk", json=[{**GPT4O, "use_case_name": "summarize", "use_case_version": -2}])
    assert r.json()["errors"][0]["xproxy_result"]["xproxy_error"]["code"] == "invalid_use_case_version"

    # an instance id belongs to one use case
    r = client.post(
        "/api/v1/ingest", json=GPT4O, headers={"xProxy-UseCase-Name": "other", "xProxy-UseCase-ID": v1.use_case_id}
    )
    assert r.status_code == 400 and r.json()["xproxy_error"]["code"] == "use_case_instance_not_found"
    assert "summarize" in r.json()["message"]

    # instances: properties, retrieve, delete
    props = payi.use_cases.properties.update(v1.use_case_id, use_case_name="summarize", properties={"team": "red"})
    assert props.model_extra["properties"] == {"team": "red"}
    client.post(
        "/api/v1/ingest",
        json={**GPT4O, "use_case_properties": {"tier": "gold"}},
        headers={**h, "xProxy-UseCase-ID": v1.use_case_id},
    )
    got = payi.use_cases.retrieve(v1.use_case_id, use_case_name="summarize")
    assert got.model_extra["properties"] == {"team": "red", "tier": "gold"} and got.type_version == 1
    with pytest.raises(NotFoundError) as exc:
        payi.use_cases.retrieve(v1.use_case_id, use_case_name="other")
    assert exc.value.body["xproxy_error"]["code"] == "use_case_instance_not_found"
    payi.use_cases.delete(v1.use_case_id, use_case_name="summarize")
    with pytest.raises(NotFoundError):
        payi.use_cases.retrieve(v1.use_case_id, use_case_name="summarize")

    # definitions first seen on ingest are listed too; delete removes one
    names = [x.name for x in payi.use_cases.definitions.list(limit=1)]
    assert names == ["summarize"]
    client.post("/api/v1/ingest", json=GPT4O, headers={"xProxy-UseCase-Name": "seen-on-ingest"})
    assert [x.name for x in payi.use_cases.definitions.list(limit=1)] == ["summarize", "seen-on-ingest"]
    with Payi(api_key=svc.api_key, base_url=svc.base_url, _strict_response_validation=True) as strict:
        assert strict.use_cases.definitions.retrieve("seen-on-ingest").description == ""  # the client's str
        assert [x.name for x in strict.use_cases.definitions.list()] == ["summarize", "seen-on-ingest"]
    payi.use_cases.definitions.delete("seen-on-ingest")
    with pytest.raises(NotFoundError) as exc:
        payi.use_cases.definitions.retrieve("seen-on-ingest")
    assert exc.value.body["xproxy_error"]["code"] == "use_case_not_found"
    with pytest.raises(NotFoundError):
        payi.use_cases.create("never-defined")


def test_kpis_of_every_type_and_instance_scores(payi):
    payi.use_cases.definitions.create(name="triage", description="Ticket triage")
    types = {
        "resolved": ("boolean", True),
        "minutes": ("number", 12.5),
        "accuracy": ("percentage", 97),
        "csat5": ("likert5", 4),
        "csat7": ("likert7", 7),
        "csat10": ("likert10", 1),
    }
    for name, (kind, _) in types.items():
        k = payi.use_cases.definitions.kpis.create(
            "triage", name=name, description=f"{kind} KPI", kpi_type=kind, goal=1
        )
        assert (k.name, k.kpi_type, k.goal) == (name, kind, 1)
    assert [k.name for k in payi.use_cases.definitions.kpis.list("triage", limit=4)] == list(types)
    up = payi.use_cases.definitions.kpis.update("minutes", use_case_name="triage", goal=10, description="Handling")
    assert (up.goal, up.description, up.kpi_type) == (10, "Handling", "number")
    assert payi.use_cases.definitions.kpis.retrieve("minutes", use_case_name="triage").goal == 10
    with pytest.raises(BadRequestError) as exc:
        payi.use_cases.definitions.kpis.create("triage", name="x", description="d", kpi_type="stars", goal=1)
    assert "kpi_type" in exc.value.body["message"]

    inst = payi.use_cases.create("triage").use_case_id
    for name, (_, score) in types.items():
        assert payi.use_cases.kpis.update(name, use_case_name="triage", use_case_id=inst, score=score) is None
    listed = payi.use_cases.kpis.list(inst, use_case_name="triage", limit=5)  # two pages
    scores = {k.kpi_name: (k.kpi_type, k.score) for k in listed}
    assert scores == {name: (kind, float(score)) for name, (kind, score) in types.items()}
    for name, bad in (("resolved", 1), ("accuracy", 101), ("csat5", 6), ("csat7", 2.5), ("minutes", True)):
        with pytest.raises(BadRequestError) as exc:
            payi.use_cases.kpis.update(name, use_case_name="triage", use_case_id=inst, score=bad)
        assert exc.value.body["xproxy_error"]["code"] == "invalid_kpi_score" and name in exc.value.body["message"]
    with pytest.raises(NotFoundError) as exc:
        payi.use_cases.kpis.update("nope", use_case_name="triage", use_case_id=inst, score=1)
    assert exc.value.body["xproxy_error"]["code"] == "kpi_not_found"
    payi.use_cases.definitions.kpis.delete("csat10", use_case_name="triage")
    assert "csat10" not in {k.kpi_name for k in payi.use_cases.kpis.list(inst, use_case_name="triage")}


def test_limit_config_gives_every_new_instance_its_own_limit(payi, client):
    payi.use_cases.definitions.create(name="chat", description="Chat", limit_config={"max": 5, "threshold": 0.8})
    explicit = payi.use_cases.create("chat")
    assert explicit.limit_id
    limit = payi.limits.retrieve(explicit.limit_id).limit
    assert (limit.max, limit.threshold, limit.limit_type) == (5, 0.8, "allow")
    # an instance first seen on ingest gets one too, and its events count against it
    body = client.post("/api/v1/ingest", json=GPT4O, headers={"xProxy-UseCase-Name": "chat"}).json()
    inst = payi.use_cases.retrieve(body["xproxy_result"]["use_case_id"], use_case_name="chat")
    assert inst.limit_id and inst.limit_id != explicit.limit_id
    assert body["xproxy_result"]["limits"] == {inst.limit_id: {"state": "ok"}}
    totals = payi.limits.retrieve(inst.limit_id).limit.totals
    assert totals.requests.total == 1 and totals.cost.total.base == body["xproxy_result"]["cost"]["total"]["base"]
    # the instance keeps its limit on later events; removing the config stops new ones
    again = client.post(
        "/api/v1/ingest", json=GPT4O, headers={"xProxy-UseCase-Name": "chat", "xProxy-UseCase-ID": inst.use_case_id}
    ).json()
    assert list(again["xproxy_result"]["limits"]) == [inst.limit_id]
    assert payi.use_cases.definitions.limit_config.delete("chat").limit_config is None
    assert payi.use_cases.create("chat").limit_id is None
    d = payi.use_cases.definitions.limit_config.create("chat", max=2, limit_type="allow")
    assert d.limit_config.max == 2 and payi.use_cases.create("chat").limit_id


async def test_async_client_drives_use_cases(svc):
    async with AsyncPayi(api_key=svc.api_key, base_url=svc.base_url, max_retries=0) as payi:
        for i in range(7):
            await payi.use_cases.definitions.create(name=f"uc{i}", description="d")
        assert [d.name async for d in payi.use_cases.definitions.list(limit=3)] == [f"uc{i}" for i in range(7)]
        raw = await payi.use_cases.definitions.with_raw_response.create(name="raw", description="d")
        assert raw.status_code == 201 and (await raw.parse()).type_version == 1
        async with payi.use_cases.with_streaming_response.create("raw") as streamed:
            assert streamed.status_code == 201 and (await streamed.parse()).use_case_name == "raw"
        await payi.use_cases.definitions.kpis.create("raw", name="k", description="d", kpi_type="likert7", goal=6)
        inst = (await payi.use_cases.create("raw")).use_case_id
        await payi.use_cases.kpis.update("k", use_case_name="raw", use_case_id=inst, score=5)
        assert [k.score async for k in payi.use_cases.kpis.list(inst, use_case_name="raw")] == [5.0]
        with pytest.raises(NotFoundError):
            await payi.with_options(max_retries=0).use_cases.definitions.retrieve("missing")


def test_a_use_case_with_logging_disabled_keeps_no_prompts_or_responses(payi, client):
    payi.use_cases.definitions.create(name="private", description="No content kept", logging_enabled=False)
    payi.use_cases.definitions.create(name="open", description="Content kept")
    content = {
        "provider_request_json": '{"messages": ["hi"]}',
        "provider_response_json": '{"text": "hello"}',
        "provider_uri": "https://api.openai.com/v1/",
    }
    event = {**GPT4O, **content}

    def stored(use_case, via_bulk=False):
        if via_bulk:
            item = {**event, "use_case_name": use_case, "provider_response_id": "bulk-item"}
            r = client.post("/api/v1/ingest/bulk", json=[item])
            assert r.json()["ingest_count"] == 1, r.text
            found = client.get(f"/api/v1/requests/provider/{GPT4O['category']}/bulk-item/result").json()
            rid = found["xproxy_result"]["request_id"]
        else:
            r = client.post("/api/v1/ingest", json=event, headers={"xProxy-UseCase-Name": use_case})
            assert r.status_code == 200, r.text
            rid = r.json()["request_id"]
        detail = client.get(f"/api/v1/reports/requests/{rid}").json()
        return detail["provider_data"] or {}, detail["cost_total"]

    kept, cost = stored("open")
    assert kept == content and cost > 0
    for via_bulk in (False, True):
        dropped, cost = stored("private", via_bulk)
        assert dropped == {"provider_uri": content["provider_uri"]} and cost > 0  # cost and metadata stay
    payi.use_cases.definitions.update("private", logging_enabled=True)  # takes effect at once
    assert stored("private")[0] == content


def test_deleting_a_definition_deletes_its_instances_even_if_it_is_created_again(payi):
    payi.use_cases.definitions.create(name="triage", description="first")
    instance = payi.use_cases.create("triage")
    assert payi.use_cases.retrieve(instance.use_case_id, use_case_name="triage").use_case_id == instance.use_case_id
    payi.use_cases.definitions.delete("triage")
    payi.use_cases.definitions.create(name="triage", description="second")  # the same name: a new use case
    for call in (payi.use_cases.retrieve, payi.use_cases.delete):
        with pytest.raises(NotFoundError) as exc:
            call(instance.use_case_id, use_case_name="triage")
        assert exc.value.body["xproxy_error"]["code"] == "use_case_instance_not_found"
