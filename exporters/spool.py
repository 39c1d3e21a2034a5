"""The durable on-disk queue of ingest events waiting for the server.

Layout of a spool directory:

* ``batch-<time_ns>-<pid>-<seq>.jsonl``: one batch of events, one JSON object a line. A batch is
  written to a hidden temporary file, flushed, fsynced and renamed into place, so a batch file is
  always complete (a kill -9 leaves at most a hidden temporary file, which is ignored).
* ``held-<time_ns>-<pid>-<seq>.jsonl``: a batch written the same way that no sender takes yet: its
  writer may still rewrite it (:meth:`Spool.rewrite_held`) until it releases it
  (:meth:`Spool.release_held`, an atomic rename into a ``batch-`` file). Held batches count against
  the spool's size bound; a writer releases the ones a dead writer left (:meth:`Spool.release_all_held`).
* ``dead-letter.jsonl``: events the server rejected for good, each line
  ``{"time", "status", "reason", "event"}``.

Several processes may share a directory: a sender takes a batch with a non-blocking ``fcntl``
lock on the batch file, so two senders never work on the same batch at once; a batch leaves the
spool (unlink) only after the server acknowledged it.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Batch", "HeldBatch", "Spool"]

_PREFIX = "batch-"
_HELD_PREFIX = "held-"
_SUFFIX = ".jsonl"
DEAD_LETTER_NAME = "dead-letter.jsonl"
_TMP_MAX_AGE_S = 3600  # hidden temporary files older than this are left-overs of killed writers
_DIR_MODE = 0o700  # events may hold prompts and responses: owner only
_FILE_MODE = 0o600


HeldBatch = tuple[Path, list[dict[str, Any]]]  # a batch file written, and its events


def _dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def _write_atomically(target: Path, lines: list[str]) -> int:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = ("\n".join(lines) + "\n").encode()
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    return len(data)


@dataclass
class Batch:
    """A spooled batch this process holds the lock of. Resolve it with :meth:`ack`,
    :meth:`keep` or :meth:`release`."""

    path: Path
    events: list[dict[str, Any]]
    _fd: int = field(repr=False)

    def ack(self) -> None:
        """Every event was delivered (or dead-lettered): the batch leaves the spool."""
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self.release()

    def keep(self, remaining: list[dict[str, Any]]) -> None:
        """Some events were delivered: the batch shrinks to ``remaining`` and stays spooled."""
        if not remaining:
            self.ack()
            return
        if len(remaining) != len(self.events):
            _write_atomically(self.path, [_dumps(e) for e in remaining])
        self.release()

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


class Spool:
    """A size-bounded directory of event batches shared by any number of processes."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.dead_letter_path = self.directory / DEAD_LETTER_NAME
        self._seq = itertools.count()
        self._dead_letter_lock = threading.Lock()
        self._remove_stale_temporaries()

    def after_fork_in_child(self) -> None:
        """A forked child's lock of its own (a thread of the parent may have held it at the fork)."""
        self._dead_letter_lock = threading.Lock()

    # -- writing ---------------------------------------------------------------------------

    def append(self, events: list[dict[str, Any]], batch_size: int) -> int:
        """Durably spool ``events`` in batches of at most ``batch_size``; returns how many were
        dropped because the spool is full (those are the newest)."""
        return self._write(events, batch_size, _PREFIX)[1]

    def hold(self, events: list[dict[str, Any]], batch_size: int) -> tuple[list[HeldBatch], int]:
        """:meth:`append` into held batches, which no sender takes before :meth:`release_held`.

        Returns the held batches (path and events) and how many events were dropped (spool full).
        """
        return self._write(events, batch_size, _HELD_PREFIX)

    def _write(self, events: list[dict[str, Any]], batch_size: int, prefix: str) -> tuple[list[HeldBatch], int]:
        room = self.max_bytes - self.pending_bytes()
        written: list[HeldBatch] = []
        dropped = 0
        for start in range(0, len(events), batch_size):
            chunk = events[start : start + batch_size]
            lines = [_dumps(e) for e in chunk]
            size = sum(len(line.encode()) + 1 for line in lines)
            if size > room:
                dropped += len(events) - start
                break
            path = self.directory / self._name(prefix)
            room -= _write_atomically(path, lines)
            written.append((path, chunk))
        return written, dropped

    def _name(self, prefix: str) -> str:
        return f"{prefix}{time.time_ns():020d}-{os.getpid()}-{next(self._seq):06d}{_SUFFIX}"

    def rewrite_held(self, path: Path, events: list[dict[str, Any]]) -> bool:
        """Replace a held batch's events (atomically, fsynced); False when it is no longer held."""
        if not path.exists():
            return False
        _write_atomically(path, [_dumps(e) for e in events])
        return True

    def release_held(self, path: Path) -> bool:
        """Hand a held batch to the senders (an atomic rename); False when it was released already."""
        try:
            os.rename(path, self.directory / self._name(_PREFIX))
        except FileNotFoundError:
            return False
        return True

    def release_all_held(self) -> int:
        """Release every held batch in the directory (left by a writer that stopped); returns how many."""
        return sum(self.release_held(self.directory / e.name) for e in self._entries(_HELD_PREFIX))

    def dead_letter(self, records: list[dict[str, Any]]) -> None:
        """Append rejected events (``{"status", "reason", "event"}`` records) to the dead-letter file."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data = "".join(_dumps({"time": now, **r}) + "\n" for r in records).encode()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        with self._dead_letter_lock, open(os.open(self.dead_letter_path, flags, _FILE_MODE), "ab") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # whole lines even with several processes
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    # -- reading ---------------------------------------------------------------------------

    def _entries(self, *prefixes: str) -> list[os.DirEntry[str]]:
        with os.scandir(self.directory) as it:
            return [e for e in it if e.name.startswith(prefixes) and e.name.endswith(_SUFFIX)]

    def _batch_entries(self) -> list[os.DirEntry[str]]:
        return self._entries(_PREFIX)

    def pending_bytes(self) -> int:
        """Bytes of the batches waiting to be sent, held ones included."""
        total = 0
        for entry in self._entries(_PREFIX, _HELD_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size
        return total

    def pending_batches(self) -> int:
        return len(self._batch_entries())

    def claim(self) -> Iterator[Batch]:
        """Batches (oldest first) that no other sender holds, each locked for this caller."""
        for name in sorted(e.name for e in self._batch_entries()):
            path = self.directory / name
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                # Another sender may have finished this batch (unlinked or rewritten it)
                # between our open and our lock: only the file still at the path counts.
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    os.close(fd)
                    continue
                with os.fdopen(os.dup(fd), "rb") as fh:
                    raw = fh.read()
            except FileNotFoundError:
                os.close(fd)
                continue
            events, bad = [], []
            for line in raw.splitlines():
                if not line.strip():
                    continue
                try:
                    events.append(json.loads(line))
                except ValueError:
                    bad.append(line.decode(errors="replace"))
            if bad:
                self.dead_letter([{"status": None, "reason": "unreadable spool line", "event": b} for b in bad])
            yield Batch(path=path, events=events, _fd=fd)

    def _remove_stale_temporaries(self) -> None:
        cutoff = time.time() - _TMP_MAX_AGE_S
        with os.scandir(self.directory) as it:
            for entry in it:
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    try:
                        if entry.stat().st_mtime < cutoff:
                            os.unlink(entry.path)
                    except FileNotFoundError:
                        pass
