"""Block limits without a proxy: the plugin checks the block limits in effect before each provider call.

On with ``instrument(enforce_limits=True)`` (or ``"reserve"`` / ``"cached"``) or ``PAYI_ENFORCE_LIMITS``.
A call whose limit ids (from ``@track`` / ``track_context`` / ``instrument(...)`` / per-call headers)
include a block limit that cannot take it raises :class:`LimitBlockedError` before the provider is
called. Needs the local service with ``PAYI_OTEL_INGEST_BLOCK_LIMITS=true`` (Pay-i's ingest refuses
block limits).

* ``reserve`` (the default): one round trip to ``POST /api/v1/reservations`` reserves the call's
  worst-case cost against its block limits before the call; the call's ingest event carries the
  reservation id and settles it. Several processes share one budget and never overshoot it.
* ``cached``: no round trip. The spend and max of the limits in use are refreshed in the background
  every ``PAYI_ENFORCE_REFRESH_SECONDS``, and from every answer of this process's single ingests
  (each adds the event's cost to the limits it names; a limit the answer says is ``overrun`` or
  ``blocked`` counts as at max at once). A call is refused once its limit's known spend is at or over
  max. Overshoot is bounded by the calls that start before the spend that crosses max is known: those
  in flight (and, for spend of other processes, those started during one refresh interval and their
  ingest delivery delay). An answer that arrives after a refresh that already counted its cost counts
  it twice until the next refresh: a call that would have fit may then be refused.

When the service cannot answer (down, or a Pay-i API without reservations) the call goes ahead
(``PAYI_ENFORCE_FAIL=open``, the default) or raises :class:`LimitCheckError` (``closed``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from payi_otel import protocol as P
from payi_otel.settings import parse_bool

if TYPE_CHECKING:  # httpx is imported when enforcement is on: `import payi_otel` stays light
    import httpx

logger = logging.getLogger(__name__)

ENV_MODE = "PAYI_ENFORCE_LIMITS"
ENV_FAIL = "PAYI_ENFORCE_FAIL"
ENV_REFRESH = "PAYI_ENFORCE_REFRESH_SECONDS"
MODES = ("reserve", "cached")
MAX_CACHED_LIMITS = 256  # limits the cached mode keeps fresh (the first ones seen)
_TIMEOUT = 5.0
_PAST_MAX = frozenset({"overrun", "blocked"})  # states of an ingest answer's limit that is past its max


class LimitError(Exception):
    """A provider call was not made because of block-limit enforcement."""


class LimitBlockedError(LimitError):
    """A block limit cannot take the call: ``limit_id`` (``limit_name`` when known), its ``spend`` and
    ``max`` in USD, and the call's worst-case cost ``amount`` (``None`` in cached mode)."""

    def __init__(self, limit_id: str, spend: float | None, max_: float | None, amount: float | None) -> None:
        self.limit_id = limit_id
        self.spend = spend
        self.max = max_
        self.amount = amount
        worst = f"; the call's worst-case cost is ${amount:.6g}" if amount is not None else ""
        super().__init__(
            f"block limit {limit_id!r} refused the call before the provider was called: "
            f"spend ${_money(spend)} of max ${_money(max_)}{worst}"
        )


class LimitCheckError(LimitError):
    """The limits could not be checked and enforcement fails closed (``PAYI_ENFORCE_FAIL=closed``)."""


def _money(value: float | None) -> str:
    return "?" if value is None else f"{value:.6g}"


@dataclass(frozen=True, slots=True)
class Settings:
    mode: str  # reserve | cached
    fail_open: bool
    base_url: str
    api_key: str | None
    refresh_seconds: float


_SETTINGS: Settings | None = None
_CLIENT: httpx.Client | None = None  # made at the first check
_CACHE: _LimitCache | None = None
# per event loop; left to the garbage collector with their loop (closing needs the loop)
_ASYNC_CLIENTS: weakref.WeakKeyDictionary[Any, httpx.AsyncClient] = weakref.WeakKeyDictionary()
RESERVATIONS_PATH = "/api/v1/reservations"


