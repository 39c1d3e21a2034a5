"""Offline mode: ingest events appended as JSON Lines to a local file instead of being sent."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["OfflineWriter"]


class OfflineWriter:
    """Appends each batch of events to ``path`` (one JSON object a line), flushed per batch.

    Nothing is kept in memory between batches; several processes may append to the same file
    (each batch is written under an exclusive ``fcntl`` lock, so lines never interleave).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.written = 0

    def after_fork_in_child(self) -> None:
        """A forked child's lock of its own (a thread of the parent may have held it at the fork)."""
        self._lock = threading.Lock()

    def write(self, events: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n" for e in events)
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            fh.write(data)
            fh.flush()
            self.written += len(events)
