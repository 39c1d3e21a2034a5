"""The group commit against another writer of the same database (another service instance): an event whose
copy another instance wrote but has not committed yet is stored once and counted once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from payi_otel.service.attribution import Attribution
from payi_otel.service.commit import GroupCommitter
from payi_otel.service.ingest import Ingestor
from payi_otel.service.models import IngestRequest
from payi_otel.service.pricing import Pricer
from payi_otel.service.store import Store, now_ms

EVENT = {"category": "system.openai", "resource": "gpt-4o-mini", "units": {"text": {"input": 1200, "output": 400}}}


def _wait_until_blocked_by_another_transaction(store: Store) -> None:
    """PostgreSQL: until a session waits for a lock (the racing write waits for the other's uncommitted one)."""
    if store.database_url is None:  # SQLite: the writer waits for the file's write lock (busy timeout)
        time.sleep(0.3)
        return
    import psycopg

    with psycopg.connect(store.database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()[0]:
            assert time.monotonic() < deadline, "the racing write never waited for the other transaction"
            time.sleep(0.01)


def test_an_event_racing_another_instances_uncommitted_copy_is_stored_and_counted_once(tmp_path):
    first, second = Store(tmp_path), Store(tmp_path)  # two instances on one database (SQLite: one file)
    committer = GroupCommitter(first)
    try:
        app, _ = first.create_application("default", "default")
        first.create_limit(
            app.id, limit_id="budget", limit_name="budget", max_=100.0, limit_type="allow", threshold=0.8,
            properties=None, reset_schedule=None, now_ms=now_ms(),
        )
        event = IngestRequest.model_validate(EVENT)
        attr = Attribution(limit_ids=["budget"], dedupe_id="call-1")

        second.begin()  # the other instance's group commit: its copy of the event is written, not yet committed
        held = second.unit_of_work(lambda: Ingestor(second, Pricer()).ingest_events([(app, event, attr)]))[0]
        assert isinstance(held, dict)
        answered: list[Any] = []

        def ingest() -> None:
            try:
                answered.append(asyncio.run(committer.run_batched(Ingestor(first, Pricer()).ingest_events,
                                                                  (app, event, attr))))
            except Exception as exc:  # raised again on the test's thread
                answered.append(exc)

        racing = threading.Thread(target=ingest)
        racing.start()
        _wait_until_blocked_by_another_transaction(first)
        second.commit()
        racing.join(20)

        assert len(answered) == 1 and not isinstance(answered[0], Exception), answered
        answer = answered[0]
        assert answer["request_id"] == held["request_id"]
        assert answer["xproxy_result"]["duplicate_request"] is True
        assert held["xproxy_result"]["duplicate_request"] is False
        limit = first.limit(app.id, "budget")
        assert limit is not None
        assert limit.requests["total"] == 1
        assert limit.cost_total == pytest.approx(held["xproxy_result"]["cost"]["total"]["base"])
        assert first.read_one("SELECT count(*) FROM requests", ()) == (1,)
    finally:
        committer.close()
        first.close()
        second.close()
