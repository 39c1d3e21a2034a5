"""Which store the service tests run against.

With ``PAYI_OTEL_TEST_DATABASE_URL`` set (``make test-postgres`` sets it), every test gets a fresh,
empty schema of that PostgreSQL database: ``PAYI_OTEL_DATABASE_URL`` points the service, the CLI and
their subprocesses at it for the test's duration. A test that uses a module-scoped fixture (a service
shared by the module's tests) shares that module's schema instead. Without it, tests use SQLite in
their data directory. Tests of what only SQLite has (its file, its upgrades) ask for ``sqlite_store``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

TEST_DATABASE_URL_ENV = "PAYI_OTEL_TEST_DATABASE_URL"
DATABASE_URL_ENV = "PAYI_OTEL_DATABASE_URL"


@contextlib.contextmanager
def _fresh_schema(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A new schema of the test database, made the store's for the duration (dropped after)."""
    import psycopg

    base = os.environ[TEST_DATABASE_URL_ENV]
    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    try:
        yield
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="module", autouse=True)
def _module_store_backend() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        if not os.environ.get(TEST_DATABASE_URL_ENV):
            monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
            yield
            return
        with _fresh_schema(monkeypatch):
            yield


@pytest.fixture(autouse=True)
def _store_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    shares_module_service = any(
        defs[-1].scope == "module" and name != "_module_store_backend"
        for name, defs in request.node._fixtureinfo.name2fixturedefs.items()
    )
    if not os.environ.get(TEST_DATABASE_URL_ENV) or shares_module_service:
        yield
        return
    with _fresh_schema(monkeypatch):
        yield


@pytest.fixture
def sqlite_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test is about the SQLite file itself: it runs on SQLite whatever the run's backend."""
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
