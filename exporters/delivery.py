"""The background sender: drains the spool to the API on its own thread.

:class:`DeliveryWorker` takes spooled batches (locked, oldest first), posts them with a
:class:`~payi_otel.exporters.sender.Sender`, removes what the server acknowledged, moves what it
rejected for good to the dead-letter file, and on retryable trouble waits (exponential backoff,
full jitter, ``Retry-After``) and tries again, for as long as it takes. Nothing here ever runs on
the application's thread except :meth:`flush` / :meth:`stop`, which wait at most their timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .sender import Backoff, Sender
from .spool import Spool

__all__ = ["DeliveryWorker", "RateLimitedLog"]

logger = logging.getLogger("payi_otel.exporters")

_POLL_INTERVAL_S = 5.0  # look for batches left by other processes / earlier runs this often
_dead_letter_logged: set[str] = set()
_dead_letter_logged_lock = threading.Lock()


class RateLimitedLog:
    """Logs a message at most once per ``interval`` seconds, telling how many were suppressed."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last = float("-inf")
        self._suppressed = 0
        self._lock = threading.Lock()

    def __call__(self, level: int, msg: str, *args: Any) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        logger.log(level, msg, *args)


class DeliveryWorker:
    def __init__(self, spool: Spool, sender: Sender, backoff: Backoff) -> None:
        self.spool = spool
        self.sender = sender
        self.backoff = backoff
        self.delivered = 0
        self.rejected = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._requested = 0  # drain requests made
        self._completed = 0  # highest request a finished drain answered
        self._deadline: float | None = None  # while stopping: requests must end by then
        self._retry_log = RateLimitedLog()
        self._thread = threading.Thread(target=self._run, name="payi-otel-sender", daemon=True)
        self._thread.start()
        self.wake()  # batches left by an earlier run go out now

    # -- called from other threads ------------------------------------------------------

    def wake(self) -> int:
        with self._cond:
            self._requested += 1
            ticket = self._requested
        self._wake.set()
        return ticket

    def flush(self, timeout: float) -> bool:
        """Wait until every batch this process can claim has been resolved, at most ``timeout`` s."""
        ticket = self.wake()
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while self._completed < ticket:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def stop(self, timeout: float) -> bool:
        """Deliver what can be delivered within ``timeout`` s, then stop; the rest stays spooled."""
        self._deadline = time.monotonic() + max(timeout, 0.0)
        done = self.flush(timeout)
        self._stopping.set()
        self._wake.set()
        self._thread.join(max(self._deadline - time.monotonic(), 0.0) + 0.05)
        if not self._thread.is_alive():
            self.sender.close()
        return done

    # -- the sender thread --------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(_POLL_INTERVAL_S)
            self._wake.clear()
            if self._stopping.is_set():
                break
            with self._cond:
                ticket = self._requested
            try:
                drained = self._drain()
            except Exception:  # never let the thread die; try again on the next wake
                logger.exception("Pay-i exporter: unexpected error while sending spooled events")
                drained = False
                self._stopping.wait(1.0)
            if drained:
                with self._cond:
                    self._completed = max(self._completed, ticket)
                    self._cond.notify_all()

    def _time_left(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _drain(self) -> bool:
        """Send every claimable batch; True when nothing claimable is left."""
        while not self._stopping.is_set():
            delay = None
            for batch in self.spool.claim():
                try:
                    left = self._time_left()
                    if left is not None and left <= 0:
                        batch.release()
                        return False
                    outcome = self.sender.send(batch.events, timeout=left)
                    if outcome.rejected:
                        self._dead_letter(outcome.rejected)
                    batch.keep(outcome.remaining)
                except BaseException:
                    batch.release()
                    raise
                self.delivered += outcome.delivered
                if outcome.remaining:
                    delay = self.backoff.next_delay(outcome.retry_after)
                    level = logging.ERROR if outcome.config_error else logging.WARNING
                    self._retry_log(
                        level,
                        "Pay-i exporter: %d event(s) not delivered to %s yet (%s); kept in the spool %s, "
                        "retrying in %.1fs",
                        len(outcome.remaining),
                        self.sender.mode,
                        outcome.error,
                        self.spool.directory,
                        delay,
                    )
                    break
                self.backoff.reset()
            if delay is None:
                return True
            if self._stopping.wait(delay):
                return False
        return False

    def _dead_letter(self, rejected: list[Any]) -> None:
        self.spool.dead_letter(
            [{"status": r.status, "reason": r.reason, "event": r.event} for r in rejected]
        )
        self.rejected += len(rejected)
        path = str(self.spool.dead_letter_path)
        with _dead_letter_logged_lock:
            first = path not in _dead_letter_logged
            _dead_letter_logged.add(path)
        if first:
            logger.error(
                "Pay-i exporter: the server rejected %d event(s) for good (first: %s); rejected events "
                "are written to %s",
                len(rejected),
                rejected[0].reason,
                path,
            )
