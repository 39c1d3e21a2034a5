"""Reads of committed data that never wait for a write in progress: SQLite's reader connection (WAL readers
never wait for the writer), PostgreSQL's pool of reader connections."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from payi_otel.service.store.postgres import PgReaders


class CommittedReads:
    """The reads of committed data of the store's connection (see :class:`.connection.StoreBase`)."""

    path: Path
    _pg_readers: PgReaders | None
    _reader: sqlite3.Connection
    _reader_lock: threading.Lock

    def read_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One row of committed data, without waiting for a write in progress."""
        if self._pg_readers is not None:
            with self._pg_readers.connection() as conn:
                found: tuple[Any, ...] | None = conn.execute(sql, params).fetchone()
            return found
        with self._reader_lock:
            cursor = self._reader.execute(sql, params)
            try:
                row: tuple[Any, ...] | None = cursor.fetchone()
            finally:
                cursor.close()  # ends the read: an open one would keep the WAL from starting over
        return row

    def read_all(self, sql: str, params: tuple[Any, ...] | list[Any]) -> list[tuple[Any, ...]]:
        """Every row of committed data, without waiting for a write in progress."""
        if self._pg_readers is not None:
            with self._pg_readers.connection() as conn:
                return conn.execute(sql, params).fetchall()
        with self._reader_lock:
            cursor = self._reader.execute(sql, params)
            try:
                rows: list[tuple[Any, ...]] = cursor.fetchall()
            finally:
                cursor.close()
        return rows

    def read_stream(self, sql: str, params: list[Any]) -> Iterator[tuple[Any, ...]]:
        """The rows of a long read (reports), one at a time, on a connection of its own."""
        if self._pg_readers is not None:
            with self._pg_readers.connection() as conn:
                yield from conn.stream(sql, params)
            return
        reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10.0)
        try:
            yield from reader.execute(sql, params)
        finally:
            reader.close()
