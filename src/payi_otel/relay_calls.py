"""What ``payi-otel relay`` remembers of the calls it forwarded: each provider call is forwarded once,
with the fullest event its spans give.

Two spans are one call when they are in the same trace, one is the direct parent of the other, and they
have the same call key (category and model): the rule of :mod:`payi_otel.exporters.calls`, which already
joins the two spans of a call that arrive in one request. When they arrive in different requests:

* The relay **holds** each call's event for ``hold_s`` seconds (``PAYI_OTEL_RELAY_HOLD_S``, 10 by
  default) in a *held* batch of the exporter's spool: on disk, fsynced, before the relay answers, but not
  sent yet. A later span of the same call within that time is merged into the held event (the event of
  the span ranked higher, with the business context either span carried, as the local service keeps
  it), and the held batch is rewritten in place. When the time is up the batch is released to the
  exporter's sender (an atomic rename): from then on the event is as it will be sent.
* A span of a call that was already released is not forwarded: Pay-i offers no way to replace a stored
  request, so the released event stands.
* The relay remembers a call's spans for ``window_s`` (the service's window, 15 minutes), at most
  ``max_spans`` of them, in memory and in ``relay-spans.jsonl`` in the spool directory (one line per span,
  appended once its event is in the spool), so a restarted relay still knows them: a span that arrives
  after a restart for a call forwarded before it is not forwarded again.
* Held batches a killed relay left in the spool are released when the next relay starts on it, and a
  stopping relay releases its own before its last delivery, so no event is lost; a span that arrives
  after a restart for such a call finds it released (its event stands).
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payi_otel.exporters.calls import Call, merge_into

__all__ = [
    "DEFAULT_HOLD_S",
    "SPAN_JOURNAL_NAME",
    "Forwarded",
    "Held",
    "HeldQueue",
    "RecentCalls",
    "SpanJournal",
    "merge_call",
]

DEFAULT_HOLD_S = 10.0
SPAN_JOURNAL_NAME = "relay-spans.jsonl"
RECENT_SPANS_MAX = 100_000  # spans remembered at most (a few tens of MiB), the oldest forgotten first
SAME_CALL_WINDOW_S = 15 * 60  # the local service's window (payi_otel.service.otlp)


SpanEntry = tuple[str, str, str, str, float]  # trace id, span id, parent span id, call key, wall-clock seconds


class SpanJournal:
    """The spans of forwarded calls on disk, one JSON line each (see the module doc). Lines are appended
    with one ``write`` to a file opened ``O_APPEND`` (they survive a kill of the relay), and the file is
    rewritten with what is still remembered when the relay starts and when it has grown large."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.appended = 0

    def load(self) -> list[SpanEntry]:
        entries: list[SpanEntry] = []
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return entries
        for line in lines:
            try:
                trace_id, span, parent, key, seen = json.loads(line)
                entries.append((str(trace_id), str(span), str(parent), str(key), float(seen)))
            except (ValueError, TypeError):  # a line cut by a crash: skipped
                continue
        return entries

    def append(self, entries: list[SpanEntry]) -> None:
        if not entries:
            return
        data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in entries).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self.appended += len(entries)

    def rewrite(self, entries: list[SpanEntry]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in entries).encode()
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            fh.write(data)
        os.replace(tmp, self.path)
        self.appended = len(entries)


@dataclass(slots=True, eq=False)
class Held:
    """A held spool batch: its file and its events (the forwarded calls' event dicts, updated in place)."""

    path: Path
    events: list[dict[str, Any]]
    due: float
    released: bool = False


@dataclass(slots=True, eq=False)
class Forwarded:
    """A forwarded call and the held batch its event is in (``None``: sent without holding)."""

    call: Call
    held: Held | None = None


def merge_call(kept: Call, other: Call) -> None:
    """Fold ``other`` (a later span of the same call) into ``kept``: the event of the span ranked
    higher, with the attribution and properties only the other one has. ``kept.event`` stays the same
    dict object (a held batch holds it)."""
    if other.rank > kept.rank:
        better = dict(other.event)
        merge_into(better, kept.event)
        kept.event.clear()
        kept.event.update(better)
        kept.rank = other.rank
    else:
        merge_into(kept.event, other.event)
    kept.spans.extend(other.spans)


