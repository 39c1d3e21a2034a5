"""HTTP delivery of ingest events to a Pay-i API, and the retry policy.

:class:`Sender` posts events in one of the two ingest forms and classifies the answer into a
:class:`Delivery`: which events the server acknowledged, which it rejected for good (with its
reason) and whether the rest should be retried (and after how long the server asked us to wait).
It never sleeps and never raises for network trouble; the caller decides when to try again using
:class:`Backoff` (exponential, full jitter, ``Retry-After`` honoured).
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry.instrumentation.utils import suppress_http_instrumentation, suppress_instrumentation

from payi_otel import enforcement
from payi_otel import protocol as P

from .mapping import render_bulk_item, render_single

__all__ = ["Backoff", "Delivery", "Rejection", "Sender", "parse_retry_after"]

INGEST_PATH = "/api/v1/ingest"
BULK_PATH = "/api/v1/ingest/bulk"
# The server is unavailable (overloaded, restarting, behind a gateway that cannot reach it): no
# event is at fault, so these are retried for as long as it takes, like a connection error.
_UNAVAILABLE_STATUS = frozenset({408, 425, 429, 502, 503, 504})
# The key is wrong or lacks rights: every event would fail the same way, and none is at fault.
_CONFIG_STATUS = frozenset({401, 403})


@dataclass(slots=True)
class Rejection:
    event: dict[str, Any]
    status: int | None
    reason: str


@dataclass
class Delivery:
    """Outcome of sending some events.

    ``delivered + len(rejected) + len(failed) + len(remaining)`` = events tried.
    """

    delivered: int = 0
    rejected: list[Rejection] = field(default_factory=list)  # refused for good: dead-letter them
    failed: list[Rejection] = field(default_factory=list)  # this event got a server error: retry it later
    remaining: list[dict[str, Any]] = field(default_factory=list)  # not delivered (server unreachable), in order
    retry_after: float | None = None  # seconds the server asked us to wait
    error: str | None = None  # why ``remaining`` is not empty
    config_error: bool = False  # the server refuses our credentials (401/403)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n)),
    or at least what the server asked for with ``Retry-After`` (bounded by ``max_retry_after``)."""

    def __init__(self, base: float = 0.5, cap: float = 60.0, max_retry_after: float = 600.0) -> None:
        self.base, self.cap, self.max_retry_after = base, cap, max_retry_after
        self.attempt = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        delay = random.uniform(0.0, min(self.cap, self.base * (2**self.attempt)))
        self.attempt = min(self.attempt + 1, 32)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    def reset(self) -> None:
        self.attempt = 0


def _reason(response: httpx.Response) -> str:
    """The server's own words for a failed answer (``xproxy_error`` / ``message``), else the body."""
    text = response.text[:2000]
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {text}".strip()
    if isinstance(body, Mapping):
        err = body.get("xproxy_error")
        if isinstance(err, Mapping) and (err.get("code") or err.get("message")):
            return f"HTTP {response.status_code}: {err.get('code')}: {err.get('message')}"
        if body.get("message"):
            return f"HTTP {response.status_code}: {body['message']}"
    return f"HTTP {response.status_code}: {text}"


