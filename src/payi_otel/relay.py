"""``payi-otel relay``: receive OTLP traces and forward their Pay-i events to any Pay-i API.

A collector (or an application's OTLP exporter) sends traces to the relay; the relay maps each GenAI
provider call to an ingest event exactly as the exporter does, joins two spans of one call that arrive
in the same request (see :mod:`payi_otel.exporters.calls`), forwards a call whose other span it
already forwarded in an earlier request no second time (see :class:`RecentCalls`), and hands the events to a
:class:`~payi_otel.exporters.PayiSpanExporter`: they are on disk (fsynced, in the exporter's spool)
before the relay answers, and its background sender delivers them to ``PAYI_BASE_URL`` with retries,
across outages and restarts. All ``PAYI_*`` exporter settings apply (key, ingest mode, spool, ...).

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
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from payi_otel.exporters import PayiSpanExporter
from payi_otel.exporters.calls import Call
from payi_otel.service.otlp import SAME_CALL_WINDOW_S, decode_calls, off_loop
from payi_otel.service.otlp_grpc import grpc_receiver
from payi_otel.service.routes.otlp import otlp_router

__all__ = ["ENV_RELAY_KEY", "RecentCalls", "RelaySink", "create_relay_app", "run_relay"]

log = logging.getLogger("payi_otel.relay")

ENV_RELAY_KEY = "PAYI_OTEL_RELAY_KEY"
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


RECENT_SPANS_MAX = 100_000  # spans remembered at most (a few tens of MiB), the oldest forgotten first


class RecentCalls:
    """The spans of the calls the relay forwarded lately, to forward each call once across requests.

    Two spans are one call when they are in the same trace, one is the direct parent of the other, and
    they have the same call key (category and model): the rule of :mod:`payi_otel.exporters.calls`. A
    span is remembered for ``window_s`` (the service's window, 15 minutes), at most ``max_spans`` of
    them, in memory (a restart forgets them). The call forwarded first stands: Pay-i offers no way to
    replace a stored request, so its event keeps what the first span carried.
    """

    def __init__(
        self,
        window_s: float = SAME_CALL_WINDOW_S,
        max_spans: int = RECENT_SPANS_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._max_spans = max_spans
        self._clock = clock
        # (trace id, span id) -> (call key, parent span id, when seen), oldest first
        self._spans: OrderedDict[tuple[str, str], tuple[str, str, float]] = OrderedDict()
        self._children: dict[tuple[str, str], str] = {}  # (trace id, parent span id) -> the child's call key
        self._lock = threading.Lock()

    def claim(self, calls: list[Call]) -> list[Call]:
        """The calls not forwarded before (now remembered as forwarded)."""
        with self._lock:
            now = self._clock()
            while self._spans and next(iter(self._spans.values()))[2] < now - self._window_s:
                self._forget_oldest()
            fresh = []
            for call in calls:
                if not self._seen(call):
                    fresh.append(call)
                    for span, parent in call.spans:
                        self._spans[(call.trace_id, span)] = (call.key, parent, now)
                        if parent:
                            self._children[(call.trace_id, parent)] = call.key
            while len(self._spans) > self._max_spans:
                self._forget_oldest()
            return fresh

    def release(self, calls: list[Call]) -> None:
        """Forget calls that were claimed but could not be forwarded."""
        with self._lock:
            for call in calls:
                for span, parent in call.spans:
                    self._spans.pop((call.trace_id, span), None)
                    if parent and self._children.get((call.trace_id, parent)) == call.key:
                        del self._children[(call.trace_id, parent)]

    def _seen(self, call: Call) -> bool:
        for span, parent in call.spans:
            if parent:
                remembered = self._spans.get((call.trace_id, parent))
                if remembered is not None and remembered[0] == call.key:
                    return True  # its parent span was forwarded as this call
            if self._children.get((call.trace_id, span)) == call.key:
                return True  # its child span was
        return False

    def _forget_oldest(self) -> None:
        (trace_id, _), (key, parent, _) = self._spans.popitem(last=False)
        if parent and self._children.get((trace_id, parent)) == key:
            del self._children[(trace_id, parent)]


class RelaySink:
    """Spans received over OTLP -> Pay-i events -> the exporter's durable spool."""

    def __init__(self, exporter: PayiSpanExporter, key: str | None, recent: RecentCalls | None = None) -> None:
        self.exporter = exporter
        self._key = key
        self.recent = RecentCalls() if recent is None else recent

    def authenticate(self, key: str | None) -> bool | None:
        if self._key is None:
            return True
        return True if key is not None and hmac.compare_digest(key.encode(), self._key.encode()) else None

    async def export(self, principal: Any, body: bytes, content_type: str | None) -> RelayOutcome:
        include_content = self.exporter.config.export_content
        calls = self.recent.claim(await off_loop(lambda: decode_calls(body, content_type, include_content)))
        events = [call.event for call in calls]
        if not events:
            return RelayOutcome()
        dropped = await off_loop(lambda: self.exporter.export_events(events))
        if dropped == len(events):
            self.recent.release(calls)
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
    exporter: PayiSpanExporter, key: str | None, *, grpc_host: str = "127.0.0.1", grpc_port: int | None = None
) -> FastAPI:
    """The relay's ASGI app: ``POST /v1/traces`` (and OTLP/gRPC on ``grpc_port``) into ``exporter``.

    The exporter is shut down when the app stops: what it cannot deliver within its shutdown timeout
    stays in its spool for the next start.
    """
    sink = RelaySink(exporter, key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with grpc_receiver(app, sink, grpc_host, grpc_port):
                yield
        finally:
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


def run_relay(host: str, port: int, grpc_port: int | None = None) -> None:
    """Run the relay in the foreground until SIGINT/SIGTERM; settings from the ``PAYI_*`` environment."""
    from payi_otel.service.server import _config, _Server

    exporter = PayiSpanExporter()
    app = create_relay_app(exporter, inbound_key(), grpc_host=host, grpc_port=grpc_port)

    def announce(base_url: str) -> None:
        print(f"payi-otel relay listening on {base_url}/v1/traces", flush=True)
        if app.state.otlp_grpc_port is not None:
            print(f"  OTLP/gRPC: {host}:{app.state.otlp_grpc_port}", flush=True)
        print(f"  forwarding to {exporter.config.base_url} through the spool {exporter.config.spool_dir}", flush=True)

    _Server(_config(app, host, port), on_started=announce).run()
    print("payi-otel relay stopped", file=sys.stderr, flush=True)