def parse_mode(value: Any, name: str = ENV_MODE) -> str | None:
    """``True``/``"true"`` -> reserve, ``"reserve"``/``"cached"``, ``False``/``"false"``/``"off"`` -> None."""
    if value is None or value is False:
        return None
    if value is True:
        return "reserve"
    text = str(value).strip().lower()
    if text in MODES:
        return text
    if text in ("", "off"):
        return None
    try:
        return "reserve" if parse_bool(text, name) else None
    except ValueError:
        raise ValueError(f"{name}={value!r}: must be reserve, cached, true or false") from None


def configure(
    mode: Any, fail: str | None = None, base_url: str | None = None, api_key: str | None = None
) -> Settings | None:
    """Switch enforcement on (``mode``: see :func:`parse_mode`; ``None`` reads ``PAYI_ENFORCE_LIMITS``).

    A bad argument raises ``ValueError`` naming it; a bad environment value is logged and enforcement stays off."""
    global _SETTINGS
    reset()
    if mode is None:
        try:
            parsed = parse_mode(os.environ.get(ENV_MODE))
            fail = fail or os.environ.get(ENV_FAIL) or "open"
            refresh = float(os.environ.get(ENV_REFRESH) or 1.0)
            if not 0.05 <= refresh <= 3600:
                raise ValueError(f"{ENV_REFRESH}={refresh}: must be a number of seconds from 0.05 to 3600")
        except ValueError as exc:
            logger.error("payi-otel: %s; block-limit enforcement stays off", exc)
            return None
    else:
        parsed = parse_mode(mode, "enforce_limits")
        fail = fail or os.environ.get(ENV_FAIL) or "open"
        refresh = float(os.environ.get(ENV_REFRESH) or 1.0)
    if fail not in ("open", "closed"):
        raise ValueError(f"enforce_fail={fail!r}: must be open or closed")
    if parsed is None:
        return None
    _SETTINGS = Settings(
        parsed,
        fail == "open",
        (base_url or os.environ.get("PAYI_BASE_URL") or "https://api.pay-i.com").rstrip("/"),
        api_key or os.environ.get("PAYI_API_KEY") or None,
        refresh,
    )
    return _SETTINGS


def reset() -> None:
    global _SETTINGS, _CLIENT, _CACHE
    _SETTINGS = None
    if _CACHE is not None:
        _CACHE.stop()
        _CACHE = None
    if _CLIENT is not None:
        _CLIENT.close()
        _CLIENT = None
    _ASYNC_CLIENTS.clear()


def _async_client(settings: Settings) -> httpx.AsyncClient:
    """The async client of the running event loop (a client's connections belong to one loop)."""
    import asyncio

    import httpx

    loop = asyncio.get_running_loop()
    client = _ASYNC_CLIENTS.get(loop)
    if client is None:
        headers = {P.API_KEY: settings.api_key} if settings.api_key else {}
        client = httpx.AsyncClient(base_url=settings.base_url, headers=headers, timeout=_TIMEOUT, trust_env=False)
        _ASYNC_CLIENTS[loop] = client
    return client


def _client(settings: Settings) -> httpx.Client:
    global _CLIENT
    if _CLIENT is None:
        import httpx

        headers = {P.API_KEY: settings.api_key} if settings.api_key else {}
        _CLIENT = httpx.Client(base_url=settings.base_url, headers=headers, timeout=_TIMEOUT, trust_env=False)
    return _CLIENT


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """What the plugin knows of a call before it is made."""

    limit_ids: tuple[str, ...]
    category: str
    resource: str
    input_tokens: int  # an upper bound (the request's size in bytes)
    max_output_tokens: int | None
    price_as_category: str | None = None
    price_as_resource: str | None = None
    resource_scope: str | None = None


def enabled() -> bool:
    return _SETTINGS is not None


