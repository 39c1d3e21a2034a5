"""The call journal: every finished provider call is on disk before control returns to the caller.

The span core hands each finished call (:class:`payi_otel.finished.FinishedCall`) to
:meth:`Journal.record` on the caller's thread. ``record`` encodes the call (its span attributes,
times, ids and status) as one compact JSON record and copies it into this process's current journal
segment, a file mapped into memory (:mod:`.journal_segments`): once it returns, the record is in the
OS page cache and survives a kill -9 of the process. The caller's thread makes no system call and
never releases the GIL there (but to let a starved drain catch up, see below); files are created, sized
and pre-faulted by the background thread.

A background thread (``payi-otel-journal``) reads the new records back from the segments (the writers
keep no object alive for it: the caller's objects are garbage as soon as the call returns), turns them
into ingest events with the exporter's one pure mapping
(:func:`~payi_otel.exporters.mapping.event_from_view`, over a view of the record, the same view a replay
makes, so an event never depends on whether its process survived),
hands them to the exporter's sink (the spool, fsynced, or the offline file) and only then marks them
drained in the segment (a full segment, which the writers have left, is deleted instead). It also
keeps a spare segment ready, so a writer that fills its segment switches to the next without waiting.

A process whose calls never release the GIL (responses served from memory, a CPU-bound loop) would
starve that thread: each system call of the drain hands the GIL back and costs it a whole switch
interval to regain. So a writer that leaves a segment while :data:`_BACKLOG_SEGMENTS` full segments
already wait wakes the thread and lets it run, for at most :data:`_CATCH_UP_S` (once a segment, about
1,500 calls, and only while the drain is behind): the backlog, and the process's memory, stay bounded.

A journal segment left by a process that died (its ``flock`` is free) is replayed from its drained
mark by the next journal started on the same directory, and so are the ``.jsonl`` segments of earlier
versions. A crash between spooling records and marking them drained replays them once more; event ids
are stable (the provider's response id, else derived from the trace and span ids), so the server's
dedupe keeps one copy.

A forked child journals into segments of its own: its copy of the parent's segments is let go of
(unmapped and closed in the child only), never written.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from payi_otel.finished import FinishedCall

from .journal_segments import (
    HEADER_BYTES,
    LEGACY_SUFFIX,
    PREFIX,
    RECORD,
    RECORD_CHECK,
    SUFFIX,
    Segment,
    read_views,
    views,
)
from .mapping import event_from_view
from .views import SpanView, readable_resource

__all__ = ["Journal"]

logger = logging.getLogger("payi_otel.exporters")

try:  # the fast encoder when installed (called directly, no Python frame); the standard library's otherwise
    import orjson

    _encode: Callable[[list[Any]], bytes] = orjson.dumps

except ImportError:  # pragma: no cover - depends on the installation
    _encode = functools.partial(
        lambda encoder, record: encoder.encode(record).encode(),
        json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str),
    )

_INTERVAL_S = 0.1  # records become events this often
_ORPHAN_SCAN_S = 30.0  # look for segments of dead processes this often
_BACKLOG_SEGMENTS = 2  # full segments waiting for the drain before a writer lets it catch up
_CATCH_UP_S = 0.05  # the longest a writer waits for it (once a segment)
_pack_record = RECORD.pack
_RECORD_BYTES = RECORD.size


class Journal:
    """This process's journal of finished calls in ``directory``, drained into ``sink``.

    ``sink(events)`` must store the events durably (or deliberately drop them) before it returns.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        sink: Callable[[list[dict[str, Any]]], None],
        *,
        include_content: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sink = sink
        self._include_content = include_content
        self._resource: tuple[Any, Any] = (object(), None)  # (the last call's Resource, its properties)
        self._closed = False
        self._start()
        with self._lock:
            self._switch(0)  # the first segment, and the thread (which replays what dead processes left)
        _journals.add(self)

    def _start(self) -> None:
        """The writers' state and the background thread (again in a forked child)."""
        self._seq = itertools.count()
        self._lock = threading.Lock()  # the writers' lock: the segments, the write offset, the records
        self._drain_lock = threading.Lock()  # one drain at a time
        self._segment: Segment | None = None
        self._mm: Any = None  # the current segment's mapping
        self._pos = 0  # where the next record goes in it
        self._limit = 0  # its size; 0 while there is none (a writer then takes the slow path)
        self._full: list[Segment] = []  # segments the writers left, deleted once their records are drained
        self._spare: Segment | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by close and by a writer far ahead of the drain
        self._drained = threading.Event()  # set after each drain
        self._thread: threading.Thread | None = None

    # -- the caller's thread ------------------------------------------------------------

    def record(self, call: FinishedCall) -> None:
        """Journal ``call`` (a copy into mapped pages; in the page cache when this returns)."""
        seen, resource = self._resource  # a provider's calls share one Resource: converted once
        if seen is not call.resource:
            resource = readable_resource(call.resource)
            self._resource = (call.resource, resource)  # one assignment: threads never see a torn pair
        payload = _encode(  # hex(): a third of the cost of a padded format (read back by int(..., 16) alike)
            [call.name, call.start_ns, call.end_ns, hex(call.trace_id), call.span_id, call.is_error,
             call.status_message, call.attributes, call.parent_span_id, resource or {}]
        )  # fmt: skip
        length = len(payload)
        with self._lock:
            start = self._pos
            end = start + _RECORD_BYTES + length
            if end > self._limit:  # the segment is full (or there is none: a forked child, a closed journal)
                if not self._switch(_RECORD_BYTES + length):
                    return
                start = self._pos
                end = start + _RECORD_BYTES + length
                behind = len(self._full) > _BACKLOG_SEGMENTS
            else:
                behind = False
            mm = self._mm
            mm[start + _RECORD_BYTES : end] = payload
            mm[start : start + _RECORD_BYTES] = _pack_record(length, length ^ RECORD_CHECK)  # last: the commit
            self._pos = end
        if behind:
            self._catch_up()

    def _catch_up(self) -> None:
        """Wake the background thread and wait (GIL released) until it has drained, or for at most
        :data:`_CATCH_UP_S`."""
        self._drained.clear()
        self._wake.set()
        self._drained.wait(_CATCH_UP_S)

    def _switch(self, need: int) -> bool:
        """Under the writers' lock: make room for a record of ``need`` bytes in a new segment (the spare
        when there is one); False once the journal is closed."""
        if self._closed:
            return False
        if self._thread is None:  # the first segment (of this process: also in a forked child)
            self._thread = threading.Thread(target=self._run, name="payi-otel-journal", daemon=True)
            self._thread.start()
        spare, self._spare = self._spare, None
        if spare is None or spare.size - HEADER_BYTES < need:
            if spare is not None:
                self._full.append(spare)
            spare = Segment.create(self.directory, next(self._seq), need)
        if self._segment is not None:
            self._full.append(self._segment)
        self._segment, self._mm, self._limit = spare, spare.mm, spare.size
        self._pos = HEADER_BYTES
        return True

    # -- background ---------------------------------------------------------------------

    def flush(self) -> None:
        """Turn every record journaled so far into events in the sink."""
        with self._drain_lock:
            self._drain()

    def close(self) -> None:
        """Stop journaling: drain what is left into the sink and remove this process's segments. The segments of
        dead processes are replayed first, so a process that ends before its thread's first scan still sends
        what an earlier, killed one journaled."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        try:
            self._replay_orphans()
        except Exception:  # they stay on disk for the next start
            logger.exception("Pay-i exporter: could not replay the calls journaled by an earlier process")
        with self._drain_lock:
            with self._lock:  # no record after this one: the drain below has them all
                self._closed = True
                self._limit = 0
            self._drain()
            with self._lock:
                segments = [s for s in (self._segment, self._spare, *self._full) if s is not None]
                self._segment = self._spare = self._mm = None
                self._full = []
            for segment in segments:
                segment.remove()
        _journals.discard(self)

    def _run(self) -> None:
        next_scan = 0.0
        while True:
            self._wake.wait(_INTERVAL_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                with self._drain_lock:
                    self._drain()
                self._drained.set()
                self._prepare_spare()
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + _ORPHAN_SCAN_S
                    self._replay_orphans()
            except Exception:  # never let the thread die; the records stay journaled
                logger.exception("Pay-i exporter: could not turn journaled calls into events; retrying")
                self._drained.set()  # a writer waiting for this drain goes on
                self._wake.wait(1.0)  # a writer far ahead (once a segment) or close cuts the pause short

    def _prepare_spare(self) -> None:
        if self._spare is not None or self._closed:
            return
        spare = Segment.create(self.directory, next(self._seq))
        with self._lock:
            if self._spare is None and not self._closed:
                self._spare, spare = spare, None  # type: ignore[assignment]
        if spare is not None:
            spare.remove()

    def _drain(self) -> None:
        """Turn the records journaled since the last drain into events: read back from the segments (so the
        writers keep no object alive for it), handed to the sink, then marked drained or deleted."""
        with self._lock:
            full, segment, pos = self._full, self._segment, self._pos
            self._full = []
        if segment is None or (segment.drained == pos and not full):
            return
        # One segment at a time: what a drain holds in memory is bounded by a segment, however far the
        # writers got ahead (a whole backlog read at once would raise the process's memory for good).
        for done, old in enumerate(full):
            try:
                self._store(views(old.undrained(), old.path))
            except BaseException:  # the sink failed: the next drain retries these records, before any newer one
                with self._lock:
                    self._full[:0] = full[done:]
                raise
            old.remove()
        if segment.drained != pos:
            self._store(views(segment.undrained(pos), segment.path))
            segment.mark_drained(pos)  # the writers only append after pos; a later drain reads on from here

    def _store(self, views: list[SpanView]) -> None:
        events = []
        for view in views:
            try:
                event = event_from_view(view, include_content=self._include_content)
            except Exception:
                logger.exception("Pay-i exporter: could not map the call %r; it is skipped", view.name)
                continue
            if event is not None:
                events.append(event)
        if events:
            self._sink(events)

    def _replay_orphans(self) -> None:
        """Spool the records of segments whose process died (their lock is free)."""
        with os.scandir(self.directory) as it:
            names = sorted(e.name for e in it if e.name.startswith(PREFIX) and e.name.endswith((SUFFIX, LEGACY_SUFFIX)))
        for name in names:
            path = self.directory / name
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process is writing it (this one included)
                if not path.exists() or os.stat(path).st_ino != os.fstat(fd).st_ino:
                    continue
                try:
                    views = read_views(path, fd)
                except ValueError as exc:
                    logger.warning("Pay-i exporter: %s left in place: %s", path, exc)
                    continue
                self._store(views)
                if views:
                    logger.info("Pay-i exporter: replayed %d call(s) journaled by an earlier process", len(views))
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)

    def _after_fork_in_child(self) -> None:
        inherited = [s for s in (self._segment, self._spare, *self._full) if s is not None]
        self._start()  # the parent's records are the parent's to drain
        for segment in inherited:
            with contextlib.suppress(OSError):
                segment.release()


_journals: weakref.WeakSet[Journal] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for journal in list(_journals):
        journal._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
