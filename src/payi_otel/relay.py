"""``payi-otel relay``: receive OTLP traces and forward their Pay-i events to any Pay-i API.

A collector (or an application's OTLP exporter) sends traces to the relay; the relay maps each GenAI
provider call to an ingest event exactly as the exporter does, joins two spans of one call that arrive
in the same request (see :mod:`payi_otel.exporters.calls`), and hands the events to a
:class:`~payi_otel.exporters.PayiSpanExporter`: they are on disk (fsynced, in the exporter's spool)
before the relay answers, and its background sender delivers them to ``PAYI_BASE_URL`` with retries,
across outages and restarts. Each event is held in the spool for ``PAYI_OTEL_RELAY_HOLD_S`` seconds
first, so a span of the same call that arrives later, in another request, completes it instead of
being a second event (see :mod:`payi_otel.relay_calls`). All ``PAYI_*`` exporter settings apply (key,
ingest mode, spool, ...).

Who may send: requests must carry ``xProxy-api-key`` equal to ``PAYI_OTEL_RELAY_KEY``, or to
``PAYI_API_KEY`` when that is unset; with neither set, any sender is accepted (the relay listens on
127.0.0.1 by default).
"""

from __future__ import annotations

import hmac
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from payi_otel.exporters import PayiSpanExporter
from payi_otel.exporters.calls import Call
from payi_otel.exporters.spool import HeldBatch
from payi_otel.relay_calls import (
    DEFAULT_HOLD_S,
    SPAN_JOURNAL_NAME,
    Forwarded,
    Held,
    HeldQueue,
    RecentCalls,
    SpanJournal,
    merge_call,
)
from payi_otel.service.otlp import decode_calls, off_loop
from payi_otel.service.otlp_grpc import grpc_receiver
from payi_otel.service.routes.otlp import otlp_router

__all__ = ["ENV_RELAY_HOLD", "ENV_RELAY_KEY", "Forwarder", "RecentCalls", "RelaySink", "create_relay_app", "run_relay"]

log = logging.getLogger("payi_otel.relay")

ENV_RELAY_KEY = "PAYI_OTEL_RELAY_KEY"
ENV_RELAY_HOLD = "PAYI_OTEL_RELAY_HOLD_S"
MAX_HOLD_S = 300.0  # well within the window in which spans of one call are recognised (15 minutes)
_RELEASE_POLL_S = 0.5
DEFAULT_PORT = 4318  # the OTLP/HTTP port collectors and SDKs default to


@dataclass(slots=True)
class RelayOutcome:
    rejected_spans: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def error_message(self) -> str:
        return "; ".join(self.errors)


class SpoolFull(Exception):
    """No event of the request fit in the spool: the sender should retry later."""


def hold_seconds(env: dict[str, str] | None = None) -> float:
    """``PAYI_OTEL_RELAY_HOLD_S``: how long an event waits in the spool for the rest of its call."""
    raw = (dict(os.environ) if env is None else env).get(ENV_RELAY_HOLD, "")
    if not raw.strip():
        return DEFAULT_HOLD_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_HOLD_S:
        raise ValueError(f"{ENV_RELAY_HOLD}={raw!r}: must be a number of seconds from 0 to {MAX_HOLD_S:g}")
    return value


