"""Scheduled limit resets (injectable clock, across a restart) and limit alert webhooks on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from payi import Payi
from service_support import running_service

GPT4O = {"category": "system.openai", "resource": "gpt-4o", "units": {"text": {"input": 1000, "output": 100}}}


class Clock:
    """An injectable clock the test moves by hand."""

    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when.timestamp()


def _wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def _spend(svc, limit_id: str, n: int) -> float:
    total = 0.0
    with httpx.Client(base_url=svc.base_url, headers={"xProxy-api-key": svc.api_key}) as c:
        for _ in range(n):
            body = c.post("/api/v1/ingest", json=GPT4O, headers={"xProxy-Limit-IDs": limit_id}).json()
            total += body["xproxy_result"]["cost"]["total"]["base"]
    return total


def test_daily_reset_is_applied_by_the_clock_and_kept_in_history(tmp_path):
    clock = Clock(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))
    with running_service(tmp_path, clock=clock, reset_check_interval=0.02) as svc:
        payi = Payi(api_key=svc.api_key, base_url=svc.base_url, max_retries=0)
        limit = payi.limits.create(limit_name="daily", max=10, extra_body={"reset_schedule": "daily"}).limit
        assert limit.model_extra["next_reset_timestamp"] == "2026-03-11T00:00:00Z"
        spent = _spend(svc, limit.limit_id, 3)
        clock.set(datetime(2026, 3, 11, 0, 0, 1, tzinfo=UTC))  # past midnight: the background check resets it
        after = _wait_for(
            lambda: (lim := payi.limits.retrieve(limit.limit_id).limit).totals.requests.total == 0 and lim
        )
        assert after.model_extra["next_reset_timestamp"] == "2026-03-12T00:00:00Z"
        history = httpx.get(
            f"{svc.base_url}/api/v1/limits/{limit.limit_id}/history", headers={"xProxy-api-key": svc.api_key}
        ).json()["items"]
        assert [(h["trigger"], h["limit_reset_timestamp"]) for h in history] == [("schedule", "2026-03-11T00:00:00Z")]
        assert history[0]["totals"]["requests"]["total"] == 3
        assert history[0]["totals"]["cost"]["total"]["base"] == pytest.approx(spent, rel=1e-12)


def test_a_reset_due_while_stopped_is_applied_at_restart_and_before_new_spend(tmp_path):
    clock = Clock(datetime(2026, 1, 20, 12, 0, tzinfo=UTC))
    slow = {"clock": clock, "reset_check_interval": 3600}  # only the start-up pass and ingest apply resets
    with running_service(tmp_path, **slow) as svc:
        payi = Payi(api_key=svc.api_key, base_url=svc.base_url, max_retries=0)
        monthly = payi.limits.create(limit_name="m", max=10, extra_body={"reset_schedule": "monthly"}).limit
        period = payi.limits.create(limit_name="p", max=10, extra_body={"reset_schedule": "PT6H"}).limit
        _spend(svc, monthly.limit_id, 2)
        _spend(svc, period.limit_id, 1)
    clock.set(datetime(2026, 2, 3, 9, 0, tzinfo=UTC))  # the service was down across both boundaries
    with running_service(tmp_path, **slow) as svc:
        payi = Payi(api_key=svc.api_key, base_url=svc.base_url, max_retries=0)
        m = _wait_for(lambda: (lim := payi.limits.retrieve(monthly.limit_id).limit).totals.requests.total == 0 and lim)
        assert m.model_extra["next_reset_timestamp"] == "2026-03-01T00:00:00Z"
        p = payi.limits.retrieve(period.limit_id).limit
        assert p.totals.requests.total == 0 and p.model_extra["next_reset_timestamp"] == "2026-02-03T12:00:00Z"
        h = {"xProxy-api-key": svc.api_key}
        hist = httpx.get(f"{svc.base_url}/api/v1/limits/{monthly.limit_id}/history", headers=h).json()["items"]
        assert [(x["limit_reset_timestamp"], x["totals"]["requests"]["total"]) for x in hist] == [
            ("2026-02-01T00:00:00Z", 2)
        ]
        # the next boundary passes with no background pass: the next event still lands in the new period
        _spend(svc, period.limit_id, 1)
        clock.set(datetime(2026, 2, 3, 12, 0, 0, tzinfo=UTC))
        _spend(svc, period.limit_id, 1)
        assert payi.limits.retrieve(period.limit_id).limit.totals.requests.total == 1
        hist = httpx.get(f"{svc.base_url}/api/v1/limits/{period.limit_id}/history", headers=h).json()["items"]
        assert [x["totals"]["requests"]["total"] for x in hist] == [1, 1]


class _ClockPassingMidnight(Clock):
    """A clock that moves past midnight on its ``after``-th reading once armed (the ingest of a bulk body
    reads it as it checks each item's limits)."""

    def __init__(self, when: datetime, later: datetime) -> None:
        super().__init__(when)
        self.later = later.timestamp()
        self.readings: int | None = None
        self.after = 0

    def arm(self, after: int) -> None:
        self.readings, self.after = 0, after

    def __call__(self) -> float:
        if self.readings is not None:
            self.readings += 1
            if self.readings == self.after:
                self.now = self.later
        return self.now


def test_a_reset_falling_due_within_a_bulk_body_is_applied(tmp_path):
    # Every item names the same limit: its check is not repeated for each, but a reset due in between is applied.
    clock = _ClockPassingMidnight(datetime(2026, 4, 7, 23, 59, tzinfo=UTC), datetime(2026, 4, 8, 0, 0, 1, tzinfo=UTC))
    with running_service(tmp_path, clock=clock, reset_check_interval=3600) as svc:
        h = {"xProxy-api-key": svc.api_key}
        payi = Payi(api_key=svc.api_key, base_url=svc.base_url, max_retries=0)
        limit = payi.limits.create(limit_name="d", max=10, extra_body={"reset_schedule": "daily"}).limit
        clock.arm(after=10)
        body = [{**GPT4O, "limit_ids": [limit.limit_id]}] * 40
        answer = httpx.post(f"{svc.base_url}/api/v1/ingest/bulk", json=body, headers=h).json()
        assert answer["ingest_count"] == 40 and clock.now == clock.later
        after = payi.limits.retrieve(limit.limit_id).limit
        hist = httpx.get(f"{svc.base_url}/api/v1/limits/{limit.limit_id}/history", headers=h).json()["items"]
        assert [x["limit_reset_timestamp"] for x in hist] == ["2026-04-08T00:00:00Z"]
        # a body's spend is counted at its end: all of it lands in the new period
        assert hist[0]["totals"]["requests"]["total"] == 0 and after.totals.requests.total == 40
        assert after.model_extra["next_reset_timestamp"] == "2026-04-09T00:00:00Z"


def test_schedule_set_changed_and_removed_by_update(tmp_path):
    clock = Clock(datetime(2026, 5, 6, 8, 0, tzinfo=UTC))  # a Wednesday
    with running_service(tmp_path, clock=clock) as svc:
        payi = Payi(api_key=svc.api_key, base_url=svc.base_url, max_retries=0)
        limit_id = payi.limits.create(limit_name="w", max=1).limit.limit_id
        weekly = payi.limits.update(limit_id, extra_body={"reset_schedule": "weekly"}).limit
        assert weekly.model_extra["next_reset_timestamp"] == "2026-05-11T00:00:00Z"  # the next Monday
        none = payi.limits.update(limit_id, extra_body={"reset_schedule": None}).limit
        assert none.model_extra["reset_schedule"] is None and none.model_extra["next_reset_timestamp"] is None


class _Receiver:
    """A webhook receiver on 127.0.0.1 that answers 503 to the first request, then 200."""

    def __init__(self) -> None:
        self.accepted: list[dict] = []
        self.refused: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                first = not receiver.refused
                (receiver.refused if first else receiver.accepted).append(body)
                self.send_response(503 if first else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_sees_each_crossing_once(tmp_path, caplog):
    receiver = _Receiver()
    caplog.set_level("WARNING", logger="payi_otel.service.alerts")
    try:
        with running_service(tmp_path, webhook_url=receiver.url) as svc:
            payi = Payi(api_key=svc.api_key, base_url=svc.base_url, max_retries=0)
            one = _spend(svc, payi.limits.create(limit_name="probe", max=1).limit.limit_id, 1)
            # threshold after 2 events, max after 3: 5 events cross each line once
            limit = payi.limits.create(limit_name="alerting", max=one * 3.5, threshold=2.5 / 3.5).limit
            _spend(svc, limit.limit_id, 5)
            _wait_for(lambda: len(receiver.accepted) >= 2)
            payi.limits.reset(limit.limit_id)
            _spend(svc, limit.limit_id, 3)  # crosses the threshold again after the reset, not the max
            _wait_for(lambda: len(receiver.accepted) >= 3)
            time.sleep(0.7)  # no late repeat
        accepted = sorted(receiver.accepted, key=lambda a: a["alert_id"])  # a retried alert may arrive later
        got = [(a["limit_id"], a["event"]) for a in accepted]
        assert got == [
            (limit.limit_id, "limit.threshold_crossed"),
            (limit.limit_id, "limit.max_crossed"),
            (limit.limit_id, "limit.threshold_crossed"),
        ]
        assert len({a["alert_id"] for a in receiver.accepted}) == 3
        # the refused first attempt was retried with the same alert id
        assert receiver.refused[0]["alert_id"] == accepted[0]["alert_id"]
        assert accepted[1]["spend"] > accepted[1]["max"] and accepted[0]["spend"] < accepted[0]["max"]
        logged = [r.getMessage() for r in caplog.records if "crossed its" in r.getMessage()]
        assert len(logged) == 3 and "'alerting'" in logged[0]
    finally:
        receiver.close()
