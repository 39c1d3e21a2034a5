"""The statements of the open write transaction, on either backend: SQLite runs each at once; PostgreSQL sends
control statements, writes nobody reads and reads asked for later with the next statement (one round trip), and
large inserts by COPY."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from payi_otel.service.store.postgres import PgConnection

__all__ = ["COPY_FROM_ROWS", "Connection", "Cursor", "OpenTransactionStatements"]

COPY_FROM_ROWS = 64  # PostgreSQL: inserts of this many rows or more go by COPY (fewer: one pipelined statement each)


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the store uses of a connection: :class:`sqlite3.Connection`, or :class:`.postgres.PgConnection`."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Any, /) -> Cursor: ...
    @property
    def in_transaction(self) -> bool: ...


class OpenTransactionStatements:
    """The statements of the store connection's open transaction (see :class:`.connection.StoreBase`)."""

    _conn: Connection
    _pg: PgConnection | None
    _inserts_with_commit: bool
    _lock: threading.RLock

    def _control(self, sql: str) -> None:
        """A transaction control statement (BEGIN, SAVEPOINT, RELEASE). PostgreSQL sends it with the
        next statement, in one round trip (see :meth:`.postgres.PgConnection.defer`)."""
        if self._pg is not None:
            self._pg.defer(sql)
        else:
            self._conn.execute(sql)

    def insert_rows(self, table: str, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` (values in ``columns`` order) into ``table``, in the open transaction. PostgreSQL
        takes a large batch by COPY (see :meth:`.postgres.PgConnection.copy_rows`)."""
        if not rows:
            return
        if self._pg is not None and len(rows) >= COPY_FROM_ROWS:
            self._pg.copy_rows(table, columns, rows)
            return
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        if self._pg is not None and self._inserts_with_commit:  # see unit_of_work
            self._pg.defer_many(sql, rows)
            return
        self._conn.executemany(sql, rows)

    def query_each(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
        """The rows of each query, in the open transaction; PostgreSQL sends them all in one pipeline (one
        round trip, where running them one by one costs one each)."""
        if self._pg is not None:
            return self._pg.query_each(queries)
        return [self._conn.execute(sql, params).fetchall() for sql, params in queries]

    def execute_later(self, sql: str, params: Sequence[Any]) -> None:
        """A write whose result nobody reads, in the open transaction: PostgreSQL sends it with the next
        statement, in one round trip (its error, if any, is raised by that statement)."""
        if self._pg is not None:
            self._pg.defer(sql, params)
        else:
            self._conn.execute(sql, params)

    def query_later(self, sql: str, params: Sequence[Any]) -> Callable[[], list[tuple[Any, ...]]]:
        """A read in the open transaction whose rows are asked for later, by calling the result: PostgreSQL
        sends it with the next statement (when none went before the rows are asked for, it goes then)."""
        if self._pg is None:
            rows: list[tuple[Any, ...]] = self._conn.execute(sql, params).fetchall()
            return lambda: rows
        pg = self._pg
        arrived: list[list[tuple[Any, ...]]] = []
        pg.defer(sql, params, arrived.append)

        def result() -> list[tuple[Any, ...]]:
            if not arrived:
                with self._lock:
                    pg.flush()
                if not arrived:  # the pipeline that carried it failed before its answer: ask on its own
                    arrived.append(self._conn.execute(sql, params).fetchall())
            return arrived[0]

        return result
