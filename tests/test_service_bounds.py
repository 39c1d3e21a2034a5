"""The local service under hostile input, over real HTTP: every bound answers 4xx in Pay-i's shape
(never 5xx), bodies have a size limit, large bodies never stall other requests, files are private."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time

import httpx
import pytest
from service_support import running_service, stored_requests

from payi_otel import protocol as P
from payi_otel.service.store.connection import resolve_database_url

GPT4O = {"category": "system.openai", "resource": "gpt-4o", "units": {"text": {"input": 100, "output": 10}}}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("limits")) as service:
        yield service


@pytest.fixture
def client(svc):
    with httpx.Client(base_url=svc.base_url, headers={"xProxy-api-key": svc.api_key}, timeout=60) as c:
        yield c


def assert_error(resp, status, code, *words):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["statusCode"] == status and body["xproxy_error"]["code"] == code, body
    assert body["message"] == body["xproxy_error"]["message"]
    for w in words:
        assert w in body["message"], body["message"]


def test_use_case_version_beyond_64_bits_is_refused_naming_the_bound(client):
    too_big = str(P.MAX_USE_CASE_VERSION + 1)
    headers = {"xProxy-UseCase-Name": "poison", "xProxy-UseCase-Version": too_big}
    assert_error(
        client.post("/api/v1/ingest", json=GPT4O, headers=headers),
        400,
        "invalid_use_case_version",
        str(P.MAX_USE_CASE_VERSION),
    )
    item = {**GPT4O, "use_case_name": "poison", "use_case_version": P.MAX_USE_CASE_VERSION + 1}
    body = client.post("/api/v1/ingest/bulk", json=[item, {**item, "use_case_version": 1}]).json()
    assert body["ingest_count"] == 1 and body["errors"][0]["item_index"] == 0
    assert str(P.MAX_USE_CASE_VERSION) in body["errors"][0]["xproxy_result"]["message"]
    # the largest version in range is a 4xx too (no such version), never a database overflow
    largest = {"xProxy-UseCase-Name": "poison", "xProxy-UseCase-Version": str(P.MAX_USE_CASE_VERSION)}
    r = client.post("/api/v1/ingest", json=GPT4O, headers=largest)
    assert r.status_code == 400 and r.json()["statusCode"] == 400, r.text


@pytest.mark.parametrize("value", ['"10"', "true", "10.5", "1e3"])
def test_unit_values_must_be_json_integers(client, value):
    body = f'{{"category": "system.openai", "units": {{"text": {{"input": {value}}}}}}}'.encode()
    assert_error(client.post("/api/v1/ingest", content=body, headers=JSON), 400, "invalid_units", "units.text.input")


@pytest.mark.parametrize("field", ["end_to_end_latency_ms", "http_status_code"])
def test_other_integers_are_strict_too(client, field):
    assert_error(client.post("/api/v1/ingest", json={**GPT4O, field: "200"}), 400, "invalid_field_value", field)


@pytest.mark.parametrize(
    ("timestamp", "words"),
    [
        ("2026-01-31T12:00:00", ["timezone"]),
        ("0001-01-01T00:00:00Z", ["2000"]),
        ("1900-06-01T00:00:00+00:00", ["2000"]),
    ],
)
def test_timestamps_need_a_time_zone_and_a_sane_year(client, timestamp, words):
    assert_error(
        client.post("/api/v1/ingest", json={**GPT4O, "event_timestamp": timestamp}),
        400,
        "invalid_field_value",
        "event_timestamp",
        *words,
    )


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("path", ["/api/v1/ingest", "/api/v1/ingest/bulk"])
def test_ingest_bodies_must_be_declared_json(client, path, content_type):
    body = json.dumps(GPT4O if path.endswith("ingest") else [GPT4O]).encode()
    request = client.build_request("POST", path, content=body)
    if content_type is None:
        request.headers.pop("content-type", None)
    else:
        request.headers["content-type"] = content_type
    assert_error(client.send(request), 415, "invalid_content_type", "application/json")


def test_ten_thousand_limit_ids_get_a_short_error(client):
    ids = [f"limit-{i}" for i in range(10_000)]
    single = client.post("/api/v1/ingest", json=GPT4O, headers={"xProxy-Limit-IDs": ",".join(ids)})
    assert_error(single, 400, "invalid_limit_ids", f"at most {P.MAX_LIST_ITEMS}")
    assert len(single.content) < 500
    bulk = client.post("/api/v1/ingest/bulk", json=[{**GPT4O, "limit_ids": ids}])
    assert bulk.status_code == 200 and len(bulk.content) < 1000
    assert bulk.json()["errors"][0]["xproxy_result"]["xproxy_error"]["code"] == "invalid_field_value"
    many_unknown = client.post("/api/v1/ingest", json=GPT4O, headers={"xProxy-Limit-IDs": ",".join(ids[:100])})
    assert_error(many_unknown, 400, "invalid_limit_ids", "and 95 more")


@pytest.mark.parametrize("field", ["account_name", "user_id", "use_case_step", "use_case_id", "resource"])
def test_control_characters_in_names_are_refused(client, field):
    item = {**GPT4O, "use_case_name": "x", field: "acme\n  forged-row  999.00\x1b[2J"}
    body = client.post("/api/v1/ingest/bulk", json=[item]).json()
    assert body["ingest_count"] == 0
    message = body["errors"][0]["xproxy_result"]["message"]
    assert field in message and "pattern" in message


def test_long_names_are_refused_naming_the_bound(client):
    r = client.post("/api/v1/ingest", json=GPT4O, headers={"xProxy-Account-Name": "a" * (P.MAX_TEXT_LENGTH + 1)})
    assert_error(r, 400, "invalid_field_value", "xProxy-Account-Name", str(P.MAX_TEXT_LENGTH))


def test_bulk_item_limit(client):
    assert_error(
        client.post("/api/v1/ingest/bulk", json=[GPT4O] * (P.MAX_BULK_ITEMS + 1)),
        400,
        "invalid_field_value",
        str(P.MAX_BULK_ITEMS),
    )


def test_body_size_limit_is_413_in_payi_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("PAYI_OTEL_MAX_BODY_BYTES", "4096")
    with running_service(tmp_path) as svc:
        headers = {"xProxy-api-key": svc.api_key, **JSON}
        big = json.dumps({**GPT4O, "provider_request_json": "x" * 5000}).encode()
        announced = httpx.post(f"{svc.base_url}/api/v1/ingest", content=big, headers=headers)
        assert_error(announced, 413, "request_too_large", "4096", "PAYI_OTEL_MAX_BODY_BYTES")

        def chunks():
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        chunked = httpx.post(f"{svc.base_url}/api/v1/ingest", content=chunks(), headers=headers)
        assert_error(chunked, 413, "request_too_large", "4096")
        small = json.dumps(GPT4O).encode()
        assert httpx.post(f"{svc.base_url}/api/v1/ingest", content=iter([small]), headers=headers).status_code == 200
        assert len(stored_requests(svc.data_dir)) == 1


@pytest.fixture
def served_process(tmp_path):
    """`payi-otel serve` in its own process (a health probe must not share the server's GIL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "payi_otel.cli", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on " in line, line + proc.stderr.read()
        yield line.split("listening on ")[1].strip(), (tmp_path / "default-api-key").read_text().strip()
    finally:
        proc.terminate()
        proc.wait(15)
        proc.stdout.close()
        proc.stderr.close()


def _probe_during_bulk(base_url: str, key: str, run: int) -> list[float]:
    """/healthz latencies (seconds) measured while one maximal bulk is sent and processed."""
    # The largest bulk the service takes: MAX_BULK_ITEMS events filling most of the body limit.
    filler = "x" * (P.DEFAULT_MAX_BODY_BYTES // P.MAX_BULK_ITEMS - 600)
    items = [
        {
            **GPT4O,
            "provider_response_id": f"max-{run}-{i}",
            "use_case_name": "bulk",
            "user_id": f"u{i}",
            "request_tags": ["a", "b"],
            "properties": {"k": "v"},
            "provider_request_json": filler,
        }
        for i in range(P.MAX_BULK_ITEMS)
    ]
    body = json.dumps(items).encode()
    assert len(body) <= P.DEFAULT_MAX_BODY_BYTES
    result: dict = {}

    def send() -> None:
        headers = {"xProxy-api-key": key, **JSON}
        result["response"] = httpx.post(f"{base_url}/api/v1/ingest/bulk", content=body, headers=headers, timeout=120)

    worker = threading.Thread(target=send)
    latencies = []
    with httpx.Client(base_url=base_url) as probe:
        probe.get("/healthz")
        worker.start()
        while worker.is_alive():
            start = time.perf_counter()
            assert probe.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - start)
            time.sleep(0.005)
    worker.join()
    assert result["response"].status_code == 200 and result["response"].json()["ingest_count"] == P.MAX_BULK_ITEMS
    assert len(latencies) >= 3  # the probe really ran while the bulk was in flight
    return latencies


def test_health_answers_within_100ms_while_a_maximal_bulk_is_processed(served_process):
    base_url, key = served_process
    # On a loaded shared machine the scheduler alone can delay one probe by tens of milliseconds
    # (an idle service shows the same): the bound must hold over one whole bulk out of three.
    slowest = []
    for run in range(3):
        latencies = _probe_during_bulk(base_url, key, run)
        slowest.append(max(latencies))
        print(f"bulk {run}: slowest /healthz {max(latencies) * 1000:.1f} ms over {len(latencies)} probes")
        if max(latencies) < 0.1:
            break
    assert min(slowest) < 0.1, f"slowest /healthz per bulk: {[round(s * 1000) for s in slowest]} ms"


def test_data_directory_and_files_are_private(svc, client):
    assert client.post("/api/v1/ingest", json=GPT4O).status_code == 200
    assert stat.S_IMODE(os.stat(svc.data_dir).st_mode) == 0o700
    names = sorted(os.listdir(svc.data_dir))
    on_sqlite = resolve_database_url() is None
    assert {"payi.db", "payi.db-wal", "payi.db-shm"} <= set(names) if on_sqlite else "payi.db" not in names
    assert "default-api-key" in names
    for name in names:
        assert stat.S_IMODE(os.stat(svc.data_dir / name).st_mode) == 0o600, name
