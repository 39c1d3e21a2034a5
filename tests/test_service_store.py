"""The service's SQLite store on its own: upgrades of older files, a bounded write-ahead log, and reads
that see only committed data."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from payi_otel.service.ingest_results import xproxy_result
from payi_otel.service.store import REQUEST_COLUMNS, ReportQuery, Store, StoreError, new_id, now_ms

# Version 1 of the file: the tables that changed since, as it created them, and those they refer to.
_VERSION_1_TABLES = """
CREATE TABLE groups (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL);
CREATE TABLE applications (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    group_id INTEGER NOT NULL REFERENCES groups(id),
    created_ms INTEGER NOT NULL
);
INSERT INTO groups VALUES (1, 'default', 1);
INSERT INTO applications VALUES (1, 'default', 1, 1);
CREATE TABLE use_case_instances (
    application_id INTEGER NOT NULL REFERENCES applications(id),
    use_case_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    properties TEXT,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (application_id, use_case_id)
);
CREATE TABLE requests (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    application_id INTEGER NOT NULL REFERENCES applications(id),
    event_ms INTEGER NOT NULL,
    ingest_ms INTEGER NOT NULL,
    category TEXT NOT NULL,
    resource TEXT,
    resource_id TEXT,
    provider_response_id TEXT,
    dedupe_id TEXT,
    use_case_name TEXT,
    use_case_id TEXT,
    use_case_version INTEGER,
    use_case_step TEXT,
    user_id TEXT,
    account_name TEXT,
    resource_scope TEXT,
    http_status_code INTEGER,
    failed INTEGER NOT NULL DEFAULT 0,
    latency_ms INTEGER,
    ttft_ms INTEGER,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    units TEXT NOT NULL,
    cost_input REAL,
    cost_output REAL,
    cost_total REAL,
    unpriced_reason TEXT,
    limit_ids TEXT,
    properties TEXT,
    provider_data TEXT,
    result TEXT NOT NULL
);
CREATE TABLE request_tags (
    request_row INTEGER NOT NULL REFERENCES requests(id),
    tag TEXT NOT NULL
);
PRAGMA user_version=1;
"""

_PRICED = {
    "request_id": "01a20000-0000-7000-8000-000000000001",
    "use_case_name": "summarize",
    "use_case_id": "inst-1",
    "use_case_version": 1,
    "use_case_step": None,
    "user_id": "jane",
    "account_name": None,
    "resource_id": "gp-0123456789abcdef",
    "cost": {
        "currency": "usd",
        "input": {"base": 0.00025},
        "output": {"base": 0.0001},
        "total": {"base": 0.00035, "overrun_base": 0.0},
    },
    "unknown_units": {"guardrail": {"input": 3}},
    "limits": {},
    "duplicate_request": False,
    "request_tags": ["alpha", "beta"],
}
_UNPRICED = {
    "request_id": "01a20000-0000-7000-8000-000000000002",
    "use_case_name": None,
    "use_case_id": None,
    "use_case_version": None,
    "use_case_step": None,
    "user_id": None,
    "account_name": None,
    "resource_id": None,
    "cost": None,
    "unknown_units": {"text": {"input": 5}},
    "limits": {},
    "duplicate_request": False,
    "warnings": ["unpriced: no price for resource 'mystery' in category 'system.openai'"],
}


def _write_version_1_file(path):
    conn = sqlite3.connect(path)
    conn.executescript(_VERSION_1_TABLES)
    conn.execute(
        "INSERT INTO use_case_instances VALUES (1, 'inst-1', 'summarize', 1, ?, 1)", (json.dumps({"team": "red"}),)
    )
    insert = (
        "INSERT INTO requests (id, request_id, application_id, event_ms, ingest_ms, category, resource, resource_id,"
        " use_case_name, use_case_id, use_case_version, user_id, units, cost_input, cost_output, cost_total,"
        " unpriced_reason, result) VALUES (?, ?, 1, 1000, 1000, 'system.openai', ?, ?, ?, ?, ?, ?, '{}', ?, ?, ?, ?, ?)"
    )
    conn.execute(
        insert,
        (
            1,
            _PRICED["request_id"],
            "gpt-4o",
            _PRICED["resource_id"],
            "summarize",
            "inst-1",
            1,
            "jane",
            0.00025,
            0.0001,
            0.00035,
            None,
            json.dumps(_PRICED),
        ),
    )
    conn.execute(
        insert,
        (
            2,
            _UNPRICED["request_id"],
            "mystery",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            "no price for resource 'mystery' in category 'system.openai'",
            json.dumps(_UNPRICED),
        ),
    )
    conn.executemany("INSERT INTO request_tags VALUES (1, ?)", [("alpha",), ("beta",)])
    conn.commit()
    conn.close()


def test_a_version_1_file_is_upgraded_without_losing_anything(tmp_path, sqlite_store):
    _write_version_1_file(tmp_path / "payi.db")
    store = Store(tmp_path)
    try:
        assert store.application("default").id == 1
        for old in (_PRICED, _UNPRICED):
            # a priced result with unknown units now also warns that they are not in the cost
            extra = {"warnings": ["units without a price, not in the cost: guardrail"]} if old["cost"] else {}
            assert xproxy_result(store.request_result(1, request_id=old["request_id"])) == {**old, **extra}
        by_tag = {(tag, cost) for tag, _row, cost, *_ in store.report_rows(["tag"], ReportQuery())}
        assert by_tag == {(None, None), ("alpha", 0.00035), ("beta", 0.00035)}
        assert store.use_case_instance_properties(1, "inst-1") == {"team": "red"}
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / "payi.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    columns = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
    conn.close()
    assert "request_tags" not in tables and "result" not in columns
    Store(tmp_path).close()  # opening an upgraded file again changes nothing


def _row(application_id: int) -> tuple:
    values = dict.fromkeys(REQUEST_COLUMNS)
    values.update(
        request_id=new_id(),
        application_id=application_id,
        event_ms=now_ms(),
        ingest_ms=now_ms(),
        category="system.openai",
        failed=0,
        input_tokens=1,
        output_tokens=1,
        units="{}",
    )
    return tuple(values[c] for c in REQUEST_COLUMNS)


def test_write_ahead_log_stays_bounded_under_constant_writes(tmp_path, sqlite_store):
    store = Store(tmp_path)
    wal = tmp_path / "payi.db-wal"
    restart_frames = 64  # 256 KiB
    store.start_background_checkpoints(interval=0.01, restart_frames=restart_frames)
    try:
        app, _ = store.create_application("default", "default")
        written = 0
        largest = 0
        deadline = time.monotonic() + 60.0  # a loaded machine writes slower; the count, not the time, matters
        while written < 20_000 and time.monotonic() < deadline:  # never a pause without an open write transaction
            store.begin()
            store.add_requests([_row(app.id) for _ in range(50)])
            store.commit()
            written += 50
            largest = max(largest, wal.stat().st_size)
        # Without restarting the log it would hold every page of these 20,000 writes.
        assert written >= 20_000
        assert largest < 40 * restart_frames * 4096, (largest, written)
        assert store.applications()[0]["requests"] == written
    finally:
        store.close()


def test_use_case_reads_outside_the_write_see_committed_data_only(tmp_path):
    """API reads (another thread than the writer) never see a write the group commit may still undo;
    the write itself sees its own changes."""
    store = Store(tmp_path)
    try:
        app, _ = store.create_application("default", "default")

        def elsewhere(read):
            seen = []

            def run():
                try:
                    seen.append(read())
                except Exception as exc:  # raised again on the test's thread
                    seen.append(exc)

            thread = threading.Thread(target=run)
            thread.start()
            thread.join(10)
            if isinstance(seen[0], Exception):
                raise seen[0]
            return seen[0]

        def reads():
            return (
                store.definition(app.id, "draft"),
                [d.name for d in store.list_definitions(app.id, name=None, ascending=True, after=None, count=10)],
            )

        store.begin()  # the writer's shared transaction, as the group commit opens it
        created = store.create_definition(app.id, "draft", "first draft", None, None, now_ms())
        instance = store.create_instance(app.id, "draft", now_ms())
        assert store.definition(app.id, "draft") == created  # the write sees its own changes
        assert elsewhere(reads) == (None, [])
        with pytest.raises(StoreError) as refused:
            elsewhere(lambda: store.instance(app.id, "draft", instance.use_case_id))
        assert refused.value.code == "use_case_instance_not_found"
        store.commit()
        assert elsewhere(reads) == (created, ["draft"])
        assert elsewhere(lambda: store.instance(app.id, "draft", instance.use_case_id)) == instance
    finally:
        store.close()
