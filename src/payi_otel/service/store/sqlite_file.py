"""SQLite's database file: the data directory and its modes, and WAL checkpoints off the serving thread."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from payi_otel.service.store.records import DB_FILE, NoStoreError, StoreError

WAL_RESTART_FRAMES = 16384  # about 64 MiB of WAL: past it the log is started over (see checkpoint_thread)
DIR_MODE = 0o700  # the data holds prompts, responses and key digests: owner only
FILE_MODE = 0o600


def no_data_message(data_dir: str | os.PathLike[str]) -> str:
    return f"no service data in {data_dir}; start `payi-otel serve` or pass --data-dir"


def open_data_dir(data_dir: Path, create: bool) -> Path:
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


def checkpoint_thread(
    path: Path, interval: float, restart_frames: int, stop: threading.Event, restart_due: Callable[[], None]
) -> threading.Thread:
    """A thread (not started) that runs a PASSIVE checkpoint of ``path`` every ``interval`` seconds until ``stop``.

    The serving connection no longer auto-checkpoints; a PASSIVE checkpoint never blocks writers. Under
    constant writes such a checkpoint never catches up with the last frames, and SQLite starts the log
    over only once every frame is back in the database, so the WAL would grow without bound. Once it
    passes ``restart_frames`` the thread calls ``restart_due``: the writer then copies the few frames
    written since the last pass right after its next commit, and the next write transaction starts the
    log over (and truncates the file to the size limit).
    """

    def loop() -> None:
        conn = sqlite3.connect(path, timeout=10.0)
        try:
            while not stop.wait(interval):
                _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames > restart_frames:
                    restart_due()
        finally:
            conn.close()

    return threading.Thread(target=loop, name="payi-otel-checkpoint", daemon=True)
