"""The store's connection: opening the database, transactions (group commit, savepoints), WAL checkpoints.

The statements a transaction runs go through :mod:`.statements`, committed reads through :mod:`.committed_reads`.

SQLite (the default): one file (``payi.db``) in the data directory, in WAL mode with
``synchronous=NORMAL``: a commit survives the process being killed, readers (the CLI, reports) never
block the server, and the CLI can manage applications while the server runs.

PostgreSQL (``PAYI_OTEL_DATABASE_URL=postgresql://...``): one writer connection per process and a pool
of readers; several service instances share the database. Every write that the API acknowledges is
committed first, on either backend.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from payi_otel.service.store.cache import GENERATION, CacheGenerations
from payi_otel.service.store.committed_reads import CommittedReads
from payi_otel.service.store.records import DB_FILE, StoreError
from payi_otel.service.store.schema import create_or_migrate
from payi_otel.service.store.sqlite_file import (
    DIR_MODE,
    WAL_RESTART_FRAMES,
    checkpoint_thread,
    open_data_dir,
)
from payi_otel.service.store.statements import Connection, OpenTransactionStatements

if TYPE_CHECKING:
    from payi_otel.service.store.postgres import PgConnection, PgReaders

DATABASE_URL_ENV = "PAYI_OTEL_DATABASE_URL"
T = TypeVar("T")
BUSY_TIMEOUT_MS = 10_000  # SQLite: how long a write waits for another process (the CLI) holding the write lock
_RETRIES = 5  # runs of a unit of work that met another instance's concurrent write
_LAST_UNIT = "last_unit"  # PostgreSQL: the savepoint of a unit whose inserts travel with the COMMIT
_ASYNC_COMMIT = "SET LOCAL synchronous_commit TO off"  # PostgreSQL: the group commit's (see begin)


class StoreBusy(Exception):
    """SQLite: the write lock is held by another process, and the caller chose not to wait for it."""


class UnitUndone(Exception):
    """The unit of work run with ``last=True`` met another instance's concurrent write in the COMMIT its inserts
    travelled with: that unit alone was undone, the transaction stays open. Run it again, then commit."""


def resolve_database_url(explicit: str | None = None) -> str | None:
    """The PostgreSQL URL the store uses (``explicit``, else ``$PAYI_OTEL_DATABASE_URL``); None: SQLite."""
    url = explicit if explicit is not None else os.environ.get(DATABASE_URL_ENV)
    return url or None


def database_errors() -> tuple[type[Exception], ...]:
    """Errors of a store that cannot be opened or read: the database drivers' and the system's."""
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error, OSError)
    return (sqlite3.Error, psycopg.Error, OSError)


class StoreBase(OpenTransactionStatements, CommittedReads, CacheGenerations):
    """The connection and transaction handling every area of the store builds on.

    ``create=False`` (the CLI's reading commands) refuses a directory without a store instead of
    creating one.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str], *, create: bool = True, database_url: str | None = None
    ) -> None:
        """``database_url`` (default ``$PAYI_OTEL_DATABASE_URL``): a ``postgresql://`` URL selects PostgreSQL;
        without one the store is the SQLite file of ``data_dir``."""
        super().__init__()
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILE
        self.database_url = resolve_database_url(database_url)
        self.integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
        self._retryable: tuple[type[Exception], ...] = ()
        self._pg: PgConnection | None = None
        self._pg_readers: PgReaders | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._wal_restart_due = False
        self._lock = threading.RLock()
        self._reader_lock = threading.Lock()
        self._depth = 0
        self._writer_thread: int | None = None  # the thread that opened the writer's current transaction
        self._inserts_with_commit = False  # PostgreSQL: inserts wait for the COMMIT (see unit_of_work)
        self._last_unit_open = False  # PostgreSQL: a unit's inserts wait for the COMMIT, in savepoint _LAST_UNIT
        self._unit_savepoint: str | None = None  # PostgreSQL: _LAST_UNIT, until the unit's first savepoint takes it
        self._commit_before_flush = False  # PostgreSQL: the group commit's COMMIT is answered before its flush
        if self.database_url is not None:
            self._open_postgres(self.database_url, create)
            return
        self.location = str(self.path)
        self.path = open_data_dir(self.data_dir, create)
        self._sqlite = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._conn: Connection = self._sqlite
        # Lookups made while a write transaction is open elsewhere (authentication, request
        # results) go through a second connection: WAL readers never wait for the writer.
        self._reader = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache: indexes stay hot as data grows
        self._conn.execute("PRAGMA temp_store=MEMORY")
        with self._lock:
            create_or_migrate(self._sqlite, self.path)

    def _open_postgres(self, url: str, create: bool) -> None:
        from payi_otel.service.store import postgres
        from payi_otel.service.store.schema import create_or_migrate_postgres

        if not postgres.is_postgres_url(url):
            raise StoreError("must be a postgresql:// (or postgres://) URL")
        self.location = postgres.display_url(url)
        if create:
            self.data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)  # holds the default key file
        self.integrity_errors = postgres.INTEGRITY_ERRORS
        self._retryable = postgres.RETRYABLE
        self._pg = postgres.PgConnection(postgres.connect(url))
        self._conn = self._pg
        try:
            with self._lock:
                create_or_migrate_postgres(self._pg, create)
        except BaseException:
            self._pg.close()
            raise
        # a server that refuses the flush barrier: the group commit's COMMIT waits for the flush itself
        self._commit_before_flush = self._pg.can_wait_for_flush()
        self._pg_readers = postgres.PgReaders(url)

    def unit_of_work(self, work: Callable[[], T], *, last: bool = False) -> T:
        """Run ``work()`` (store calls that write through :meth:`transaction`) inside the open transaction.

        On PostgreSQL a unit that met another instance's concurrent write (the same dedupe key
        committed first, a deadlock) was undone by its savepoint: it is run again and then sees
        that write. (No savepoint of its own here: each costs a round trip to the server.)

        ``last``: nothing but :meth:`commit` follows. On PostgreSQL the unit's inserts then travel with the
        COMMIT, one round trip fewer; should they meet another instance's concurrent write there,
        :meth:`commit` undoes this unit alone and raises :class:`UnitUndone` (run it again, then commit).
        """
        if not last or self._pg is None:
            return self._run_unit(work)
        with self._lock:
            self._pg.defer(f"SAVEPOINT {_LAST_UNIT}")  # sent with its first statement, as BEGIN is
            self._inserts_with_commit = True

            def attempt() -> T:
                self._unit_savepoint = _LAST_UNIT  # the unit's first savepoint is this one (see transaction)
                return work()

            try:
                result = self._run_unit(attempt)
            except BaseException:
                if not self._pg.failed:
                    self._pg.defer(f"RELEASE {_LAST_UNIT}")
                raise
            finally:
                self._inserts_with_commit = False
                self._unit_savepoint = None
            self._pg.defer(f"RELEASE {_LAST_UNIT}")
            self._last_unit_open = True
            return result

    def _run_unit(self, work: Callable[[], T]) -> T:
        for attempt in range(_RETRIES):
            try:
                return work()
            except self._retryable:
                if attempt == _RETRIES - 1 or (self._pg is not None and self._pg.failed):
                    raise
        raise AssertionError("unreachable")

    def start_background_checkpoints(self, interval: float = 1.0, restart_frames: int = WAL_RESTART_FRAMES) -> None:
        """SQLite: move WAL checkpoints (which fsync the database file) off the serving thread (see
        :func:`.sqlite_file.checkpoint_thread`); after the writer's next commit it copies the few frames
        written since the thread's last pass (see :meth:`commit`). PostgreSQL checkpoints on its own."""
        if self._pg is not None:
            return
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn.execute(f"PRAGMA journal_size_limit={restart_frames * 4096}")
        self._checkpointer = checkpoint_thread(
            self.path, interval, restart_frames, self._stop_checkpoints, self._restart_due
        )
        self._checkpointer.start()

    def _restart_due(self) -> None:
        self._wal_restart_due = True

    def close(self) -> None:
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")
            if self._pg is not None:
                self._pg.close()
            else:
                self._sqlite.close()
        if self._pg_readers is not None:
            self._pg_readers.close()
            return
        with self._reader_lock:
            self._reader.close()

    def in_write(self) -> bool:
        """Whether the calling thread is writing the writer connection's open transaction."""
        return self._writer_thread == threading.get_ident() and self._conn.in_transaction

    def read_rows(self, sql: str, params: tuple[Any, ...] | list[Any]) -> list[tuple[Any, ...]]:
        """Every row of a read: on the thread writing a transaction, from the writer connection (so a
        write sees its own changes); anywhere else, committed data from the reader connection, which
        never waits for a write in progress (nor sees one that may still be undone)."""
        if self.in_write():
            with self._lock:
                rows: list[tuple[Any, ...]] = self._conn.execute(sql, params).fetchall()
            return rows
        return self.read_all(sql, params)

    def begin(self, wait: bool = True) -> None:
        """Open a transaction that several units of work share until :meth:`commit` (group commit).

        PostgreSQL: the limits a batch counts in stay locked until its COMMIT. Its COMMIT does not wait for the
        WAL flush (another instance counting in the same limits would wait through it each time, the instances'
        flushes never shared); :meth:`commit` waits for the flush after it, before any caller is answered.

        ``wait=False`` (SQLite): raise :class:`StoreBusy` at once, instead of waiting up to the busy
        timeout, when another process (the CLI) holds the database's write lock."""
        with self._lock:
            if not wait and self._pg is None:
                self._begin_now()
            else:
                self._control("BEGIN IMMEDIATE")
            if self._pg is not None:  # answered with the transaction's first statement (see _cache_usable)
                self._generation_due = True
                self._pg.defer(GENERATION, (), self._generation_read)
                if self._commit_before_flush:  # its COMMIT releases the limits' row locks before the WAL flush
                    self._pg.defer(_ASYNC_COMMIT)
            self._writer_thread = threading.get_ident()

    def _begin_now(self) -> None:
        self._conn.execute("PRAGMA busy_timeout=0")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                raise StoreBusy("another process holds the database's write lock") from exc
            raise
        finally:
            self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def commit(self, checkpoint: bool = True) -> None:
        """Commit the open transaction; ``checkpoint=False`` leaves a due WAL restart (which fsyncs the
        database file) to the next commit that allows it."""
        with self._lock:
            if self._pg is not None and self._pg.failed:  # PostgreSQL would answer COMMIT with a rollback
                raise StoreError("the transaction failed and was not committed", "unexpected_error")
            last_unit, self._last_unit_open = self._last_unit_open, False
            try:
                if self._pg is not None and self._commit_before_flush:
                    self._pg.commit_then_flush()  # returns once the WAL holding this commit is on disk
                else:
                    self._conn.execute("COMMIT")
            except Exception:  # PostgreSQL: an insert sent with the COMMIT (see unit_of_work) failed, e.g. a conflict
                if not last_unit or self._pg is None or not self._pg.failed:
                    raise
                self._conn.execute(f"ROLLBACK TO {_LAST_UNIT}")  # the transaction is usable again, without that unit
                self._control(f"RELEASE {_LAST_UNIT}")
                self._forget_cached()
                raise UnitUndone from None
            if self._wal_restart_due and checkpoint:
                self._wal_restart_due = False
                # the commit above stands whatever happens here; the next pass retries
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def rollback(self) -> None:
        with self._lock:
            self._last_unit_open = False
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._forget_cached()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One atomic unit of work.

        Outside a transaction it is committed on exit; inside an open one (group commit, or nested)
        it is a savepoint: undone alone on error, committed with the enclosing transaction.
        """
        with self._lock:
            if not self._conn.in_transaction:
                self._control("BEGIN IMMEDIATE")
                self._writer_thread = threading.get_ident()
                try:
                    self._check_cached()
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    self._forget_cached()
                    raise
                self._conn.execute("COMMIT")
                return
            self._depth += 1
            # the first savepoint of a unit run with last=True is the unit's own, set just before: no second one
            name, self._unit_savepoint = self._unit_savepoint, None
            if name is None:
                name = f"sp{self._depth}"
                self._control(f"SAVEPOINT {name}")
            try:
                yield self._conn
            except BaseException:
                self._forget_cached()
                self._conn.execute(f"ROLLBACK TO {name}")
                if name != _LAST_UNIT:  # the unit releases its own
                    self._conn.execute(f"RELEASE {name}")
                raise
            finally:
                self._depth -= 1
            if name != _LAST_UNIT:
                self._control(f"RELEASE {name}")
