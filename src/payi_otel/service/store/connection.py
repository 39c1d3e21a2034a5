"""The store's connection: opening the file, transactions (group commit, savepoints), WAL checkpoints.

One file (``payi.db``) in the data directory, in WAL mode with ``synchronous=NORMAL``: a commit
survives the process being killed, readers (the CLI, reports) never block the server, and the CLI can
manage applications while the server runs. Every write that the API acknowledges is committed first.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from payi_otel.service.store.records import DB_FILE, NoStoreError, StoreError
from payi_otel.service.store.schema import create_or_migrate

WAL_RESTART_FRAMES = 16384  # about 64 MiB of WAL: past it the log is started over (see start_background_checkpoints)
DIR_MODE = 0o700  # the data holds prompts, responses and key digests: owner only
FILE_MODE = 0o600


def no_data_message(data_dir: str | os.PathLike[str]) -> str:
    return f"no service data in {data_dir}; start `payi-otel serve` or pass --data-dir"


def _open_data_dir(data_dir: Path, create: bool) -> Path:
    """The data directory (created 0700 when ``create``) and its database file (created 0600).

    SQLite gives the WAL and shared-memory files the database file's mode, so they are 0600 too;
    files of an older version are tightened when opened.
    """
    path = data_dir / DB_FILE
    if data_dir.exists() and not data_dir.is_dir():
        raise StoreError("is a file, not a directory")
    if not path.exists():
        if not create:
            raise NoStoreError(no_data_message(data_dir))
        data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    with contextlib.suppress(PermissionError):
        os.chmod(data_dir, DIR_MODE)
        for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(data_dir / name, FILE_MODE)
    return path


class StoreBase:
    """The connection and transaction handling every area of the store builds on.

    ``create=False`` (the CLI's reading commands) refuses a directory without a store instead of
    creating one.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, create: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.path = _open_data_dir(self.data_dir, create)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        # Lookups made while a write transaction is open elsewhere (authentication, request
        # results) go through a second connection: WAL readers never wait for the writer.
        self._reader = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        self._reader_lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache: indexes stay hot as data grows
        self._conn.execute("PRAGMA temp_store=MEMORY")
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._wal_restart_due = False
        self._lock = threading.RLock()
        self._depth = 0
        with self._lock:
            create_or_migrate(self._conn, self.path)

    def _forget_cached(self) -> None:
        """Drop what areas cache from the database; called on every rollback (it may undo their writes)."""

    def start_background_checkpoints(self, interval: float = 1.0, restart_frames: int = WAL_RESTART_FRAMES) -> None:
        """Move WAL checkpoints (which fsync the database file) off the serving thread.

        The serving connection stops auto-checkpointing; a thread with its own connection runs a
        PASSIVE checkpoint every ``interval`` seconds, which never blocks writers. Under constant
        writes such a checkpoint never catches up with the last frames, and SQLite starts the log
        over only once every frame is back in the database, so the WAL would grow without bound.
        Once it passes ``restart_frames`` the thread asks the writer to copy the few frames
        written since its last pass right after its next commit (see :meth:`commit`); the next
        write transaction then starts the log over (and truncates the file to the size limit).
        """
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn.execute(f"PRAGMA journal_size_limit={restart_frames * 4096}")

        def loop() -> None:
            conn = sqlite3.connect(self.path, timeout=10.0)
            try:
                while not self._stop_checkpoints.wait(interval):
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames > restart_frames:
                        self._wal_restart_due = True
            finally:
                conn.close()

        self._checkpointer = threading.Thread(target=loop, name="payi-otel-checkpoint", daemon=True)
        self._checkpointer.start()

    def close(self) -> None:
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")
            self._conn.close()
        with self._reader_lock:
            self._reader.close()

    def read_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One row of committed data, without waiting for a write in progress."""
        with self._reader_lock:
            cursor = self._reader.execute(sql, params)
            try:
                row: tuple[Any, ...] | None = cursor.fetchone()
            finally:
                cursor.close()  # ends the read: an open one would keep the WAL from starting over
        return row

    def read_all(self, sql: str, params: tuple[Any, ...] | list[Any]) -> list[tuple[Any, ...]]:
        """Every row of committed data, without waiting for a write in progress."""
        with self._reader_lock:
            cursor = self._reader.execute(sql, params)
            try:
                rows: list[tuple[Any, ...]] = cursor.fetchall()
            finally:
                cursor.close()
        return rows

    def begin(self) -> None:
        """Open a transaction that several units of work share until :meth:`commit` (group commit)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        with self._lock:
            self._conn.execute("COMMIT")
            if self._wal_restart_due:
                self._wal_restart_due = False
                # the commit above stands whatever happens here; the next pass retries
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def rollback(self) -> None:
        with self._lock:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._forget_cached()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work.

        Outside a transaction it is committed on exit; inside an open one (group commit, or nested)
        it is a savepoint: undone alone on error, committed with the enclosing transaction.
        """
        with self._lock:
            if not self._conn.in_transaction:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    self._forget_cached()
                    raise
                self._conn.execute("COMMIT")
                return
            self._depth += 1
            name = f"sp{self._depth}"
            self._conn.execute(f"SAVEPOINT {name}")
            try:
                yield self._conn
            except BaseException:
                self._forget_cached()
                self._conn.execute(f"ROLLBACK TO {name}")
                self._conn.execute(f"RELEASE {name}")
                raise
            finally:
                self._depth -= 1
            self._conn.execute(f"RELEASE {name}")