def _xproxy_result(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("xproxy_result") if isinstance(body, Mapping) else None


def _encode_headers(headers: Mapping[str, str]) -> dict[str, bytes]:
    # Header values may carry any text (user ids, use case names); send them as UTF-8.
    return {k: v.encode() for k, v in headers.items()}


class Sender:
    """Posts events to ``base_url`` in ``mode`` ``"single"`` or ``"bulk"``."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        mode: str,
        timeout: float,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        if mode not in ("single", "bulk"):
            raise ValueError(f"mode={mode!r}: must be 'single' or 'bulk'")
        self.mode = mode
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        headers = {"User-Agent": "payi-otel", **dict(extra_headers)}
        if api_key:
            headers[P.API_KEY] = api_key
        self._client_settings: dict[str, Any] = dict(base_url=self.base_url, headers=headers, timeout=timeout)
        self._client = httpx.Client(**self._client_settings)

    def close(self) -> None:
        self._client.close()

    def reopen(self) -> None:
        """A client of its own (in a forked child): the inherited one's connections are the parent's, left alone."""
        self._client = httpx.Client(**self._client_settings)

    def send(self, events: list[dict[str, Any]], timeout: float | None = None) -> Delivery:
        """Try to deliver ``events`` once (``timeout`` caps each request)."""
        if self.mode == "bulk":
            return self._send_bulk(events, timeout)
        return self._send_single(events, timeout)

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else max(min(timeout, self.timeout), 0.001)

    def _post(self, path: str, timeout: float | None, **kwargs: Any) -> httpx.Response | str:
        try:
            # As OpenTelemetry's own exporters do: an installed HTTP instrumentation must not trace deliveries.
            with suppress_instrumentation(), suppress_http_instrumentation():
                return self._client.post(path, timeout=self._timeout(timeout), **kwargs)
        except httpx.TimeoutException as exc:
            return f"timed out ({type(exc).__name__})"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"

    @staticmethod
    def _retry(outcome: Delivery, events: list[dict[str, Any]], response: httpx.Response | str) -> Delivery:
        outcome.remaining = events
        if isinstance(response, str):
            outcome.error = response
        else:
            outcome.error = _reason(response)
            outcome.retry_after = parse_retry_after(response.headers.get("retry-after"))
            outcome.config_error = response.status_code in _CONFIG_STATUS
        return outcome

    @staticmethod
    def _unavailable(response: httpx.Response | str) -> bool:
        """No event is at fault: the server cannot be reached, is unavailable or refuses our key."""
        if isinstance(response, str):
            return True
        status = response.status_code
        return status in _UNAVAILABLE_STATUS or status in _CONFIG_STATUS

    def _left(self, deadline: float | None) -> float | None:
        return None if deadline is None else deadline - time.monotonic()

    def _send_single(self, events: list[dict[str, Any]], timeout: float | None) -> Delivery:
        """One request per event. A server error for one event (500, ...) is recorded in ``failed``
        and the next event is sent: one event the server cannot take never holds up the others."""
        outcome = Delivery()
        deadline = None if timeout is None else time.monotonic() + timeout
        for index, event in enumerate(events):
            left = self._left(deadline)
            if left is not None and left <= 0:
                outcome.remaining = events[index:]
                outcome.error = "deadline reached"
                return outcome
            params, headers, body = render_single(event)
            response = self._post(INGEST_PATH, left, params=params, headers=_encode_headers(headers), json=body)
            if self._unavailable(response):
                return self._retry(outcome, events[index:], response)
            assert isinstance(response, httpx.Response)
            if response.is_success:
                outcome.delivered += 1
                if enforcement.learns_from_answers():  # cached block-limit enforcement learns the new spend
                    enforcement.ingest_answered(_xproxy_result(response))
            elif response.status_code >= 500:
                outcome.failed.append(Rejection(event, response.status_code, _reason(response)))
            else:
                outcome.rejected.append(Rejection(event, response.status_code, _reason(response)))
        return outcome

    def _send_bulk(self, events: list[dict[str, Any]], timeout: float | None) -> Delivery:
        """One request for all events. When the server refuses the request as a whole (a server
        error, 413, or another 4xx), the events are split in halves and sent again, down to single
        events, so that the good ones get through and only the one at fault is left."""
        outcome = Delivery()
        deadline = None if timeout is None else time.monotonic() + timeout
        parts = [events]
        while parts:
            part = parts.pop(0)
            left = self._left(deadline)
            if left is not None and left <= 0:
                outcome.remaining = [e for p in (part, *parts) for e in p]
                outcome.error = "deadline reached"
                return outcome
            response = self._post(BULK_PATH, left, json=[render_bulk_item(e) for e in part])
            if self._unavailable(response):
                return self._retry(outcome, [e for p in (part, *parts) for e in p], response)
            assert isinstance(response, httpx.Response)
            if response.is_success:
                self._bulk_answer(outcome, part, response)
            elif len(part) > 1:
                half = len(part) // 2
                parts[0:0] = [part[:half], part[half:]]
            elif response.status_code >= 500:
                outcome.failed.append(Rejection(part[0], response.status_code, _reason(response)))
            else:
                outcome.rejected.append(Rejection(part[0], response.status_code, _reason(response)))
        return outcome

    @staticmethod
    def _bulk_answer(outcome: Delivery, events: list[dict[str, Any]], response: httpx.Response) -> None:
        """Count a bulk answer: every event is delivered except the items it lists in ``errors``."""
        try:
            body = response.json()
        except ValueError:
            body = {}
        failed: dict[int, Rejection] = {}
        for item in (body.get("errors") or []) if isinstance(body, Mapping) else []:
            index = item.get("item_index") if isinstance(item, Mapping) else None
            if not isinstance(index, int) or not 0 <= index < len(events):
                continue
            result = item.get("xproxy_result") or {}
            status = result.get("statusCode") if isinstance(result, Mapping) else None
            err = result.get("xproxy_error") if isinstance(result, Mapping) else None
            if isinstance(err, Mapping) and err.get("code"):
                reason = f"{err.get('code')}: {err.get('message')}"
            else:
                reason = str(result.get("message") if isinstance(result, Mapping) else result) or json.dumps(item)
            failed[index] = Rejection(events[index], status, reason)
        outcome.rejected.extend(failed.values())
        outcome.delivered += len(events) - len(failed)