def before_call(call: PlannedCall) -> str | None:
    """Check (and in reserve mode reserve) the call's block limits; the reservation id to settle, if any.

    Raises :class:`LimitBlockedError` when a block limit cannot take the call, :class:`LimitCheckError`
    when enforcement fails closed."""
    settings = _SETTINGS
    if settings is None or not call.limit_ids:
        return None
    if settings.mode == "cached":
        _cache(settings).check(call.limit_ids)
        return None
    import httpx

    try:
        answer = _client(settings).post(RESERVATIONS_PATH, json=_reservation(call))
    except httpx.HTTPError as exc:
        answer = None
        _unavailable(settings, f"{type(exc).__name__}: {exc}")
    return _reserved(settings, call, answer)


async def abefore_call(call: PlannedCall) -> str | None:
    """:func:`before_call` for async callers: the reservation's round trip does not block the event loop."""
    settings = _SETTINGS
    if settings is None or not call.limit_ids or settings.mode == "cached":
        return before_call(call)
    import httpx

    try:
        answer = await _async_client(settings).post(RESERVATIONS_PATH, json=_reservation(call))
    except httpx.HTTPError as exc:
        answer = None
        _unavailable(settings, f"{type(exc).__name__}: {exc}")
    return _reserved(settings, call, answer)


def needs_round_trip() -> bool:
    """True when a check goes to the service before the call (reserve mode)."""
    settings = _SETTINGS
    return settings is not None and settings.mode == "reserve"


def _unavailable(settings: Settings, reason: str) -> None:
    if not settings.fail_open:
        raise LimitCheckError(f"block limits could not be checked ({reason}); {ENV_FAIL}=closed refuses the call")
    logger.warning("payi-otel: block limits could not be checked (%s); the call goes ahead (%s=open)", reason, ENV_FAIL)


def _reservation(call: PlannedCall) -> dict[str, Any]:
    """The body of ``POST /api/v1/reservations`` for the call."""
    return {
        "limit_ids": list(call.limit_ids),
        "category": call.category,
        "resource": call.resource,
        "input_tokens": min(call.input_tokens, P.MAX_COUNT),
        "max_output_tokens": None if call.max_output_tokens is None else min(call.max_output_tokens, P.MAX_COUNT),
        "price_as_category": call.price_as_category,
        "price_as_resource": call.price_as_resource,
        "resource_scope": call.resource_scope,
    }


def _reserved(settings: Settings, call: PlannedCall, answer: httpx.Response | None) -> str | None:
    """The reservation id of the service's answer (None: no answer, enforcement failing open); raises
    :class:`LimitBlockedError` for a refusal."""
    if answer is None:
        return None
    try:
        data = answer.json()
    except ValueError as exc:
        _unavailable(settings, f"{type(exc).__name__}: {exc}")
        return None
    if answer.status_code == 200 and isinstance(data, dict):
        reservation = data.get("reservation_id")
        return reservation if isinstance(reservation, str) else None
    error = data.get("xproxy_error") if isinstance(data, dict) else None
    if answer.status_code == 400 and isinstance(error, dict) and error.get("code") == "limit_reached":
        result = data.get("xproxy_result") or {}
        blocked = (result.get("blocked_limit_ids") or [call.limit_ids[0]])[0]
        state = (result.get("limits") or {}).get(blocked) or {}
        amount = _amount(error.get("message"))
        raise LimitBlockedError(str(blocked), state.get("spend"), state.get("max"), amount)
    message = error.get("message") if isinstance(error, dict) else None
    _unavailable(settings, f"HTTP {answer.status_code}: {message or answer.text[:200]}")
    return None


def _amount(message: Any) -> float | None:
    if not isinstance(message, str) or "$" not in message:
        return None
    try:
        return float(message.split("$", 1)[1].split()[0])
    except (ValueError, IndexError):
        return None


def learns_from_answers() -> bool:
    """True when ingest answers should be handed to :func:`ingest_answered` (cached mode is on)."""
    return _CACHE is not None


