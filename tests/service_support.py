"""Test helper: a real local Pay-i-compatible service on 127.0.0.1 (uvicorn in a background thread).

from service_support import running_service

def test_x(tmp_path):
    with running_service(tmp_path) as svc:
        httpx.post(f"{svc.base_url}/api/v1/ingest", headers={"xProxy-api-key": svc.api_key}, json=...)
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from payi_otel.service.server import ServiceThread
from payi_otel.service.store import DB_FILE
from payi_otel.service.store.connection import resolve_database_url
from payi_otel.service.store.postgres import PgConnection


@contextmanager
def running_service(data_dir: str | os.PathLike[str], **app_options: Any) -> Iterator[ServiceThread]:
    """Start the service over ``data_dir`` on a free loopback port; yields it with ``base_url`` and
    ``api_key`` (the default application's key) and ``data_dir``; stops it on exit. ``app_options``
    go to ``create_app`` (``clock``, ``webhook_url``, ``reset_check_interval``)."""
    with ServiceThread(Path(data_dir), **app_options) as service:
        yield service


@contextmanager
def read_only_store(data_dir: str | os.PathLike[str], *, write: bool = False) -> Iterator[Any]:
    """A connection to the service's store: SQLite's file (read-only unless ``write``; each statement
    commits), or (with ``PAYI_OTEL_DATABASE_URL``) the PostgreSQL database; either takes SQL with ``?``
    placeholders and gives rows as tuples."""
    url = resolve_database_url()
    if url is not None:
        with psycopg.connect(url, autocommit=True) as pg:
            yield PgConnection(pg)
        return
    mode = "rw" if write else "ro"
    conn = sqlite3.connect(f"file:{Path(data_dir) / DB_FILE}?mode={mode}", uri=True, timeout=5, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def stored_requests(data_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every stored request (oldest first) as a dict; its JSON columns ``units``, ``properties`` and
    ``provider_data`` decoded (``{}`` when empty)."""
    with read_only_store(data_dir) as conn:
        cursor = conn.execute("SELECT * FROM requests ORDER BY id")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        for col in ("units", "properties", "provider_data"):
            row[col] = json.loads(row[col] or "{}")
    return rows
