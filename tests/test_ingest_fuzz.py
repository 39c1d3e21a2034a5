"""Property-based fuzzing of the ingest API over real HTTP: whatever the body and the xProxy-* headers,
the service answers 2xx or a 4xx in Pay-i's error shape (short, naming a code), never 5xx."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_support import running_service

from payi_otel import protocol as P

FIELDS = [
    "category",
    "resource",
    "units",
    "event_timestamp",
    "end_to_end_latency_ms",
    "time_to_first_token_ms",
    "http_status_code",
    "provider_uri",
    "provider_request_json",
    "provider_response_json",
    "provider_response_id",
    "provider_request_headers",
    "provider_response_function_calls",
    "properties",
    "use_case_properties",
    "limit_ids",
    "request_tags",
    "user_id",
    "use_case_id",
    "use_case_name",
    "use_case_version",
    "use_case_step",
    "account_name",
    "scope",
]
BIG_INTS = st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | BIG_INTS
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["2026-01-01T00:00:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "10", "\x00\n\x1b"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
UNITS = st.dictionaries(
    st.text(max_size=10),
    st.dictionaries(st.sampled_from(["input", "output", "other"]), SCALARS, max_size=3),
    max_size=3,
)
EVENTS = st.fixed_dictionaries(
    {"category": st.sampled_from(["system.openai", "", "x\ny"]) | st.text(max_size=20), "units": UNITS},
    optional={f: JSON_VALUES for f in FIELDS if f not in ("category", "units")},
)
# Valid HTTP field values only (RFC 9110: no DEL, no controls): an invalid request line or header is refused by the
# HTTP parser with its own 400 before any application code runs, so it says nothing about the ingest API.
HEADER_VALUES = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=60
) | st.sampled_from(["", "1", str(2**63), str(2**63 - 1), "-1", "x" * 2000, ",".join(["id"] * 500), "True"])
HEADERS = st.dictionaries(
    st.sampled_from([*P.SINGLE_INGEST_HEADERS, *P.PROPERTIES_HEADERS.values()]), HEADER_VALUES, max_size=5
)
BODIES = (
    EVENTS.map(json.dumps)
    | st.lists(EVENTS, max_size=4).map(json.dumps)
    | JSON_VALUES.map(json.dumps)
    | st.binary(max_size=60).map(lambda b: b.decode("latin-1"))
)


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("fuzz")) as service:
        yield service


def check_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code >= 400:
        assert body["statusCode"] == response.status_code
        assert isinstance(body["xproxy_error"]["code"], str) and body["xproxy_error"]["code"]
        assert len(body["message"]) < 2000
    elif "total_count" in body:
        assert body["ingest_count"] + body["duplicate_count"] + body["error_count"] == body["total_count"]
        for error in body["errors"]:
            assert error["xproxy_result"]["statusCode"] == 400 and len(error["xproxy_result"]["message"]) < 2000
    else:
        assert body["xproxy_result"]["request_id"] == body["request_id"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=BODIES, headers=HEADERS, bulk=st.booleans(), dedupe=st.none() | st.text(max_size=20))
def test_any_ingest_request_gets_2xx_or_a_payi_4xx(svc, body, headers, bulk, dedupe):
    path = "/api/v1/ingest/bulk" if bulk else "/api/v1/ingest"
    params = {} if dedupe is None else {"id": dedupe}
    sent = {"xProxy-api-key": svc.api_key, "content-type": "application/json"}
    sent.update({k: v.strip(" \t").encode() for k, v in headers.items()})  # HTTP trims header values
    response = httpx.post(
        f"{svc.base_url}{path}", content=body.encode("utf-8", "surrogatepass"), headers=sent, params=params, timeout=30
    )
    check_answer(response)
