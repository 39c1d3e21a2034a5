"""The call journal: every finished provider call is on disk before control returns to the caller.

The span core hands each finished call (:class:`payi_otel.finished.FinishedCall`) to
:meth:`Journal.record` on the caller's thread. ``record`` appends one compact line (the call's span
attributes, times, ids and status, JSON-encoded) to this process's journal segment with a single
``write`` to a file opened ``O_APPEND``: once it returns, the record is in the OS page cache and
survives a kill -9 of the process. Nothing else runs on the caller's thread.

A background thread (``payi-otel-journal``) turns the records into ingest events with the exporter's
one pure mapping (:func:`~payi_otel.exporters.mapping.event_from_view`, over a view of the record),
hands them to the exporter's sink (the spool, fsynced, or the offline file) and only then deletes the
journal segment they came from. Segments are rotated for that: the writer switches to a fresh segment
under a lock, so a segment being turned into events is never written again.

A journal segment left by a process that died (its ``flock`` is free) is replayed by the next journal
started on the same directory. A crash between spooling a segment's events and deleting the segment
replays it once more; event ids are stable (the provider's response id, else derived from the trace
and span ids), so the server's dedupe keeps one copy.

Layout in the spool directory: ``journal-<time_ns>-<pid>-<seq>.jsonl``, one record a line:
``[name, start_ns, end_ns, trace_id_hex, span_id, is_error, status_message, attributes, parent_span_id,
resource_properties]``.
"""

from __future__ import annotations

import fcntl
import functools
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from payi_otel.finished import FinishedCall

from .mapping import event_from_view
from .views import SpanView, readable_resource

__all__ = ["Journal"]

logger = logging.getLogger("payi_otel.exporters")

try:  # the fast encoder when installed (called directly, no Python frame); the standard library's otherwise
    import orjson

    _encode: Callable[[list[Any]], bytes] = functools.partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)

except ImportError:  # pragma: no cover - depends on the installation
    _json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)

    def _encode_std(record: list[Any]) -> bytes:
        return (_json_encoder.encode(record) + "\n").encode()

    _encode = _encode_std


_PREFIX = "journal-"
_SUFFIX = ".jsonl"
_INTERVAL_S = 0.1  # records become events this often
_ORPHAN_SCAN_S = 30.0  # look for segments of dead processes this often


def _view(call: FinishedCall, resource: Any) -> SpanView:
    return SpanView(
        call.name,
        call.start_ns,
        call.end_ns,
        call.attributes,
        call.is_error,
        call.status_message,
        call.trace_id,
        call.span_id,
        call.parent_span_id,
        resource,
    )


def _view_from_line(line: bytes) -> SpanView:
    name, start, end, trace_hex, span_id, is_error, message, attrs, parent, resource = json.loads(line)
    return SpanView(name, start, end, attrs, bool(is_error), message, int(trace_hex, 16), span_id, parent, resource)


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
        self._seq = itertools.count()
        self._lock = threading.Lock()  # the writers' lock: current segment and its records
        self._drain_lock = threading.Lock()  # one drain at a time
        self._fd, self._path = self._open_segment()
        self._records: list[tuple[FinishedCall, Any]] = []
        self._resource: tuple[Any, Any] = (object(), None)  # (the last call's Resource, its properties)
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="payi-otel-journal", daemon=True)
        self._thread.start()

    # -- the caller's thread ------------------------------------------------------------

    def record(self, call: FinishedCall) -> None:
        """Append ``call`` to the journal (one ``write``; on disk in the page cache when this returns)."""
        seen, resource = self._resource  # a provider's calls share one Resource: converted once
        if seen is not call.resource:
            resource = readable_resource(call.resource)
            self._resource = (call.resource, resource)  # one assignment: threads never see a torn pair
        line = _encode(
            [call.name, call.start_ns, call.end_ns, f"{call.trace_id:032x}", call.span_id, call.is_error,
             call.status_message, call.attributes, call.parent_span_id, resource or {}]
        )  # fmt: skip
        with self._lock:
            if self._closed:
                return
            os.write(self._fd, line)
            self._records.append((call, resource))

    # -- background ---------------------------------------------------------------------

    def flush(self) -> None:
        """Turn every record journaled so far into events in the sink."""
        with self._drain_lock:
            self._drain()

    def close(self) -> None:
        """Stop journaling: drain what is left into the sink and remove the (empty) segment."""
        self._stop.set()
        self._thread.join(5.0)
        with self._drain_lock:
            self._drain()
            with self._lock:
                self._closed = True
                fd, path = self._fd, self._path
            os.close(fd)
            path.unlink(missing_ok=True)

    def _run(self) -> None:
        next_scan = 0.0
        while not self._stop.wait(_INTERVAL_S):
            try:
                with self._drain_lock:
                    self._drain()
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + _ORPHAN_SCAN_S
                    self._replay_orphans()
            except Exception:  # never let the thread die; the records stay journaled
                logger.exception("Pay-i exporter: could not turn journaled calls into events; retrying")
                self._stop.wait(1.0)

    def _open_segment(self) -> tuple[int, Path]:
        """A new segment, created under a hidden name and locked before it becomes visible, so no other
        process can take it for the journal of a dead process."""
        name = f"{_PREFIX}{time.time_ns():020d}-{os.getpid()}-{next(self._seq):06d}{_SUFFIX}"
        hidden = self.directory / f".{name}"
        fd = os.open(hidden, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = self.directory / name
        os.replace(hidden, path)
        return fd, path

    def _drain(self) -> None:
        if not self._records or self._closed:
            return
        fd, path = self._open_segment()
        with self._lock:
            old_fd, old_path, records = self._fd, self._path, self._records
            self._fd, self._path, self._records = fd, path, []
        self._store([_view(call, resource) for call, resource in records])
        os.close(old_fd)
        old_path.unlink(missing_ok=True)

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
            names = sorted(e.name for e in it if e.name.startswith(_PREFIX) and e.name.endswith(_SUFFIX))
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
                with os.fdopen(os.dup(fd), "rb") as fh:
                    lines = fh.read().splitlines()
                views = []
                for line in lines:
                    try:
                        views.append(_view_from_line(line))
                    except (ValueError, TypeError):
                        logger.warning("Pay-i exporter: unreadable journal line in %s skipped", path)
                self._store(views)
                logger.info("Pay-i exporter: replayed %d call(s) journaled by an earlier process", len(views))
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
