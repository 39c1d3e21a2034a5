"""The background sender: drains the spool to the API on its own thread.

:class:`DeliveryWorker` takes spooled batches (locked, oldest first), posts them with a
:class:`~payi_otel.exporters.sender.Sender`, removes what the server acknowledged, moves what it
rejected for good to the dead-letter file, and on retryable trouble waits (exponential backoff,
full jitter, ``Retry-After``) and tries again. While the server is unreachable or unavailable that
lasts as long as it takes. An event the server answers with a server error of its own (500, ...)
is retried with its own backoff while the other batches go on, and after ``max_attempts`` such
answers (or ``max_age`` seconds after the first) it goes to the dead-letter file with the
server's last answer. Nothing here ever runs on the application's thread except :meth:`flush` /
:meth:`stop`, which wait at most their timeout.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sender import Backoff, Rejection, Sender
from .spool import Batch, Spool

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


@dataclass(slots=True)
class _Strikes:
    """Server errors one event got: how many, and when the first came (monotonic seconds)."""

    count: int
    first: float


def _event_key(event: dict[str, Any]) -> str:
    key = event.get("provider_response_id")
    return key if isinstance(key, str) else json.dumps(event, sort_keys=True, default=str)


DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_MAX_AGE_S = 3600.0


class DeliveryWorker:
    def __init__(
        self,
        spool: Spool,
        sender: Sender,
        backoff: Backoff,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_age: float = DEFAULT_MAX_AGE_S,
    ) -> None:
        self.spool = spool
        self.sender = sender
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.max_age = max_age
        self._strikes: dict[str, _Strikes] = {}  # events that got server errors, by event id
        self._retry_at: dict[Path, float] = {}  # batches holding only such events: not before (monotonic)
        self.delivered = 0
        self.rejected = 0
        self._retry_log = RateLimitedLog()
        self._start()

    def _start(self) -> None:
        """The thread and its signals (again in a forked child, which has none of its parent's threads)."""
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._requested = 0  # drain requests made
        self._completed = 0  # highest request a finished drain answered
        self._deadline: float | None = None  # while stopping: requests must end by then
        self._thread = threading.Thread(target=self._run, name="payi-otel-sender", daemon=True)
        self._thread.start()
        self.wake()  # batches left by an earlier run go out now

    def after_fork_in_child(self) -> None:
        """Send on in a forked child: a sender thread and connections of its own. The spool's batches are
        claimed under a file lock, so the parent and the child never send the same one."""
        self._retry_at = {}  # the parent's deferred batches are the parent's to retry
        self.sender.reopen()
        self._start()

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
            next_retry = min(self._retry_at.values(), default=None)
            wait = _POLL_INTERVAL_S if next_retry is None else min(_POLL_INTERVAL_S, next_retry - time.monotonic())
            self._wake.wait(max(wait, 0.0))
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
        """Send every claimable batch; True when nothing claimable is left (batches that hold only
        events waiting for their own retry time count as resolved until then)."""
        while not self._stopping.is_set():
            delay = None
            now = time.monotonic()  # batches due now are tried in this pass (and deferred again if they fail)
            self._retry_at = {path: at for path, at in self._retry_at.items() if at > now}
            for batch in self.spool.claim():
                try:
                    if self._retry_at.get(batch.path, 0.0) > time.monotonic():
                        batch.release()
                        continue
                    left = self._time_left()
                    if left is not None and left <= 0:
                        batch.release()
                        return False
                    outcome = self.sender.send(batch.events, timeout=left)
                    retry_later = self._judge_failures(outcome.failed, outcome.rejected)
                    if outcome.rejected:
                        self._dead_letter(outcome.rejected)
                    self._settle(batch, outcome.remaining, retry_later)
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
                        self.sender.base_url,
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

    def _judge_failures(self, failed: list[Rejection], rejected: list[Rejection]) -> list[dict[str, Any]]:
        """Count a server error against each event that got one: those past ``max_attempts`` or
        ``max_age`` join ``rejected`` (with the server's answer); the others are returned, to retry."""
        now = time.monotonic()
        retry: list[dict[str, Any]] = []
        for failure in failed:
            key = _event_key(failure.event)
            strikes = self._strikes.get(key)
            if strikes is None:
                strikes = self._strikes[key] = _Strikes(0, now)
            strikes.count += 1
            if strikes.count >= self.max_attempts or now - strikes.first >= self.max_age:
                del self._strikes[key]
                failure.reason += f" (gave up after {strikes.count} attempts over {now - strikes.first:.0f}s)"
                rejected.append(failure)
            else:
                retry.append(failure.event)
        if failed:
            self._retry_log(
                logging.WARNING,
                "Pay-i exporter: the server answered %d event(s) with a server error (first: %s); "
                "they are retried on their own, the other events go on",
                len(failed),
                failed[0].reason,
            )
        return retry

    def _settle(self, batch: Batch, remaining: list[dict[str, Any]], retry_later: list[dict[str, Any]]) -> None:
        """Shrink the batch to what is left; one left with only events that got server errors
        waits for the retry time of the least tried of them, while the other batches go on."""
        keep = remaining + retry_later
        kept = {_event_key(e) for e in keep}
        for event in batch.events:
            key = _event_key(event)
            if key not in kept:
                self._strikes.pop(key, None)
        if retry_later and not remaining:
            fewest = min(self._strikes[_event_key(e)].count for e in retry_later)
            cap = min(self.backoff.cap, self.backoff.base * 2 ** min(fewest, 32))
            self._retry_at[batch.path] = time.monotonic() + random.uniform(cap / 2, cap)
        batch.keep(keep)

    def _dead_letter(self, rejected: list[Any]) -> None:
        self.spool.dead_letter([{"status": r.status, "reason": r.reason, "event": r.event} for r in rejected])
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
