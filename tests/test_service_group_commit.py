"""The group commit against another writer of the same database (another service instance): an event whose
copy another instance wrote but has not committed yet is stored once and counted once."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from payi_otel.service.attribution import Attribution
from payi_otel.service.commit import GroupCommitter
from payi_otel.service.errors import PayiApiError
from payi_otel.service.ingest import Ingestor
from payi_otel.service.models import IngestRequest
from payi_otel.service.pricing import Pricer
from payi_otel.service.store import Application, ResourceVersion, Store, now_ms

TEST_DATABASE_URL_ENV = "PAYI_OTEL_TEST_DATABASE_URL"  # set by make test-postgres (see conftest.py)
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


def _application_with_budget(store: Store, max_: float = 100.0) -> Application:
    """Application ``default`` with an allow limit ``budget``."""
    app, _ = store.create_application("default", "default")
    store.create_limit(
        app.id,
        limit_id="budget",
        limit_name="budget",
        max_=max_,
        limit_type="allow",
        threshold=0.8,
        properties=None,
        reset_schedule=None,
        now_ms=now_ms(),
    )
    return app


def test_an_event_racing_another_instances_uncommitted_copy_is_stored_and_counted_once(tmp_path):
    first, second = Store(tmp_path), Store(tmp_path)  # two instances on one database (SQLite: one file)
    committer = GroupCommitter(first)
    try:
        app = _application_with_budget(first)
        event = IngestRequest.model_validate(EVENT)
        attr = Attribution(limit_ids=["budget"], dedupe_id="call-1")

        second.begin()  # the other instance's group commit: its copy of the event is written, not yet committed
        held = second.unit_of_work(lambda: Ingestor(second, Pricer()).ingest_events([(app, event, attr, None)]))[0]
        assert isinstance(held, dict)
        answered: list[Any] = []

        def ingest() -> None:
            try:
                answered.append(
                    asyncio.run(
                        committer.run_batched(Ingestor(first, Pricer()).ingest_events, (app, event, attr, None))
                    )
                )
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


def test_a_batch_with_an_event_naming_an_unknown_limit_answers_each_event_and_counts_the_others_once(tmp_path):
    """Single events that arrived together: the limits they name are checked as they are counted; an unknown
    one has the batch run again with the checks first, which refuses that event alone and counts the rest once."""
    store = Store(tmp_path)
    try:
        app = _application_with_budget(store)
        ingestor = Ingestor(store, Pricer())
        event = IngestRequest.model_validate(EVENT)
        store.begin()
        earlier = store.unit_of_work(
            lambda: ingestor.ingest_events([(app, event, Attribution(limit_ids=["budget"], dedupe_id="seen"), None)])
        )[0]
        store.commit()
        assert isinstance(earlier, dict)
        batch = [
            (app, event, Attribution(limit_ids=["budget"]), None),
            (app, event, Attribution(limit_ids=["budget", "nope"]), None),
            (app, event, Attribution(limit_ids=["budget"], dedupe_id="seen"), None),
            (app, event, Attribution(limit_ids=["budget"]), None),
        ]
        store.begin()
        answers = store.unit_of_work(lambda: ingestor.ingest_events(batch), last=True)
        store.commit()

        stored, refused, duplicate, also_stored = answers
        assert isinstance(refused, PayiApiError) and refused.code == "invalid_limit_ids"
        assert isinstance(duplicate, dict) and duplicate["request_id"] == earlier["request_id"]
        assert duplicate["xproxy_result"]["duplicate_request"] is True
        cost = earlier["xproxy_result"]["cost"]["total"]["base"]
        for answer in (stored, also_stored):
            assert isinstance(answer, dict) and answer["xproxy_result"]["duplicate_request"] is False
            assert answer["xproxy_result"]["cost"]["total"]["base"] == pytest.approx(cost)
        limit = store.limit(app.id, "budget")
        assert limit is not None
        assert limit.requests["total"] == 3
        assert limit.cost_total == pytest.approx(3 * cost)
        assert store.read_one("SELECT count(*) FROM requests", ()) == (3,)
    finally:
        store.close()


def test_a_failing_last_unit_is_undone_alone_and_the_transaction_commits_the_others(tmp_path):
    """The unit run last (its inserts sent with the COMMIT on PostgreSQL): a savepoint it opens first is undone
    alone when it fails (on PostgreSQL it is the unit's own savepoint, not a second one), the other units commit."""
    store = Store(tmp_path)
    try:
        app = _application_with_budget(store)

        def create(limit_id: str) -> None:
            store.create_limit(
                app.id,
                limit_id=limit_id,
                limit_name=limit_id,
                max_=1.0,
                limit_type="allow",
                threshold=1.0,
                properties=None,
                reset_schedule=None,
                now_ms=now_ms(),
            )

        def failing() -> None:  # as ingest does: the unit's writes in one savepoint
            with store.transaction():
                create("undone-outer")
                with store.transaction():
                    create("undone-nested")
                raise RuntimeError("the unit fails after its writes")

        def retried_then_stored() -> None:  # a first write undone by its savepoint, the unit goes on
            with pytest.raises(RuntimeError), store.transaction():
                create("undone-first")
                raise RuntimeError("undone")
            create("kept-last")

        for last_work in (failing, retried_then_stored):
            store.begin()
            store.unit_of_work(partial(create, f"kept-before-{last_work.__name__}"))
            if last_work is failing:
                with pytest.raises(RuntimeError):
                    store.unit_of_work(last_work, last=True)
            else:
                store.unit_of_work(last_work, last=True)
            store.commit()
        kept = {row[0] for row in store.read_all("SELECT limit_id FROM limits WHERE application_id = ?", (app.id,))}
        assert kept == {"budget", "kept-before-failing", "kept-before-retried_then_stored", "kept-last"}
    finally:
        store.close()


@pytest.mark.skipif(not os.environ.get(TEST_DATABASE_URL_ENV), reason="instances share a database on PostgreSQL only")
def test_a_custom_price_another_instance_changed_prices_the_next_batch(tmp_path):
    """The instance priced a batch with its cached custom price before the cache generation arrived with the
    batch's limit update; another instance's new price version had bumped it, so the batch runs again."""
    first, second = Store(tmp_path), Store(tmp_path)
    try:
        app = _application_with_budget(first, 1e9)
        start = now_ms() - 60_000

        def price_version(resource_id: str, input_price: float, start_ms: int) -> ResourceVersion:
            units: dict[str, dict[str, float | None]] = {"text": {"input_price": input_price, "output_price": 0.0}}
            return ResourceVersion(resource_id, "custom.bench", "model", None, units, None, None, None, start_ms)

        second.create_resource_version(price_version("v1", 0.001, start), now_ms())
        event = IngestRequest.model_validate(
            {"category": "custom.bench", "resource": "model", "units": {"text": {"input": 1000, "output": 0}}}
        )
        ingestor = Ingestor(first, Pricer())

        def ingest_one() -> dict[str, Any]:
            first.begin()
            answer = first.unit_of_work(
                lambda: ingestor.ingest_events([(app, event, Attribution(limit_ids=["budget"]), None)]), last=True
            )[0]
            first.commit()
            assert isinstance(answer, dict)
            return answer

        assert ingest_one()["xproxy_result"]["cost"]["total"]["base"] == pytest.approx(1.0)
        second.create_resource_version(price_version("v2", 0.002, start + 1), now_ms())  # in force from now on
        assert ingest_one()["xproxy_result"]["cost"]["total"]["base"] == pytest.approx(2.0)
        limit = first.limit(app.id, "budget")
        assert limit is not None and limit.cost_total == pytest.approx(3.0) and limit.requests["total"] == 2
    finally:
        first.close()
        second.close()


def test_a_key_another_instance_rotated_is_refused_though_remembered(tmp_path):
    """Single ingest takes a key it authenticated before from memory and confirms it in the write: once another
    instance rotated it, its events are refused (401) and nothing of them is stored or counted, while the other
    events of the batch are."""
    first, second = Store(tmp_path), Store(tmp_path)  # two instances on one database
    try:
        app, rotated = first.create_application("default", "default")
        first.create_limit(
            app.id,
            limit_id="budget",
            limit_name="budget",
            max_=100.0,
            limit_type="allow",
            threshold=0.8,
            properties=None,
            reset_schedule=None,
            now_ms=now_ms(),
        )
        kept = first.rotate_key("default", 2)
        assert first.authenticate(rotated) == app and first.authenticate(kept) == app
        second.rotate_key("default", 1)
        remembered, still = first.known_key(rotated), first.known_key(kept)
        assert remembered is not None and still is not None and remembered[0] == app  # not read again
        event = IngestRequest.model_validate(EVENT)
        batch = [
            (app, event, Attribution(limit_ids=["budget"]), remembered[1]),
            (app, event, Attribution(limit_ids=["budget"]), still[1]),
        ]
        first.begin()
        refused, stored = first.unit_of_work(lambda: Ingestor(first, Pricer()).ingest_events(batch), last=True)
        first.commit()

        assert isinstance(refused, PayiApiError) and (refused.status, refused.code) == (401, "invalid_api_key")
        assert isinstance(stored, dict) and stored["xproxy_result"]["duplicate_request"] is False
        assert first.read_one("SELECT count(*) FROM requests", ()) == (1,)
        limit = first.limit(app.id, "budget")
        assert limit is not None and limit.requests["total"] == 1
        assert limit.cost_total == pytest.approx(stored["xproxy_result"]["cost"]["total"]["base"])
        assert first.known_key(rotated) is None  # read from the database again next time (and refused there)
    finally:
        first.close()
        second.close()


@pytest.fixture
def pg_unit_undone() -> Iterator[Any]:
    """A PostgreSQL store connection in a transaction holding row 1 of a table ``seen``, which has undone a
    savepoint ``s`` once already, as a service that has undone a unit has (psycopg clears its record of prepared
    statements only at the first ROLLBACK it meets)."""
    if not os.environ.get(TEST_DATABASE_URL_ENV):
        pytest.skip("PostgreSQL's connection only")
    from payi_otel.service.store import postgres

    conn = postgres.PgConnection(postgres.connect(os.environ[TEST_DATABASE_URL_ENV]))
    try:
        conn.execute("CREATE TEMP TABLE seen (id integer PRIMARY KEY)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO seen VALUES (?)", (1,))
        conn.execute("SAVEPOINT s")
        conn.execute("ROLLBACK TO s")
        yield conn
    finally:
        conn.close()


def test_a_statement_whose_turn_to_be_prepared_falls_in_an_aborted_pipeline_still_runs_after(pg_unit_undone):
    """A RELEASE sent with a duplicate insert that fails first (as the rows travel with the COMMIT) is skipped by
    the server: it must not be taken for a statement prepared on the server, or its next run fails."""
    from payi_otel.service.store import postgres

    conn = pg_unit_undone
    for _ in range(conn.raw.prepare_threshold or 0):  # psycopg prepares it at its next run
        conn.execute("SAVEPOINT s")
        conn.execute("RELEASE s")
    conn.execute("SAVEPOINT s")
    conn.defer("INSERT INTO seen VALUES (?)", (1,))
    with pytest.raises(postgres.psycopg.errors.UniqueViolation):
        conn.execute("RELEASE s")  # its turn to be prepared, in the pipeline the insert aborted
    conn.execute("ROLLBACK TO s")
    conn.execute("RELEASE s")
    conn.execute("SAVEPOINT s")
    conn.execute("RELEASE s")
    assert conn.execute("SELECT count(*) FROM seen").fetchone() == (1,)


def test_a_statement_with_parameters_prepared_in_an_aborted_pipeline_still_runs_after(pg_unit_undone):
    """A query with parameters whose turn to be prepared comes in a pipeline that a duplicate insert aborted: the
    server skips that preparation, so the connection must not go on taking it for prepared."""
    from payi_otel.service.store import postgres

    conn = pg_unit_undone
    count = "SELECT count(*) FROM seen WHERE id >= ?"
    for _ in range(conn.raw.prepare_threshold or 0):  # psycopg prepares it at its next run
        assert conn.execute(count, (0,)).fetchone() == (1,)
    conn.execute("SAVEPOINT s")
    conn.defer("INSERT INTO seen VALUES (?)", (1,))
    conn.defer(count, (0,), lambda rows: None)  # its preparation travels in the pipeline the insert aborts
    with pytest.raises(postgres.psycopg.errors.UniqueViolation):
        conn.execute("RELEASE s")
    conn.execute("ROLLBACK TO s")
    assert conn.execute(count, (0,)).fetchone() == (1,)
    assert conn.execute(count, (2,)).fetchone() == (0,)
    conn.execute("COMMIT")
