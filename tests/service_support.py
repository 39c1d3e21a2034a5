"""Test helper: a real local Pay-i-compatible service on 127.0.0.1 (uvicorn in a background thread).

    from service_support import running_service

    def test_x(tmp_path):
        with running_service(tmp_path) as svc:
            httpx.post(f"{svc.base_url}/api/v1/ingest", headers={"xProxy-api-key": svc.api_key}, json=...)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from payi_otel.service.server import ServiceThread


@contextmanager
def running_service(data_dir: str | os.PathLike[str]) -> Iterator[ServiceThread]:
    """Start the service over ``data_dir`` on a free loopback port; yields it with ``base_url`` and
    ``api_key`` (the default application's key) and ``data_dir``; stops it on exit."""
    with ServiceThread(Path(data_dir)) as service:
        yield service
