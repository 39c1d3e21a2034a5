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

from payi_otel.service.server import ServiceThread
from payi_otel.service.store import DB_FILE


@contextmanager
def running_service(data_dir: str | os.PathLike[str], **app_options: Any) -> Iterator[ServiceThread]:
    """Start the service over ``data_dir`` on a free loopback port; yields it with ``base_url`` and
    ``api_key`` (the default application's key) and ``data_dir``; stops it on exit. ``app_options``
    go to ``create_app`` (``clock``, ``webhook_url``, ``reset_check_interval``)."""
    with ServiceThread(Path(data_dir), **app_options) as service:
        yield service


@contextmanager
def read_only_store(data_dir: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the service's SQLite file (rows as ``sqlite3.Row``)."""
    conn = sqlite3.connect(f"file:{Path(data_dir) / DB_FILE}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def stored_requests(data_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every stored request (oldest first) as a dict; its JSON columns ``units``, ``properties`` and
    ``provider_data`` decoded (``{}`` when empty)."""
    with read_only_store(data_dir) as conn:
        rows = [dict(row) for row in conn.execute("SELECT * FROM requests ORDER BY id")]
    for row in rows:
        for col in ("units", "properties", "provider_data"):
            row[col] = json.loads(row[col] or "{}")
    return rows
