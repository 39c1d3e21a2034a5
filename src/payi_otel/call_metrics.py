"""The ``gen_ai.client.*`` metrics of provider calls, recorded off the caller's thread.

At a call's end the span core appends one small tuple to :class:`CallMetrics` (a ``deque`` append on
the caller's thread); the histograms are recorded later, by a background thread (``payi-otel-metrics``,
every half second) or, whichever comes first, when the ``MeterProvider`` collects: every
:class:`CallMetrics` registers an observable instrument whose callback records what is pending just
before the reader reads the histograms (the callback itself reports nothing). So the metrics are exact
after ``force_flush()``, at ``shutdown()`` and at every periodic export.

The queue is bounded. A caller that never waits (no I/O of its own, and an SDK that drops the interpreter
lock only for an instant in every call) can keep the background thread from the lock for good; then,
beyond :data:`MAX_PENDING` queued calls, each call's caller records the oldest two itself. Memory stays
flat and nothing is dropped; the work comes back to the caller's thread only when it has starved the
thread meant to do it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections import deque
from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from payi_otel import attributes as A

__all__ = ["DURATION_BUCKETS", "MAX_PENDING", "TOKEN_BUCKETS", "CallMetrics"]

# Semantic-convention advisory bucket boundaries.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
_DRAIN_INTERVAL_S = 0.5
MAX_PENDING = 2048  # calls queued before callers record some themselves (a few hundred KB)
_CATCH_UP = 2  # measurements a caller records per call beyond MAX_PENDING: the backlog falls, not just holds
_CHUNK = 32  # measurements recorded per hold of the drain lock

# (operation, provider, request model, response model, server address, server port, error type)
MetricKey = tuple[str, str, str | None, str | None, str | None, int | None, str | None]
Measurement = tuple[MetricKey, float, int | None, int | None]
AttributeSets = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


class CallMetrics:
    """The two histograms of one instrumentor, and the calls whose measurements are still pending."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.duration = meter.create_histogram(
            METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Measures number of input and output tokens used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        # False for the API's no-op meter (metrics switched off): its histograms record nothing, so the caller's
        # thread queues nothing either.
        self.live = type(meter) is not metrics.NoOpMeter
        self._pending: deque[Measurement] = deque()
        # Metric attribute dicts, built once per distinct key.
        self._attribute_sets: dict[MetricKey, AttributeSets] = {}
        self._lock = threading.Lock()

        def drain_on_collect(options: CallbackOptions) -> Iterable[Observation]:
            self.drain()  # the meter keeps this object (and what it has pending) alive while it lives
            return ()

        meter.create_observable_gauge("payi_otel.pending_measurements", callbacks=[drain_on_collect])
        if self.live:  # a no-op meter queues nothing: no thread to wake for it
            _register(self)

    def queue(self, measurement: Measurement) -> None:
        """Queue one call's measurements ``(key, seconds, input tokens, output tokens)`` (the caller's thread: a
        deque append, and the catch-up of the module doc when the background thread has fallen behind)."""
        pending = self._pending
        pending.append(measurement)
        if len(pending) > MAX_PENDING:
            self._catch_up()

    def _catch_up(self) -> None:
        # Blocking: a drain thread holding the lock while it waits for the interpreter lock gets it meanwhile and
        # finishes its chunk (module doc).
        with self._lock:
            for _ in range(_CATCH_UP):
                self._record_oldest()

    def drain(self) -> None:
        """Record every queued measurement."""
        while True:
            # A chunk at a time under the lock, and the queue found empty under it too: what another drainer
            # popped is recorded before this one returns (so a collection's drain is exact), and the lock is
            # never held long.
            with self._lock:
                for _ in range(_CHUNK):
                    if not self._record_oldest():
                        return

    def _record_oldest(self) -> bool:
        try:
            key, seconds, input_tokens, output_tokens = self._pending.popleft()
        except IndexError:
            return False
        sets = self._attribute_sets.get(key) or self._sets(key)
        self.duration.record(seconds, sets[0])
        if input_tokens is not None:
            self.tokens.record(input_tokens, sets[1])
        if output_tokens is not None:
            self.tokens.record(output_tokens, sets[2])
        return True

    def _sets(self, key: MetricKey) -> AttributeSets:
        operation, provider, request_model, response_model, address, port, error_type = key
        attrs: dict[str, Any] = {A.GEN_AI_OPERATION_NAME: operation, A.GEN_AI_PROVIDER_NAME: provider}
        if request_model:
            attrs[A.GEN_AI_REQUEST_MODEL] = request_model
        if response_model:
            attrs[A.GEN_AI_RESPONSE_MODEL] = response_model
        if address:
            attrs[A.SERVER_ADDRESS] = address
            if port:
                attrs[A.SERVER_PORT] = port
        if error_type is not None:
            attrs[A.ERROR_TYPE] = error_type
        sets = (attrs, {**attrs, GEN_AI_TOKEN_TYPE: "input"}, {**attrs, GEN_AI_TOKEN_TYPE: "output"})
        if len(self._attribute_sets) < 1024:  # bounded: models and errors are few, but never grow unbounded
            self._attribute_sets[key] = sets
        return sets


_instances: weakref.WeakSet[CallMetrics] = weakref.WeakSet()
_thread_lock = threading.Lock()
_thread: threading.Thread | None = None


def _register(call_metrics: CallMetrics) -> None:
    with _thread_lock:
        _instances.add(call_metrics)
        _start_thread()


def _start_thread() -> None:
    global _thread
    if _thread is None:
        _thread = threading.Thread(target=_drain_forever, name="payi-otel-metrics", daemon=True)
        _thread.start()


def _drain_forever() -> None:
    wait = threading.Event().wait
    while True:
        wait(_DRAIN_INTERVAL_S)
        for call_metrics in list(_instances):
            with contextlib.suppress(Exception):  # never let the thread die
                call_metrics.drain()


def drain_all() -> None:
    """Record every pending measurement of every instrumentor now."""
    for call_metrics in list(_instances):
        call_metrics.drain()


def _after_fork_in_child() -> None:
    """A forked child (a pre-fork server's worker) has none of the parent's threads: it starts a drain thread of
    its own. The measurements still queued are the parent's calls, which the parent records: the child drops
    them, or each would be counted once in each process."""
    global _thread_lock, _thread
    _thread_lock = threading.Lock()
    _thread = None
    for call_metrics in list(_instances):
        call_metrics._lock = threading.Lock()
        call_metrics._pending.clear()
    if _instances:
        _start_thread()


os.register_at_fork(after_in_child=_after_fork_in_child)
