"""Limits on ingest: the limit ids an event names are checked, then its cost is counted in each.

Checks run before anything of the event is written; counting runs once per batch (one event, or a
bulk body), two atomic updates per limit however many requests name it, and sets each request's
per-limit states (``ok``, ``exceeded``, ``overrun``, ``failed``).
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from payi_otel import protocol as P
from payi_otel.service.errors import bad_request
from payi_otel.service.store import REQUEST_COLUMNS, Application, CheckFirst, Store

_LISTED_IDS = 5  # limit ids an error message names (the rest are counted)
_LIMIT_STATES = REQUEST_COLUMNS.index("limit_states")

# (row index, limit ids, (input, output, total) cost, failed) of a batch's rows that name limits
LimitEntry = tuple[int, list[str], tuple[float, float, float], bool]
# (limit ids named, whether block limits are allowed) -> the time (ms) until which that check stands
PassedChecks = dict[tuple[tuple[str, ...], bool], float]


def _listed(ids: list[str]) -> str:
    shown = ", ".join(P.preview(i) for i in ids[:_LISTED_IDS])
    return shown + (f" and {len(ids) - _LISTED_IDS} more" if len(ids) > _LISTED_IDS else "")


def check_limit_ids(
    store: Store,
    app: Application,
    limit_ids: list[str],
    field_name: str,
    now_ms: int,
    known: dict[str, tuple[str, int | None]] | None = None,
    *,
    block_limits_allowed: bool = False,
    passed: PassedChecks | None = None,
) -> None:
    """Refuse limit ids that are not this application's limits, and block limits unless allowed
    (applying resets due first). ``known`` keeps what earlier events of the same batch found; ``passed`` (with
    ``known``) the id lists they named that passed, so that the same list is not checked again (the items of a
    bulk body mostly name the same limits) until the first of its resets falls due."""
    key = (tuple(limit_ids), block_limits_allowed)
    if passed is not None and now_ms < passed.get(key, -1):
        return
    unknown, blocking = store.check_limit_ids(app.id, limit_ids, now_ms, known)
    if unknown:
        raise bad_request(
            "invalid_limit_ids",
            f"{field_name}: limit ids {_listed(unknown)} do not exist or do not belong to this application",
        )
    if blocking and not block_limits_allowed:
        raise bad_request(
            "blocking_limit_not_allowed",
            f"{field_name}: {_listed(blocking)} are block limits; block limits cannot be used for ingest"
            " requests (only allow limits)",
        )
    if passed is not None and known is not None:
        dues = [known[lid][1] for lid in limit_ids if lid in known]  # a limit reset just now is read again
        if len(dues) == len(limit_ids):
            passed[key] = min((due for due in dues if due is not None), default=math.inf)


def account_limits(
    store: Store,
    app: Application,
    rows: list[tuple[Any, ...]],
    entries: list[LimitEntry],
    now_ms: int,
    unchecked: dict[str, bool] | None = None,
) -> None:
    """Count the batch's requests in the limits they name and set each request row's per-limit states.
    ``unchecked``: the limit ids named were not checked (see ``Store.account_limits_batch``)."""
    if not entries:
        if unchecked:  # named only by events that were not counted (duplicates): checked on their own
            raise CheckFirst
        return
    requests = [(ids, cost, failed, rows[i][0]) for i, ids, cost, failed in entries]
    states = store.account_limits_batch(app.id, requests, {"application": app.name}, now_ms, unchecked)
    for (i, *_), limit_states in zip(entries, states, strict=True):
        row = rows[i]
        encoded = orjson.dumps(limit_states).decode() if limit_states else None
        rows[i] = (*row[:_LIMIT_STATES], encoded, *row[_LIMIT_STATES + 1 :])
