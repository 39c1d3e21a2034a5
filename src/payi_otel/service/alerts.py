"""Limit alerts: delivers the alerts the store raised (threshold or max crossed) to a webhook.

Each crossing is one row in the store's outbox, written in the same transaction as the spend that
crossed the line, so it exists exactly once. The deliverer logs it, POSTs it as JSON to the
configured URL, and retries with exponential backoff (full jitter) until a 2xx answer or the attempt
limit. The body carries ``alert_id``: a receiver that answered 2xx but whose answer was lost sees the
same ``alert_id`` again and can drop the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from payi_otel.service.store import Store

log = logging.getLogger("payi_otel.service.alerts")
WEBHOOK_ENV = "PAYI_OTEL_WEBHOOK_URL"


class AlertDeliverer:
    def __init__(
        self,
        store: Store,
        url: str | None,
        write: Callable[[Callable[[], Any]], Awaitable[Any]],
        *,
        initial_backoff: float = 0.5,
        max_backoff: float = 60.0,
        max_attempts: int = 10,
        timeout: float = 5.0,
        poll_interval: float = 0.5,
    ) -> None:
        self.store = store
        self.url = url
        self._write = write  # runs store writes on the service's writer (group commit)
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self._timeout = timeout
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Deliver soon (callable from any thread)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            while True:
                try:
                    await self._deliver_due(client)
                except Exception:  # a broken store or client must not stop later deliveries
                    log.exception("limit alert delivery failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                self._wake.clear()

    async def _deliver_due(self, client: httpx.AsyncClient) -> None:
        for alert_id, attempts, payload in self.store.due_alerts(self._now_ms()):
            if attempts == 0:
                log.warning(
                    "limit %r (%s) of application %r crossed its %s: spend %s USD, max %s USD, threshold %s",
                    payload["limit_name"],
                    payload["limit_id"],
                    payload.get("application"),
                    payload["event"].removeprefix("limit.").removesuffix("_crossed"),
                    payload["spend"],
                    payload["max"],
                    payload["threshold"],
                )
            if self.url is None:
                await self._record(alert_id, done=True, outcome="logged (no webhook URL)", attempts=attempts)
                continue
            outcome = await self._post(client, {"alert_id": alert_id, **payload})
            if outcome is None:
                log.info("limit alert %s delivered to %s", alert_id, self.url)
                await self._record(alert_id, done=True, outcome="delivered", attempts=attempts)
            elif attempts + 1 >= self.max_attempts:
                log.error(
                    "limit alert %s not delivered after %s attempts (%s); giving up", alert_id, attempts + 1, outcome
                )
                await self._record(alert_id, done=True, outcome=f"gave up: {outcome}", attempts=attempts)
            else:
                delay = random.uniform(0, min(self.max_backoff, self.initial_backoff * 2**attempts))
                log.warning("limit alert %s not delivered (%s); retrying in %.1f s", alert_id, outcome, delay)
                await self._record(alert_id, done=False, outcome=outcome, attempts=attempts, delay=delay)

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> str | None:
        """None when delivered, else what went wrong."""
        assert self.url is not None
        try:
            response = await client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if response.is_success else f"HTTP {response.status_code}"

    async def _record(self, alert_id: int, *, done: bool, outcome: str, attempts: int, delay: float = 0.0) -> None:
        now = self._now_ms()
        await self._write(
            lambda: self.store.alert_attempted(
                alert_id, done=done, outcome=outcome, next_attempt_ms=now + int(delay * 1000), now_ms=now
            )
        )

    def _now_ms(self) -> int:
        return int(time.time() * 1000)  # real time: retries wait real seconds whatever the limits' clock


async def run_scheduled_resets(apply: Callable[[], Any], interval: float) -> None:
    """Apply due limit resets now and then every ``interval`` seconds (``apply`` commits them)."""
    while True:
        try:
            await apply()
        except Exception:
            log.exception("applying scheduled limit resets failed; retrying")
        await asyncio.sleep(interval)
