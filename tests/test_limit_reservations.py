"""Reservations of worst-case cost against block limits (the store's atomic admission)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from payi_otel.service.store import LimitRecord, Store


def _store_with_limit(tmp_path: Path, max_: float, kind: str = "block") -> tuple[Store, int]:
    store = Store(tmp_path)
    app, _ = store.create_application("app", "group")
    store.create_limit(
        app.id,
        limit_id="L",
        limit_name="budget",
        max_=max_,
        limit_type=kind,
        threshold=1.0,
        properties=None,
        reset_schedule=None,
        now_ms=0,
    )
    return store, app.id


def _limit(store: Store, app_id: int, limit_id: str) -> LimitRecord:
    record = store.limit(app_id, limit_id)
    assert record is not None
    return record


def test_admissions_never_reserve_more_than_max_from_many_threads(tmp_path: Path) -> None:
    store, app_id = _store_with_limit(tmp_path, max_=1.0)
    store.create_limit(  # an allow limit beside it takes no reservation
        app_id,
        limit_id="A",
        limit_name="allow",
        max_=0.1,
        limit_type="allow",
        threshold=1.0,
        properties=None,
        reset_schedule=None,
        now_ms=0,
    )
    admitted: list[str] = []
    lock = threading.Lock()

    def caller(n: int) -> None:
        for k in range(10):
            rid = f"r{n}-{k}"
            admission = store.reserve(app_id, rid, ["L", "A"], 0.3, now_ms=1, expires_ms=10_000)
            if admission.admitted:
                with lock:
                    admitted.append(rid)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 3  # 3 x 0.3 fits in 1.0, a 4th would not
    assert store.reserved_amount(app_id, "A") == 0.0
    assert store.reserved_amount(app_id, "L") == pytest.approx(0.9)
    limit = _limit(store, app_id, "L")
    assert limit.requests["blocked"] == 80 - 3
    for rid in admitted:
        assert store.release_reservation(app_id, rid) == ["L"]
    assert store.reserved_amount(app_id, "L") == 0.0
    assert store.release_reservation(app_id, admitted[0]) == []  # released once only
    store.close()


def test_one_refusing_limit_refuses_the_call_and_reserves_nothing(tmp_path: Path) -> None:
    store, app_id = _store_with_limit(tmp_path, max_=1.0)
    store.create_limit(
        app_id,
        limit_id="S",
        limit_name="small",
        max_=0.1,
        limit_type="block",
        threshold=1.0,
        properties=None,
        reset_schedule=None,
        now_ms=0,
    )
    admission = store.reserve(app_id, "r1", ["L", "S"], 0.2, now_ms=1, expires_ms=10)
    assert admission.blocked == ["S"]
    assert store.reserved_amount(app_id, "L") == 0.0
    assert _limit(store, app_id, "S").requests["blocked"] == 1
    assert _limit(store, app_id, "L").requests["blocked_external"] == 1
    store.close()


def test_expired_reservations_are_given_back(tmp_path: Path) -> None:
    store, app_id = _store_with_limit(tmp_path, max_=1.0)
    assert store.reserve(app_id, "r1", ["L"], 0.9, now_ms=1, expires_ms=100).admitted
    assert not store.reserve(app_id, "r2", ["L"], 0.9, now_ms=50, expires_ms=200).admitted
    assert store.reserve(app_id, "r3", ["L"], 0.9, now_ms=100, expires_ms=200).admitted  # r1 expired at 100
    assert store.reserved_amount(app_id, "L") == 0.9
    store.close()