class RecentCalls:
    """The spans of the calls forwarded lately (see the module doc), each pointing at its :class:`Forwarded`."""

    def __init__(
        self,
        window_s: float = SAME_CALL_WINDOW_S,
        max_spans: int = RECENT_SPANS_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self.max_spans = max_spans
        self._clock = clock
        # (trace id, span id) -> (call key, parent span id, when seen, its call), oldest first
        self._spans: OrderedDict[tuple[str, str], tuple[str, str, float, Forwarded]] = OrderedDict()
        # (trace id, parent span id) -> (the child's call key, its call)
        self._children: dict[tuple[str, str], tuple[str, Forwarded]] = {}

    def claim(self, calls: list[Call]) -> tuple[list[Forwarded], list[tuple[Forwarded, Call]]]:
        """``calls`` split into those not forwarded before (now remembered as forwarded) and those whose
        call was, each with that call. Not thread-safe: callers hold their own lock."""
        now = self._clock()
        while self._spans and next(iter(self._spans.values()))[2] < now - self._window_s:
            self._forget_oldest()
        fresh: list[Forwarded] = []
        seen: list[tuple[Forwarded, Call]] = []
        for call in calls:
            forwarded = self._match(call)
            if forwarded is None:
                forwarded = Forwarded(call)
                fresh.append(forwarded)
            else:
                seen.append((forwarded, call))
            self._remember(call, forwarded, now)
        while len(self._spans) > self.max_spans:
            self._forget_oldest()
        return fresh, seen

    def release(self, forwarded: list[Forwarded]) -> None:
        """Forget calls that were claimed but could not be forwarded."""
        for item in forwarded:
            call = item.call
            for span, parent in call.spans:
                self._spans.pop((call.trace_id, span), None)
                child = self._children.get((call.trace_id, parent)) if parent else None
                if child is not None and child[1] is item:
                    del self._children[(call.trace_id, parent)]

    def restore(self, entries: list[SpanEntry], now_wall: float) -> None:
        """Remember spans forwarded before a restart (their calls count as released)."""
        now = self._clock()
        for trace_id, span, parent, key, seen_wall in entries:
            age = now_wall - seen_wall
            if 0 <= age <= self._window_s:
                placeholder = Forwarded(Call({}, 0, key, trace_id, []))  # held is None: released
                self._remember(Call({}, 0, key, trace_id, [(span, parent)]), placeholder, now - age)
        while len(self._spans) > self.max_spans:
            self._forget_oldest()

    def entries(self, now_wall: float) -> list[SpanEntry]:
        """The spans remembered, oldest first, as :class:`SpanJournal` lines."""
        now = self._clock()
        return [
            (trace_id, span, parent, key, now_wall - (now - seen))
            for (trace_id, span), (key, parent, seen, _) in self._spans.items()
        ]

    def _remember(self, call: Call, forwarded: Forwarded, now: float) -> None:
        for span, parent in call.spans:
            self._spans[(call.trace_id, span)] = (call.key, parent, now, forwarded)
            self._spans.move_to_end((call.trace_id, span))
            if parent:
                self._children[(call.trace_id, parent)] = (call.key, forwarded)

    def _match(self, call: Call) -> Forwarded | None:
        for span, parent in call.spans:
            if parent:
                remembered = self._spans.get((call.trace_id, parent))
                if remembered is not None and remembered[0] == call.key:
                    return remembered[3]  # its parent span was forwarded as this call
            child = self._children.get((call.trace_id, span))
            if child is not None and child[0] == call.key:
                return child[1]  # its child span was
        return None

    def _forget_oldest(self) -> None:
        (trace_id, _), (_, parent, _, forwarded) = self._spans.popitem(last=False)
        child = self._children.get((trace_id, parent)) if parent else None
        if child is not None and child[1] is forwarded:
            del self._children[(trace_id, parent)]


class HeldQueue:
    """Held batches in the order they fall due (one hold time for all, so first in, first due)."""

    def __init__(self) -> None:
        self._queue: deque[Held] = deque()

    def add(self, held: Held) -> None:
        self._queue.append(held)

    def due(self, now: float) -> list[Held]:
        out = []
        while self._queue and self._queue[0].due <= now:
            out.append(self._queue.popleft())
        return out

    def all(self) -> list[Held]:
        out = list(self._queue)
        self._queue.clear()
        return out

    def next_due(self) -> float | None:
        return self._queue[0].due if self._queue else None