def ingest_answered(result: Any) -> None:
    """Learn from the ``xproxy_result`` of a single ingest's answer (cached mode; best effort)."""
    cache = _CACHE
    if cache is not None and isinstance(result, dict):
        cache.learn(result)


def known_limit(limit_id: str) -> tuple[str, float, float] | None:
    """What cached mode knows of a limit: its type, spend and max (None: not known yet)."""
    cache = _CACHE
    if cache is None:
        return None
    with cache.lock:
        return cache.known.get(limit_id)


def _cache(settings: Settings) -> _LimitCache:
    global _CACHE
    if _CACHE is None:
        _CACHE = _LimitCache(settings)
    return _CACHE


class _LimitCache:
    """Spend and max of the limits in use, refreshed by one background thread (cached mode)."""

    def __init__(
        self,
        settings: Settings,
        known: dict[str, tuple[str, float, float]] | None = None,
        wanted: dict[str, None] | None = None,
    ) -> None:
        self.settings = settings
        self.known: dict[str, tuple[str, float, float]] = known or {}  # limit id -> (type, spend, max)
        self.wanted: dict[str, None] = wanted or {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="payi-otel-limits", daemon=True)
        self.thread.start()

    def check(self, limit_ids: Iterable[str]) -> None:
        new = False
        for lid in limit_ids:
            with self.lock:
                if lid not in self.wanted and len(self.wanted) < MAX_CACHED_LIMITS:
                    self.wanted[lid] = None
                    new = True
                entry = self.known.get(lid)
            if entry is not None and entry[0] == "block" and entry[1] >= entry[2]:
                raise LimitBlockedError(lid, entry[1], entry[2], None)
        if new:
            self.wake.set()

    def learn(self, result: dict[str, Any]) -> None:
        limits = result.get("limits")
        if not isinstance(limits, dict) or not limits:
            return
        total = (result.get("cost") or {}).get("total") if isinstance(result.get("cost"), dict) else None
        cost = total.get("base") if isinstance(total, dict) else None
        added = float(cost) if isinstance(cost, (int, float)) and not result.get("duplicate_request") else 0.0
        with self.lock:
            for lid, entry in limits.items():
                known = self.known.get(lid)
                if known is None:
                    continue
                kind, spend, max_ = known
                spend += added
                if isinstance(entry, dict) and entry.get("state") in _PAST_MAX:
                    spend = max(spend, max_)
                self.known[lid] = (kind, spend, max_)

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()

    def _run(self) -> None:
        import httpx

        failing = False
        while not self.stopped.is_set():
            with self.lock:
                ids = list(self.wanted)
            for lid in ids:
                try:
                    answer = _client(self.settings).get(f"/api/v1/limits/{quote(lid, safe='')}")
                    limit = answer.json()["limit"] if answer.status_code == 200 else None
                    failing = False
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    if not failing:
                        logger.warning("payi-otel: refreshing limit %s failed: %s", lid, exc)
                    failing = True
                    continue
                if isinstance(limit, dict):
                    spend = float(limit["totals"]["cost"]["total"]["base"])
                    with self.lock:
                        self.known[lid] = (str(limit.get("limit_type")), spend, float(limit["max"]))
            self.wake.wait(self.settings.refresh_seconds)
            self.wake.clear()
            time.sleep(0)


def _after_fork_in_child() -> None:
    """A forked child (a pre-fork server's worker) has none of the parent's threads, and must not share its
    connections: it starts from the parent's knowledge with a refresh thread and clients of its own."""
    global _CLIENT, _CACHE
    _CLIENT = None  # the parent's connections: left alone (closing them here could end a TLS session of the parent's)
    _ASYNC_CLIENTS.clear()
    parent = _CACHE
    if parent is not None:  # copied without its lock, which a parent's thread may have held at the fork
        _CACHE = _LimitCache(parent.settings, dict(parent.known), dict(parent.wanted))


os.register_at_fork(after_in_child=_after_fork_in_child)
