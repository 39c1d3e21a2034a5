"""The PostgreSQL backend: connections (psycopg 3 and its pool) that take the store's SQL as written.

:class:`PgConnection` offers the part of :class:`sqlite3.Connection` the store uses (``execute``,
``executemany``, ``in_transaction``), translating each statement once (see :mod:`.dialect`). It runs
in autocommit mode: the store opens and ends its transactions (and savepoints) itself, as on SQLite.
psycopg prepares a statement on the server after a few executions, so the hot statements of ingest
are parsed once per connection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper
from psycopg_pool import ConnectionPool

from payi_otel.service.store.dialect import postgres_sql

URL_SCHEMES = ("postgresql://", "postgres://")
# Transient outcomes of concurrent writers from several instances: the unit of work is run again.
RETRYABLE = (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
INTEGRITY_ERRORS = (psycopg.errors.IntegrityError,)
DATABASE_ERRORS = (psycopg.Error,)
# A statement run in a transaction of its own (autocommit) that writes to the WAL (an empty transactional message,
# which any role may write and nothing applies): committing it waits for the WAL flush up to its commit record,
# so for every transaction committed before it. (A transaction that writes nothing would not wait.)
_FLUSH_BARRIER = "SELECT pg_logical_emit_message(true, 'payi-otel', '')"
RowsCallback = Callable[[list[tuple[Any, ...]]], None]


def is_postgres_url(url: str) -> bool:
    return url.startswith(URL_SCHEMES)


def display_url(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _prepare(params: Sequence[Any]) -> bool | None:
    """Whether psycopg may prepare a statement on the server (None: after a few runs, as it does by default).

    Never one without parameters (BEGIN, SAVEPOINT, RELEASE, COMMIT, a counter's read: nothing to gain in
    parsing them once). psycopg records a statement as prepared when it sends its preparation, without waiting
    for the answer; in a pipeline that an earlier statement's error aborted (a duplicate insert sent with the
    COMMIT) the server skips that preparation, and every later run of the statement would then fail."""
    return None if params else False


def _forget_prepared(conn: psycopg.Connection[Any]) -> None:
    """After a pipeline an error aborted: forget every statement prepared on the server.

    psycopg records a statement as prepared when it sends the preparation, not when the server confirms it; in an
    aborted pipeline the server skips what follows the error, a preparation too, and every later run of that
    statement would fail ("prepared statement does not exist"). Its prepared-statement cache is cleared (psycopg
    then sends ``DEALLOCATE ALL`` after the next statement), so statements are prepared again from scratch."""
    manager = getattr(conn, "_prepared", None)
    clear = getattr(manager, "clear", None)
    if callable(clear):
        clear()
    else:  # a psycopg release with other internals: no more prepared statements on this connection
        conn.prepare_threshold = None


class _BoolAsInteger(Dumper):
    """Python booleans are stored as 0/1, as SQLite stores them (the schema has no boolean columns)."""

    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_dumper(bool, _BoolAsInteger)


def connect(url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, autocommit=True)
    _configure(conn)
    return conn


class PgConnection:
    """A psycopg connection that runs the store's SQLite-spelled statements."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn
        self._pgconn = conn.pgconn  # its transaction status is asked on every read of ingest: no wrapper per call
        # (query, parameters, on_rows, many: run once per row of parameters) sent with the next statement
        self._deferred: list[tuple[str, Sequence[Any], RowsCallback | None, bool]] = []

    def defer(self, sql: str, params: Sequence[Any] = (), on_rows: RowsCallback | None = None) -> None:
        """Send ``sql`` together with the next statement, in one pipeline: one round trip to the server
        instead of two. For statements whose answer nobody waits for (BEGIN, SAVEPOINT, RELEASE, an update
        of counters), or a query whose rows go to ``on_rows`` once they arrive. An error of either is raised
        by that next statement."""
        self._deferred.append((*self._args(sql, params), on_rows, False))

    def defer_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """As :meth:`defer`, for a statement run once per row (an insert of rows)."""
        self._deferred.append((*self._rows_args(sql, rows), None, True))

    @contextmanager
    def _sending_deferred(self) -> Iterator[None]:
        """A pipeline that first sends what was deferred; deferred queries' rows are handed over after it."""
        deferred, self._deferred = self._deferred, []
        answered = []
        try:
            with self.raw.pipeline():
                for query, args, on_rows, many in deferred:
                    if many:
                        self.raw.cursor().executemany(query, args)
                        continue
                    cursor = self.raw.execute(query, args, prepare=_prepare(args))
                    if on_rows is not None:
                        answered.append((cursor, on_rows))
                yield
        except psycopg.Error:
            _forget_prepared(self.raw)
            raise
        for cursor, on_rows in answered:
            on_rows(cursor.fetchall())

    def flush(self) -> None:
        """Send what was deferred now."""
        if self._deferred:
            with self._sending_deferred():
                pass

    @staticmethod
    def _args(sql: str, params: Sequence[Any]) -> tuple[str, Sequence[Any]]:
        query, order = postgres_sql(sql)
        if order is not None:
            params = [params[i] for i in order]
        return query, params

    @staticmethod
    def _rows_args(sql: str, rows: Sequence[Sequence[Any]]) -> tuple[str, Sequence[Sequence[Any]]]:
        query, order = postgres_sql(sql)
        if order is not None:
            rows = [[row[i] for i in order] for row in rows]
        return query, rows

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        query, args = self._args(sql, params)
        if not self._deferred:
            return self.raw.execute(query, args, prepare=_prepare(args))
        with self._sending_deferred():
            cursor = self.raw.execute(query, args, prepare=_prepare(args))
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        if len(rows) == 1:  # one round trip, where a pipeline takes two
            return self.execute(sql, rows[0])
        query, rows = self._rows_args(sql, rows)
        cursor = self.raw.cursor()
        with self._sending_deferred():
            cursor.executemany(query, rows)
        return cursor

    def commit_then_flush(self) -> None:
        """``COMMIT`` the open transaction, then wait until the WAL is flushed past it (it may have committed
        with ``synchronous_commit`` off): a transaction of its own that takes a transaction id commits after it,
        durably, so its answer arrives once the WAL is on disk up to there. One round trip for both."""
        with self._sending_deferred():
            self.raw.execute("COMMIT", prepare=False)
            self.raw.execute(_FLUSH_BARRIER, prepare=False)

    def can_wait_for_flush(self) -> bool:
        """Whether the server runs the statement :meth:`commit_then_flush` waits for the WAL flush with."""
        try:
            self.raw.execute(_FLUSH_BARRIER, prepare=False)
        except psycopg.Error:
            return False
        return True

    def query_each(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
        """The rows of each query, all sent in one pipeline."""
        if len(queries) == 1:
            return [self.execute(*queries[0]).fetchall()]
        with self._sending_deferred():
            cursors = [
                self.raw.execute(query, args, prepare=_prepare(args))
                for query, args in (self._args(sql, params) for sql, params in queries)
            ]
        return [cursor.fetchall() for cursor in cursors]

    def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` with ``COPY ... FROM STDIN``: the server parses one stream instead of a statement
        per row, several times faster for large batches. A unique index the rows break raises as an INSERT
        would (nothing of the COPY is kept)."""
        self.flush()  # COPY cannot travel in a pipeline: what waits goes first
        with self.raw.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def stream(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        """The rows of ``sql`` as the server sends them (not all held in memory)."""
        query, args = self._args(sql, params)
        self.flush()
        yield from self.raw.cursor().stream(query, args)

    @property
    def in_transaction(self) -> bool:
        """A transaction is open (or its BEGIN is about to be sent)."""
        return bool(self._deferred) or self._pgconn.transaction_status != pq.TransactionStatus.IDLE

    @property
    def failed(self) -> bool:
        """The open transaction hit an error and can only be rolled back."""
        return self._pgconn.transaction_status == pq.TransactionStatus.INERROR

    def close(self) -> None:
        self.raw.close()


class PgReaders:
    """A pool of connections for reads of committed data (authentication, request results, reports)."""

    def __init__(self, url: str, size: int = 4) -> None:
        self._pool = ConnectionPool(
            url, min_size=1, max_size=size, kwargs={"autocommit": True}, configure=_configure, open=True
        )

    @contextmanager
    def connection(self) -> Iterator[PgConnection]:
        with self._pool.connection() as conn:
            yield PgConnection(conn)

    def close(self) -> None:
        self._pool.close()
