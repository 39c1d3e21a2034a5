"""Several `payi-otel serve` processes on one PostgreSQL database, as behind a load balancer.

Runs in ``make test-postgres`` (which sets ``PAYI_OTEL_TEST_DATABASE_URL``; conftest gives each test a
fresh schema): two instances started at the same moment migrate the empty database once between them,
take eight clients' concurrent ingest naming one limit and racing on the same provider response ids,
and end with the limit's totals exactly the sum of what was stored, each id stored once; the same holds
for large bulk bodies sent to both at once. A SIGKILLed
instance loses no event it acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
from service_support import read_only_store

from payi_otel.service.commit import GroupCommitter
from payi_otel.service.store import Store
from payi_otel.service.store.connection import resolve_database_url

pytestmark = pytest.mark.skipif(
    not os.environ.get("PAYI_OTEL_TEST_DATABASE_URL"), reason="needs PostgreSQL: runs in make test-postgres"
)

GPT4O = {"category": "system.openai", "resource": "gpt-4o"}
CLIENTS = 8
EVENTS_PER_CLIENT = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def instances(tmp_path: Path, count: int) -> Iterator[list[tuple[subprocess.Popen[str], str]]]:
    """``count`` service processes started together on the test's database: (process, base URL)."""
    procs = []
    for i in range(count):
        port = _free_port()
        env = {**os.environ, "PAYI_OTEL_DATA_DIR": str(tmp_path / f"instance{i}"), "PAYI_OTEL_PORT": str(port)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "payi_otel.cli", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append((proc, f"http://127.0.0.1:{port}"))
    try:
        for proc, base_url in procs:
            line = proc.stdout.readline() if proc.stdout else ""
            assert f"listening on {base_url}" in line, (line, proc.stderr.read() if proc.stderr else "")
        yield procs
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


def _default_key(tmp_path: Path) -> str:
    """The default application's key: exactly one of the instances created it (and wrote the file)."""
    files = [p for p in tmp_path.glob("instance*/default-api-key") if p.exists()]
    assert len(files) == 1, files
    return files[0].read_text().strip()


def test_two_instances_keep_limit_totals_exact_and_dedupe_across_them(tmp_path, unmigrated_schema):
    assert resolve_database_url() is not None
    with instances(tmp_path, 2) as procs:
        urls = [u for _, u in procs]
        key = _default_key(tmp_path)
        headers = {"xProxy-api-key": key}
        r = httpx.post(f"{urls[0]}/api/v1/limits", headers=headers, json={"limit_name": "shared", "max": 1000.0})
        assert r.status_code == 201, r.text
        limit_id = r.json()["limit"]["limit_id"]
        answers: list[list[dict]] = [[] for _ in range(CLIENTS)]
        start = threading.Barrier(CLIENTS)

        def client(n: int) -> None:
            # clients n and n + 4 send the same ids in the same order, to different instances: they race
            ids = [f"resp-{n % 4}-{i}" for i in range(EVENTS_PER_CLIENT)]
            base = urls[n // 4]
            with httpx.Client(base_url=base, headers={**headers, "xProxy-Limit-IDs": limit_id}, timeout=30) as c:
                start.wait()
                for i, rid in enumerate(ids):
                    tokens = 100 + 10 * (n % 4) + i  # the same id always has the same usage
                    event = {**GPT4O, "provider_response_id": rid, "units": {"text": {"input": tokens, "output": 7}}}
                    resp = c.post("/api/v1/ingest", json=event)
                    assert resp.status_code == 200, resp.text
                    answers[n].append(resp.json())

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(len(a) == EVENTS_PER_CLIENT for a in answers)

        # dedupe across instances: each id has one request; its two senders got the same request id
        for n in range(4):
            for mine, theirs in zip(answers[n], answers[n + 4], strict=True):
                assert mine["xproxy_result"]["request_id"] == theirs["xproxy_result"]["request_id"]
        with read_only_store(tmp_path) as db:
            stored = db.execute("SELECT provider_response_id, cost_total FROM requests").fetchall()
        unique_ids = {f"resp-{n}-{i}" for n in range(4) for i in range(EVENTS_PER_CLIENT)}
        assert sorted(r[0] for r in stored) == sorted(unique_ids)

        # the limit counted each stored request once, with exactly the cost stored for it
        expected_cost = sum(r[1] for r in stored)
        for base in urls:  # either instance reads the same totals
            limit = httpx.get(f"{base}/api/v1/limits/{limit_id}", headers=headers).json()["limit"]
            assert limit["totals"]["requests"]["total"] == len(unique_ids)
            assert limit["totals"]["cost"]["total"]["base"] == pytest.approx(expected_cost, rel=1e-12)
        # and each answer's cost is the stored one (the duplicate answered from the stored request)
        cost_by_id = dict(stored)
        for n in range(CLIENTS):
            for i, body in enumerate(answers[n]):
                assert body["xproxy_result"]["cost"]["total"]["base"] == pytest.approx(
                    cost_by_id[f"resp-{n % 4}-{i}"], rel=1e-12
                )


BULK_ROUNDS = 4
BULK_ITEMS = 100  # enough for a bulk body's rows to go to the database as one COPY


def test_bulk_bodies_racing_on_two_instances_store_each_id_once(tmp_path, unmigrated_schema):
    """The same large bulk body sent to both instances at once: each id is stored by one of them, the
    other reports it as a duplicate, and the limit counts each stored request once."""
    with instances(tmp_path, 2) as procs:
        urls = [u for _, u in procs]
        headers = {"xProxy-api-key": _default_key(tmp_path)}
        r = httpx.post(f"{urls[0]}/api/v1/limits", headers=headers, json={"limit_name": "bulk", "max": 1000.0})
        assert r.status_code == 201, r.text
        limit_id = r.json()["limit"]["limit_id"]
        for round_ in range(BULK_ROUNDS):
            body = [
                {
                    **GPT4O,
                    "provider_response_id": f"bulk-{round_}-{i}",
                    "limit_ids": [limit_id],
                    "units": {"text": {"input": 50 + i, "output": 3}},
                }
                for i in range(BULK_ITEMS)
            ]
            start = threading.Barrier(2)
            answers: list[dict] = []

            def send(
                base: str, body: list[dict] = body, start: threading.Barrier = start, answers: list[dict] = answers
            ) -> None:
                with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
                    start.wait()
                    resp = c.post("/api/v1/ingest/bulk", json=body)
                    assert resp.status_code == 200, resp.text
                    answers.append(resp.json())

            threads = [threading.Thread(target=send, args=(u,)) for u in urls]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(answers) == 2
            for answer in answers:
                assert answer["error_count"] == 0 and answer["total_count"] == BULK_ITEMS
                assert answer["ingest_count"] + answer["duplicate_count"] == BULK_ITEMS
            assert sum(a["ingest_count"] for a in answers) == BULK_ITEMS  # each id stored by one of them
        with read_only_store(tmp_path) as db:
            stored = db.execute("SELECT provider_response_id, cost_total FROM requests").fetchall()
        assert sorted(r[0] for r in stored) == sorted(
            f"bulk-{n}-{i}" for n in range(BULK_ROUNDS) for i in range(BULK_ITEMS)
        )
        limit = httpx.get(f"{urls[1]}/api/v1/limits/{limit_id}", headers=headers).json()["limit"]
        assert limit["totals"]["requests"]["total"] == BULK_ROUNDS * BULK_ITEMS
        assert limit["totals"]["cost"]["total"]["base"] == pytest.approx(sum(r[1] for r in stored), rel=1e-12)


def test_sigkill_of_one_instance_under_load_loses_no_acknowledged_event(tmp_path):
    with instances(tmp_path, 2) as procs:
        key = _default_key(tmp_path)
        (victim, victim_url), (_, survivor_url) = procs
        acked: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def sender(base: str) -> None:
            with httpx.Client(base_url=base, headers={"xProxy-api-key": key}, timeout=10) as c:
                while not stop.is_set():
                    event = {**GPT4O, "units": {"text": {"input": 10, "output": 1}}}
                    try:
                        r = c.post("/api/v1/ingest", json=event)
                    except httpx.HTTPError:
                        if base == victim_url:
                            return  # the victim is gone
                        raise
                    if r.status_code == 200:
                        with lock:
                            acked.append(r.json()["xproxy_result"]["request_id"])

        threads = [threading.Thread(target=sender, args=(u,)) for u in (victim_url, survivor_url) * 4]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 400 and time.monotonic() < deadline:
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        time.sleep(0.3)  # the survivor keeps taking events meanwhile
        stop.set()
        for t in threads:
            t.join()
        assert len(acked) >= 400
        with read_only_store(tmp_path) as db:
            stored = {r[0] for r in db.execute("SELECT request_id FROM requests").fetchall()}
        missing = set(acked) - stored
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged events were lost"


def test_group_commit_answers_only_once_its_commit_is_flushed_to_the_wal(tmp_path):
    # The group commit's transaction commits without waiting for the WAL flush (so the limits' row locks are
    # released before it, not held through it while another instance waits for them); its callers must still be
    # answered only once the flush is done.
    store = Store(tmp_path)
    committer = GroupCommitter(store)
    try:

        def unit() -> str:
            with store.transaction() as c:
                c.execute("INSERT INTO groups (name, created_ms) VALUES (?, ?)", ("flushed", 1))
                lsn: str = c.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]  # before its COMMIT
                return lsn

        written = asyncio.run(committer.run(unit))
        url = resolve_database_url()
        assert url is not None
        with psycopg.connect(url, autocommit=True) as monitor:
            flushed = monitor.execute("SELECT pg_current_wal_flush_lsn() > %s::pg_lsn", (written,)).fetchone()[0]
            assert flushed, "answered before the WAL holding its commit was flushed"
            assert monitor.execute("SELECT count(*) FROM groups WHERE name = 'flushed'").fetchone()[0] == 1
        with store.transaction() as c:  # only the group commit's transactions commit that way
            assert c.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    finally:
        committer.close()
        store.close()
