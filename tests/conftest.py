"""Which store the service tests run against.

With ``PAYI_OTEL_TEST_DATABASE_URL`` set (``make test-postgres`` sets it), the tests run on that
PostgreSQL database: ``PAYI_OTEL_DATABASE_URL`` points the service, the CLI and their subprocesses at a
schema of it. Every test starts with an empty store (a schema migrated once per run, emptied before each
test, which is much faster than migrating a new one); a test that uses a module-scoped fixture (a service
shared by the module's tests) shares that module's own fresh schema instead. Without it, tests use
SQLite in their data directory. Tests of what only SQLite has (its file, its upgrades) ask for
``sqlite_store``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator

import pytest

TEST_DATABASE_URL_ENV = "PAYI_OTEL_TEST_DATABASE_URL"
DATABASE_URL_ENV = "PAYI_OTEL_DATABASE_URL"
_KEPT_TABLES = ("schema_version", "cache_generation")


def _schema_url(schema: str) -> str:
    base = os.environ[TEST_DATABASE_URL_ENV]
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def _new_schema() -> Iterator[str]:
    """A new, empty schema of the test database (dropped after); yields its name."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(os.environ[TEST_DATABASE_URL_ENV], autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with psycopg.connect(os.environ[TEST_DATABASE_URL_ENV], autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session")
def _emptied_schema() -> Iterator[str | None]:
    """The schema single tests use, migrated once (None on SQLite runs)."""
    if not os.environ.get(TEST_DATABASE_URL_ENV):
        yield None
        return
    from payi_otel.service.store import Store

    with _new_schema() as schema:
        with tempfile.TemporaryDirectory() as d:
            Store(d, database_url=_schema_url(schema)).close()
        yield schema


@pytest.fixture(scope="module", autouse=True)
def _module_store_backend() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        if not os.environ.get(TEST_DATABASE_URL_ENV):
            monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
            yield
            return
        with _new_schema() as schema:
            monkeypatch.setenv(DATABASE_URL_ENV, _schema_url(schema))
            yield


@pytest.fixture(autouse=True)
def _store_backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, _emptied_schema: str | None
) -> None:
    shares_module_service = any(
        defs[-1].scope == "module" and name != "_module_store_backend"
        for name, defs in request.node._fixtureinfo.name2fixturedefs.items()
    )
    if _emptied_schema is None or shares_module_service:
        return
    import psycopg

    url = _schema_url(_emptied_schema)
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (_emptied_schema,)
            ).fetchall()
            if row[0] not in _KEPT_TABLES
        ]
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    monkeypatch.setenv(DATABASE_URL_ENV, url)


@pytest.fixture
def sqlite_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test is about the SQLite file itself: it runs on SQLite whatever the run's backend."""
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)


@pytest.fixture
def unmigrated_schema(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """PostgreSQL runs: the test's store is a new schema no service has migrated yet (a database without a
    store, or one that instances starting together migrate). Nothing on SQLite runs."""
    if not os.environ.get(TEST_DATABASE_URL_ENV):
        yield
        return
    with _new_schema() as schema:
        monkeypatch.setenv(DATABASE_URL_ENV, _schema_url(schema))
        yield