class Forwarder:
    """Calls -> the exporter's spool: each call once, its event held ``hold_s`` seconds for the call's
    other spans (see :mod:`payi_otel.relay_calls`), then released to the exporter's sender.

    Without a spool (the exporter's offline mode) or with ``hold_s`` 0, events are handed over at once
    and the first span of a call stands.
    """

    def __init__(
        self,
        exporter: PayiSpanExporter,
        hold_s: float = DEFAULT_HOLD_S,
        recent: RecentCalls | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.exporter = exporter
        self.hold_s = hold_s
        self.recent = RecentCalls(clock=clock) if recent is None else recent
        self._clock = clock
        self._spool = exporter.spool if hold_s > 0 else None
        self._lock = threading.Lock()  # one request at a time claims calls and writes the spool
        self._queue = HeldQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        if self._spool is not None and self._spool.release_all_held():  # left by a relay that stopped
            exporter.wake_sender()
        spool = exporter.spool
        self._journal = None if spool is None else SpanJournal(spool.directory / SPAN_JOURNAL_NAME)
        if self._journal is not None:
            self.recent.restore(self._journal.load(), time.time())
            self._journal.rewrite(self.recent.entries(time.time()))

    def forward(self, calls: list[Call]) -> tuple[int, int]:
        """Hand ``calls`` over (durably, before returning); returns (new calls, calls dropped: spool full)."""
        with self._lock:
            fresh, seen = self.recent.claim(calls)
            self._complete(seen)
            if not fresh:
                self._journal_spans([call for _, call in seen])
                return 0, 0
            events = [forwarded.call.event for forwarded in fresh]
            try:
                if self._spool is None:
                    dropped = self.exporter.export_events(events)
                else:
                    batches, dropped = self.exporter.hold_events(events)
                    self._track(fresh, batches)
            except BaseException:
                self.recent.release(fresh)
                raise
            if dropped:  # the newest were dropped: forget them, a retry of the request forwards them
                self.recent.release(fresh[len(fresh) - dropped :])
            kept = fresh[: len(fresh) - dropped]
            self._journal_spans([forwarded.call for forwarded in kept] + [call for _, call in seen])
            return len(fresh), dropped

    def _journal_spans(self, calls: list[Call]) -> None:
        """Write the spans of calls now in the spool to the span journal (best effort: the events are safe)."""
        if self._journal is None:
            return
        now = time.time()
        try:
            self._journal.append([(c.trace_id, span, parent, c.key, now) for c in calls for span, parent in c.spans])
            if self._journal.appended > 2 * self.recent.max_spans:
                self._journal.rewrite(self.recent.entries(now))
        except OSError:
            log.warning("relay: could not write %s", self._journal.path, exc_info=True)

    def _complete(self, seen: list[tuple[Forwarded, Call]]) -> None:
        """Fold later spans into the held events of their calls (a released event stands)."""
        rewrite: dict[int, Held] = {}
        for forwarded, call in seen:
            held = forwarded.held
            if held is None or held.released:
                continue
            merge_call(forwarded.call, call)
            rewrite[id(held)] = held
        for held in rewrite.values():
            assert self._spool is not None
            if not self._spool.rewrite_held(held.path, held.events):
                held.released = True  # another relay released it (it started on this spool)

    def _track(self, fresh: list[Forwarded], batches: list[HeldBatch]) -> None:
        due = self._clock() + self.hold_s
        calls = iter(fresh)
        for path, events in batches:
            held = Held(path, events, due)
            self._queue.add(held)
            for _ in events:
                next(calls).held = held

    # -- releasing held batches ---------------------------------------------------------

    def start(self) -> None:
        if self._spool is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="payi-otel-relay-hold", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Release every held batch now (no more spans will come to this relay)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._release(self._queue.all)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._release(lambda: self._queue.due(self._clock()))
            except Exception:  # never let the thread die; the batch stays held and is tried again
                log.exception("relay: could not release held events")
            with self._lock:
                next_due = self._queue.next_due()
            wait = _RELEASE_POLL_S if next_due is None else min(_RELEASE_POLL_S, next_due - self._clock())
            self._stopping.wait(max(wait, 0.0))

    def _release(self, take: Callable[[], list[Held]]) -> None:
        if self._spool is None:
            return
        with self._lock:
            batches = take()
            for held in batches:
                self._spool.release_held(held.path)
                held.released = True
        if batches:
            self.exporter.wake_sender()


class RelaySink:
    """Spans received over OTLP -> Pay-i events -> the exporter's durable spool."""

    def __init__(self, exporter: PayiSpanExporter, key: str | None, forwarder: Forwarder | None = None) -> None:
        self.exporter = exporter
        self._key = key
        self.forwarder = Forwarder(exporter) if forwarder is None else forwarder

    def authenticate(self, key: str | None) -> bool | None:
        if self._key is None:
            return True
        return True if key is not None and hmac.compare_digest(key.encode(), self._key.encode()) else None

    async def export(self, principal: Any, body: bytes, content_type: str | None) -> RelayOutcome:
        include_content = self.exporter.config.export_content
        calls = await off_loop(lambda: decode_calls(body, content_type, include_content))
        if not calls:
            return RelayOutcome()
        forwarded, dropped = await off_loop(lambda: self.forwarder.forward(calls))
        if dropped and dropped == forwarded:
            raise SpoolFull(f"the relay's spool is full ({self.exporter.config.spool_max_bytes} bytes)")
        outcome = RelayOutcome()
        if dropped:
            outcome.rejected_spans = dropped
            outcome.errors.append(f"{dropped} event(s) dropped: the relay's spool is full")
        return outcome


def inbound_key(env: dict[str, str] | None = None) -> str | None:
    env = dict(os.environ) if env is None else env
    return env.get(ENV_RELAY_KEY) or env.get("PAYI_API_KEY") or None


def create_relay_app(
    exporter: PayiSpanExporter,
    key: str | None,
    *,
    grpc_host: str = "127.0.0.1",
    grpc_port: int | None = None,
    hold_s: float = DEFAULT_HOLD_S,
) -> FastAPI:
    """The relay's ASGI app: ``POST /v1/traces`` (and OTLP/gRPC on ``grpc_port``) into ``exporter``.

    When the app stops, the held events are released and the exporter is shut down: what it cannot
    deliver within its shutdown timeout stays in its spool for the next start.
    """
    forwarder = Forwarder(exporter, hold_s)
    sink = RelaySink(exporter, key, forwarder)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        forwarder.start()
        try:
            async with grpc_receiver(app, sink, grpc_host, grpc_port):
                yield
        finally:
            await off_loop(forwarder.stop)
            await off_loop(exporter.shutdown)

    app = FastAPI(
        title="payi-otel relay",
        version="1",
        description=f"Receives OTLP traces and forwards Pay-i events to {exporter.config.base_url}.",
        lifespan=lifespan,
    )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(otlp_router(sink))
    return app


def run_relay(host: str, port: int, grpc_port: int | None = None, hold_s: float | None = None) -> None:
    """Run the relay in the foreground until SIGINT/SIGTERM; settings from the ``PAYI_*`` environment
    (``hold_s`` from ``PAYI_OTEL_RELAY_HOLD_S`` when not given)."""
    from payi_otel.service.server import _config, _Server

    hold_s = hold_seconds() if hold_s is None else hold_s
    exporter = PayiSpanExporter()
    app = create_relay_app(exporter, inbound_key(), grpc_host=host, grpc_port=grpc_port, hold_s=hold_s)

    def announce(base_url: str) -> None:
        print(f"payi-otel relay listening on {base_url}/v1/traces", flush=True)
        if app.state.otlp_grpc_port is not None:
            print(f"  OTLP/gRPC: {host}:{app.state.otlp_grpc_port}", flush=True)
        print(f"  forwarding to {exporter.config.base_url} through the spool {exporter.config.spool_dir}", flush=True)
        print(f"  each event held {hold_s:g}s for later spans of its call ({ENV_RELAY_HOLD})", flush=True)

    _Server(_config(app, host, port), on_started=announce).run()
    print("payi-otel relay stopped", file=sys.stderr, flush=True)
