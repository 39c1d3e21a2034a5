"""What an instance caches from the database (custom prices, use case definitions), kept current across
instances: on PostgreSQL every change of such data bumps a generation counter, which each transaction of
the writer asks for with its first statement (no round trip of its own); a change another instance made
drops the cached copy before it is next used."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from payi_otel.service.store.postgres import PgConnection
    from payi_otel.service.store.statements import Connection

GENERATION = "SELECT generation FROM cache_generation"


class CacheGenerations:
    """The cache generation part of the store's connection (see :class:`.connection.StoreBase`)."""

    _pg: PgConnection | None
    _conn: Connection
    _lock: threading.RLock

    def __init__(self) -> None:
        self._generation = -1  # PostgreSQL: the cache generation the cached data belongs to
        self._generation_due = False  # PostgreSQL: asked for with the next statement (see _cache_usable)
        self._early_use: list[bool] | None = None  # [cache used before the generation came, it was stale]

    def _forget_cached(self) -> None:
        """Drop what areas cache from the database; called on every rollback (it may undo their writes)."""

    def _cached_data_changed(self) -> None:
        """Called (inside the writing transaction) by areas that change data they cache.

        On PostgreSQL other instances cache it too: the change bumps a generation they check (see
        :meth:`_check_cached`), so they drop their copy before they next use it.
        """
        if self._pg is not None:
            self._generation = self._conn.execute(
                "UPDATE cache_generation SET generation = generation + 1 RETURNING generation"
            ).fetchone()[0]

    def _check_cached(self) -> None:
        """PostgreSQL: drop cached data another instance changed since it was read (one small query)."""
        if self._pg is None:
            return
        with self._lock:
            self._generation_read(self._conn.execute(GENERATION).fetchall())

    def _generation_read(self, rows: list[tuple[Any, ...]]) -> None:
        self._generation_due = False
        generation = rows[0][0]
        if generation != self._generation:
            self._forget_cached()
            self._generation = generation
            if self._early_use is not None:
                self._early_use[1] = True

    def _cache_usable(self) -> None:
        """Called by areas before they use what they cache, in a group commit's transaction: on PostgreSQL
        its begin asked for the generation together with the transaction's first statement (no round trip
        of its own); if that has not been sent yet, it is now."""
        if self._pg is None or not self._generation_due:
            return
        if self._early_use is not None:  # see cache_checked_later
            self._early_use[0] = True
            return
        with self._lock:
            self._pg.flush()
            if self._generation_due:  # the pipeline that carried it failed: ask on its own
                self._check_cached()

    @contextmanager
    def cache_checked_later(self) -> Iterator[None]:
        """Inside, areas use what they cache before the transaction's cache generation is known (on PostgreSQL
        it then travels with the next statement the work sends, not in a round trip of its own). The work
        asks :meth:`cache_was_current` before it writes what it made of that data, and if not runs again."""
        self._early_use = [False, False]
        try:
            yield
        finally:
            self._early_use = None

    def cache_was_current(self) -> bool:
        """Inside :meth:`cache_checked_later`: whether cached data used so far was current (False: it
        was dropped, ``CheckFirst``). Asks for the generation now if no statement has carried it yet."""
        early = self._early_use
        if early is None or not early[0]:
            return True
        if self._generation_due:
            self._early_use = None
            try:
                self._cache_usable()
            finally:
                self._early_use = early
        return not self._generation_due and not early[1]
