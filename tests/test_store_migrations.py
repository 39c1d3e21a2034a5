"""A store created by the previous schema version is migrated on start with its data kept, on whichever
backend the run uses (SQLite by default, PostgreSQL under ``make test-postgres``); stores starting
together on it migrate it once.

The version 7 store is built as that release built it: its schema script (tests/data/store_schema_v7.sql,
in SQLite's spelling, translated for PostgreSQL by the store's own dialect layer) and its version mark.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from payi_otel.service.store import Store
from payi_otel.service.store.dialect import postgres_ddl, postgres_sql
from payi_otel.service.store.schema import SCHEMA_VERSION, statements

_V7_SCRIPT = (Path(__file__).parent / "data" / "store_schema_v7.sql").read_text()
_SQLITE_PART, _POSTGRES_PART = _V7_SCRIPT.split("-- PostgreSQL only\n")
_OLD_VERSION = 7
_REQUEST_IDS = ("01a20000-0000-7000-8000-0000000000a1", "01a20000-0000-7000-8000-0000000000a2")
# Data of the old store, in portable SQL (the same statements on both backends).
_DATA = [
    ("INSERT INTO groups (id, name, created_ms) VALUES (?, ?, ?)", (1, "default", 1000)),
    ("INSERT INTO applications (id, name, group_id, created_ms) VALUES (?, ?, ?, ?)", (1, "default", 1, 1000)),
    (
        "INSERT INTO limits (limit_id, application_id, limit_name, max, limit_type, threshold, created_ms, updated_ms,"
        " cost_input, cost_output, cost_total, req_ok, req_total) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("budget", 1, "team budget", 1.0, "block", 1.0, 1000, 1000, 0.25, 0.15, 0.4, 2, 2),
    ),
    *(
        (
            "INSERT INTO requests (request_id, application_id, event_ms, ingest_ms, category, resource, units,"
            " cost_input, cost_output, cost_total, limit_states, input_tokens, output_tokens)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rid,
                1,
                2000 + i,
                2000 + i,
                "system.openai",
                "gpt-4o-mini",
                '{"text": {"input": 10, "output": 5}}',
                0.125,
                0.075,
                0.2,
                '{"budget": "ok"}',
                10,
                5,
            ),
        )
        for i, rid in enumerate(_REQUEST_IDS)
    ),
]


def _database_url() -> str | None:
    return os.environ.get("PAYI_OTEL_DATABASE_URL") or None


def _build_version_7(data_dir: Path, url: str | None) -> None:
    if url is None:
        conn = sqlite3.connect(data_dir / "payi.db")
        conn.executescript(_SQLITE_PART)
        for sql, params in _DATA:
            conn.execute(sql, params)
        conn.execute(f"PRAGMA user_version={_OLD_VERSION}")
        conn.commit()
        conn.close()
        return
    import psycopg

    with psycopg.connect(url) as pg:  # one transaction, committed on exit
        for statement in statements(postgres_ddl(_SQLITE_PART + _POSTGRES_PART)):
            pg.execute(statement)
        pg.execute("CREATE TABLE schema_version (version BIGINT NOT NULL)")
        pg.execute("INSERT INTO schema_version VALUES (%s)", (_OLD_VERSION,))
        for sql, params in _DATA:
            pg.execute(postgres_sql(sql)[0], params)


def _read(data_dir: Path, url: str | None, sql: str) -> list[tuple[Any, ...]]:
    if url is None:
        conn = sqlite3.connect(data_dir / "payi.db")
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as pg:
        return pg.execute(sql).fetchall()


def _schema_versions(data_dir: Path, url: str | None) -> list[int]:
    if url is None:
        return [row[0] for row in _read(data_dir, url, "PRAGMA user_version")]
    return [row[0] for row in _read(data_dir, url, "SELECT version FROM schema_version")]


@pytest.fixture
def version_7_store(tmp_path: Path, unmigrated_schema: None) -> tuple[Path, str | None]:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    url = _database_url()
    _build_version_7(data_dir, url)
    assert SCHEMA_VERSION == _OLD_VERSION + 1  # this test migrates from the version before the current one
    return data_dir, url


_PER_EVENT_REFERENCES = [("requests", "applications"), ("use_case_instances", "applications")]


def _per_event_foreign_keys(data_dir: Path, url: str | None) -> list[tuple[str, str]]:
    """The foreign keys of the tables ingest writes a row to per event: (table, referenced table)."""
    if url is None:
        return [
            (table, str(row[2]))
            for table, _ in _PER_EVENT_REFERENCES
            for row in _read(data_dir, url, f"PRAGMA foreign_key_list({table})")
        ]
    return sorted(
        (str(table), str(target))
        for table, target in _read(
            data_dir,
            url,
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint WHERE contype = 'f'"
            " AND conrelid::regclass::text IN ('requests', 'use_case_instances')",
        )
    )


def test_a_new_store_keeps_foreign_keys_per_event_on_sqlite_only(tmp_path: Path, unmigrated_schema: None) -> None:
    """PostgreSQL: no foreign key check (a trigger and a row lock per inserted row) on the rows ingest writes."""
    url = _database_url()
    Store(tmp_path, database_url=url).close()
    assert _per_event_foreign_keys(tmp_path, url) == ([] if url else _PER_EVENT_REFERENCES)
    if url is not None:  # the versions 7 and 8 of the schema had them, as SQLite's has
        assert _read(tmp_path, url, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'")[0][0] > 0


def _check_migrated_and_kept(store: Store, data_dir: Path, url: str | None) -> None:
    assert _schema_versions(data_dir, url) == [SCHEMA_VERSION]
    app = store.application("default")
    assert app.id == 1
    limit = store.limit(app.id, "budget")
    assert limit is not None
    totals = limit.totals()
    assert (limit.limit_name, limit.max, limit.limit_type) == ("team budget", 1.0, "block")
    assert totals["cost"]["total"]["base"] == pytest.approx(0.4)
    assert (totals["requests"]["ok"], totals["requests"]["total"]) == (2, 2)
    for rid in _REQUEST_IDS:
        found = store.request_result(app.id, request_id=rid)
        assert found is not None and found.request_id == rid
        assert found.cost_total == pytest.approx(0.2)
    assert _read(data_dir, url, "SELECT count(*) FROM requests") == [(2,)]
    assert _per_event_foreign_keys(data_dir, url) == ([] if url else _PER_EVENT_REFERENCES)
    # what version 8 added works on the kept data: the old limit takes a reservation of its remaining budget
    assert store.reserved_amount(app.id, "budget") == 0
    admitted = store.reserve(app.id, "call-1", ["budget"], 0.5, now_ms=3000, expires_ms=60_000)
    assert admitted.held == ["budget"]
    refused = store.reserve(app.id, "call-2", ["budget"], 0.2, now_ms=3000, expires_ms=60_000)  # 0.4 + 0.5 + 0.2 > 1
    assert refused.blocked == ["budget"]
    assert store.reserved_amount(app.id, "budget") == pytest.approx(0.5)


def test_a_store_of_the_previous_version_is_migrated_on_start_with_its_data(version_7_store):
    data_dir, url = version_7_store
    assert _schema_versions(data_dir, url) == [_OLD_VERSION]
    store = Store(data_dir, database_url=url)
    try:
        _check_migrated_and_kept(store, data_dir, url)
    finally:
        store.close()
    Store(data_dir, database_url=url).close()  # a current store is opened as it is
    assert _schema_versions(data_dir, url) == [SCHEMA_VERSION]
    assert _read(data_dir, url, "SELECT count(*) FROM requests") == [(2,)]


def test_stores_starting_together_on_an_old_store_migrate_it_once(version_7_store):
    data_dir, url = version_7_store
    starters = 4
    barrier = threading.Barrier(starters)
    opened: list[Store] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            opened.append(Store(data_dir, database_url=url))
        except BaseException as exc:  # reported below, with the others'
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert len(opened) == starters
        _check_migrated_and_kept(opened[0], data_dir, url)
    finally:
        for store in opened:
            store.close()
