"""``PayiSpanExporter``: the OpenTelemetry SDK span exporter that feeds Pay-i.

Calls traced by payi-otel's own instrumentation do not wait for their span: when the exporter is
created it registers a :class:`~payi_otel.exporters.journal.Journal` with the span core, which has every
finished call on disk before control returns to the caller, whatever the trace sampler decided, and
turns it into an event in the background. ``export()`` therefore skips our own spans that were
journaled, and the spans of other instrumentations that traced the same call as one of ours
(:func:`payi_otel.processor.covered`); it maps every other GenAI span (calls only other
instrumentations traced) to an ingest event. Events go to the on-disk spool, where the background
sender picks them up; ``export()`` never touches the network and never raises. In offline mode
(``PAYI_OFFLINE_FILE``) the events are appended to a JSON Lines file instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from payi_otel import finished, processor

from .config import ExporterConfig
from .delivery import DeliveryWorker, RateLimitedLog
from .journal import Journal
from .mapping import event_from_view
from .offline import OfflineWriter
from .sender import Backoff, Sender
from .spool import HeldBatch, Spool
from .views import view_from_readable_span

__all__ = ["PayiSpanExporter"]

logger = logging.getLogger("payi_otel.exporters")


class PayiSpanExporter(SpanExporter):
    """Turns finished GenAI spans into Pay-i ingest events and delivers them in the background.

    With no arguments every setting comes from the environment (see :mod:`.config`); keyword
    arguments (``base_url``, ``api_key``, ``ingest_mode``, ``timeout``, ``batch_size``,
    ``spool_dir``, ``spool_max_bytes``, ``offline_file``, ``export_content``,
    ``shutdown_timeout``, ``retry_initial_backoff``, ``retry_max_backoff``) override it.
    A bad keyword argument raises :class:`~payi_otel.exporters.config.ConfigError`. A bad
    environment value does not (the SDK builds this exporter while it configures every exporter, and
    an exception there would leave the application with no telemetry at all): it is logged as one
    error naming the variable and the rule, and events are kept in the spool, unsent, until a start
    with correct settings delivers them.

    ``dropped_events`` counts events lost because the spool was full; ``exported_events`` counts
    events accepted by ``export()``.
    """

    def __init__(self, **settings: Any) -> None:
        # Built from the environment alone (as the SDK configurator does), bad values are reported,
        # not raised; built in code, a bad value raises like any bad argument.
        from_env_only = all(value is None for value in settings.values())
        problems: list[str] | None = [] if from_env_only else None
        self.config = config = ExporterConfig.load(problems=problems, **settings)
        self.dropped_events = 0
        self.exported_events = 0
        self._drop_log = RateLimitedLog()
        self._shutdown = False
        self._lock = threading.Lock()
        self._offline: OfflineWriter | None = None
        self._spool: Spool | None = None
        self._worker: DeliveryWorker | None = None
        self._journal: Journal | None = None
        self._journaling_since = 0
        self._start(problems)
        self._journal = Journal(config.spool_dir, self._accept, include_content=config.export_content)
        finished.add_sink(self._journal.record)
        # A call of ours whose span ends from now on was journaled (the core reads the sinks after taking
        # the end time): its span needs no mapping.
        self._journaling_since = time.time_ns()
        processor.ensure_processor()
        _exporters.add(self)

    def _after_fork_in_child(self) -> None:
        """A forked child (a pre-fork server's worker) has none of the parent's threads: locks they may have held
        at the fork are made anew, and the sender starts again (the journal restarts by itself)."""
        if self._shutdown:
            return
        self._lock = threading.Lock()
        if self._offline is not None:
            self._offline.after_fork_in_child()
        if self._spool is not None:
            self._spool.after_fork_in_child()
        if self._worker is not None:
            self._worker.after_fork_in_child()

    def _start(self, problems: list[str] | None) -> None:
        config = self.config
        if config.offline_file is not None:
            self._offline = OfflineWriter(config.offline_file)
            logger.info("Pay-i exporter: offline mode, events are written to %s", config.offline_file)
            return
        self._spool = Spool(config.spool_dir, config.spool_max_bytes)
        if problems:  # nothing is sent: the settings to fix are the only thing to say
            logger.error(
                "Pay-i exporter: %s; events are kept in %s and sent by the next start with correct settings",
                "; ".join(problems),
                config.spool_dir,
            )
            return
        if not config.api_key:
            logger.warning(
                "Pay-i exporter: PAYI_API_KEY is not set; %s will see requests without xProxy-api-key",
                config.base_url,
            )
        sender = Sender(config.base_url, config.api_key, config.ingest_mode, config.timeout, config.extra_headers)
        backoff = Backoff(base=config.retry_initial_backoff, cap=config.retry_max_backoff)
        self._worker = DeliveryWorker(
            self._spool, sender, backoff, max_attempts=config.retry_max_attempts, max_age=config.retry_max_age
        )

    # -- facts for users and tests ------------------------------------------------------

    @property
    def spool(self) -> Spool | None:
        return self._spool

    @property
    def delivered_events(self) -> int:
        return self._worker.delivered if self._worker else 0

    @property
    def rejected_events(self) -> int:
        return self._worker.rejected if self._worker else 0

    # -- SpanExporter ---------------------------------------------------------------------

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            include_content = self.config.export_content
            events = []
            for span in spans:
                if self._already_recorded(span):
                    continue
                try:
                    event = event_from_view(view_from_readable_span(span), include_content=include_content)
                except Exception:
                    name = getattr(span, "name", span)
                    logger.exception("Pay-i exporter: could not map span %r; it is skipped", name)
                    continue
                if event is not None:
                    events.append(event)
            if events:
                self._accept(events)
            return SpanExportResult.SUCCESS
        except Exception:
            logger.exception("Pay-i exporter: could not spool %d span(s)", len(spans))
            return SpanExportResult.FAILURE

    def export_events(self, events: list[dict[str, Any]]) -> int:
        """Deliver already mapped ingest events the same way (spool, or the offline file); returns how many
        were dropped because the spool is full. Used by ``payi-otel relay`` for spans received over OTLP."""
        if self._shutdown:
            raise RuntimeError("the Pay-i exporter was shut down")
        dropped = self.dropped_events
        self._accept(events)
        return self.dropped_events - dropped

    def _already_recorded(self, span: Any) -> bool:
        """Our span whose call the journal has, or another instrumentation's span of such a call."""
        ctx = span.context
        if ctx is None:
            return False
        scope = getattr(span, "instrumentation_scope", None)
        if scope is not None and scope.name == processor.SCOPE_NAME:
            return self._journal is not None and (span.end_time or 0) >= self._journaling_since
        return processor.covered(ctx.span_id)

    def hold_events(self, events: list[dict[str, Any]]) -> tuple[list[HeldBatch], int]:
        """:meth:`export_events` into held spool batches (see :meth:`Spool.hold`), which the sender takes
        only once the caller released them; returns the batches and how many events were dropped."""
        if self._shutdown:
            raise RuntimeError("the Pay-i exporter was shut down")
        if self._spool is None:
            raise RuntimeError("the Pay-i exporter has no spool (offline mode)")
        with self._lock:
            batches, dropped = self._spool.hold(events, self.config.batch_size)
        self._count(len(events), dropped)
        return batches, dropped

    def wake_sender(self) -> None:
        """Have the sender look at the spool now (held batches were released)."""
        if self._worker is not None:
            self._worker.wake()

    def _accept(self, events: list[dict[str, Any]]) -> None:
        """Store ``events`` durably (spool or offline file) and wake the sender."""
        if self._offline is not None:
            self._offline.write(events)
            self.exported_events += len(events)
            return
        assert self._spool is not None
        with self._lock:
            dropped = self._spool.append(events, self.config.batch_size)
        self._count(len(events), dropped)
        self.wake_sender()

    def _count(self, accepted: int, dropped: int) -> None:
        self.exported_events += accepted - dropped
        if dropped:
            assert self._spool is not None
            self.dropped_events += dropped
            self._drop_log(
                logging.WARNING,
                "Pay-i exporter: spool %s is full (%d bytes max); %d new event(s) dropped, %d in total",
                self._spool.directory,
                self.config.spool_max_bytes,
                dropped,
                self.dropped_events,
            )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            if self._journal is not None:
                self._journal.flush()
            if self._worker is None:
                return True
            return self._worker.flush(timeout_millis / 1000)
        except Exception:
            logger.exception("Pay-i exporter: force_flush failed")
            return False

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        if self._journal is not None:
            finished.end_calls_left_at_exit()  # at exit: streams still held unfinished, while the journal is open
            finished.remove_sink(self._journal.record)
            try:
                self._journal.close()
            except Exception:
                logger.exception("Pay-i exporter: could not close the call journal")
        if self._worker is None:
            return
        try:
            if not self._worker.stop(self.config.shutdown_timeout):
                logger.warning(
                    "Pay-i exporter: %d batch(es) not delivered before shutdown; they stay in %s and are "
                    "sent by the next exporter started with this spool",
                    self._spool.pending_batches() if self._spool else 0,
                    self.config.spool_dir,
                )
        except Exception:
            logger.exception("Pay-i exporter: shutdown failed")


_exporters: weakref.WeakSet[PayiSpanExporter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for exporter in list(_exporters):
        exporter._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
