"""Finished provider calls, handed by the span core to whoever keeps cost records.

The span core builds one :class:`FinishedCall` per provider call at its end (call return, stream end,
error), on the caller's thread and whatever the trace sampler decided, and passes it to every
registered sink before control returns to the caller. The Pay-i exporter registers its journal here
(:mod:`payi_otel.exporters.journal`), so a cost record never depends on trace sampling or on a span
processor's in-memory queue. With no sink registered (no Pay-i exporter in this process) nothing
happens beyond the span.

A :class:`FinishedCall` carries exactly what a span view carries (name, times, the span's
attributes, error status, trace, span and parent ids, the provider's resource), so the exporter maps
it with the same pure mapping as a span; the event is identical either way.

A call the program still holds unfinished when it exits (a stream kept in a module global, never read to
its end nor closed) is ended as abandoned at exit, before the sinks close (:func:`end_calls_left_at_exit`):
its garbage collection would come after them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FinishedCall", "add_exit_ender", "add_sink", "end_calls_left_at_exit", "remove_sink", "sinks"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class FinishedCall:
    """One finished provider call: the attributes of its span and what the span's end adds."""

    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    is_error: bool
    status_message: str | None
    trace_id: int
    span_id: int
    sampled: bool  # the span was recorded (a span exporter will see it too)
    parent_span_id: int = 0
    resource: Any = None  # the SDK Resource of the span's TracerProvider, when there is one


Sink = Callable[[FinishedCall], None]

_lock = threading.Lock()
current_sinks: tuple[Sink, ...] = ()  # replaced, never mutated: the core reads it directly, without a lock


def sinks() -> tuple[Sink, ...]:
    return current_sinks


def add_sink(sink: Sink) -> None:
    global current_sinks
    with _lock:
        if sink not in current_sinks:
            current_sinks = (*current_sinks, sink)


def remove_sink(sink: Sink) -> None:
    global current_sinks
    with _lock:
        current_sinks = tuple(s for s in current_sinks if s != sink)


# Functions that end the calls a program still holds unfinished when it exits (a stream kept in a module global
# and never read to its end), so that their records reach the sinks before the sinks close.
_exit_enders: tuple[Callable[[], None], ...] = ()


def add_exit_ender(ender: Callable[[], None]) -> None:
    global _exit_enders
    with _lock:
        if ender not in _exit_enders:
            _exit_enders = (*_exit_enders, ender)


def end_calls_left_at_exit() -> None:
    """Once the program's threads are done (the interpreter is exiting: its main thread has stopped), end the
    calls still unfinished; a sink calls this before it closes. Does nothing while the program runs."""
    if threading.main_thread().is_alive():
        return
    for ender in _exit_enders:
        try:
            ender()
        except Exception:
            logger.exception("payi-otel: could not end the calls left unfinished at exit")
