"""Limit spend: what ingest adds to the limits its events name, and the alert outbox of the crossings.

Every change of an accumulator is one SQL ``UPDATE ... SET x = x + ?`` (atomic in SQLite and in
PostgreSQL alike), never a read-modify-write in Python, so totals stay exact however many events
arrive at once. A crossing of the threshold or of max is claimed by a conditional update of the
``alerted`` bits, so it raises exactly one alert per crossing (until the next reset), and the alert
row is written in the same transaction as the spend that caused it.
"""

from __future__ import annotations

from typing import Any

import orjson

from payi_otel.service.store.limits import LimitDefinitionsStore, limit_state
from payi_otel.service.store.records import CheckFirst, dumps

_ADD_BATCH = """
UPDATE limits SET
    cost_input = cost_input + ?1, cost_output = cost_output + ?2, cost_total = cost_total + ?3,
    req_total = req_total + ?4, req_failed = req_failed + ?5
WHERE application_id = ?6 AND limit_id IN ({ids})
RETURNING limit_id, cost_total, max, threshold, alerted, limit_type, next_reset_ms
"""
# One request on its own: its state decided in the same statement (?4 = 1 when it failed).
_ADD_ONE = """
UPDATE limits SET
    cost_input = cost_input + ?1, cost_output = cost_output + ?2, cost_total = cost_total + ?3,
    req_total = req_total + 1, req_failed = req_failed + ?4,
    req_overrun = req_overrun + CAST(?4 = 0 AND cost_total + ?3 > max AS INTEGER),
    req_exceeded = req_exceeded
        + CAST(?4 = 0 AND cost_total + ?3 <= max AND cost_total + ?3 >= max * threshold AS INTEGER),
    req_ok = req_ok + CAST(?4 = 0 AND cost_total + ?3 < max * threshold AS INTEGER)
WHERE application_id = ?5 AND limit_id IN ({ids})
RETURNING limit_id, cost_total, max, threshold, alerted, limit_type, next_reset_ms
"""
_COUNT_BATCH = """
UPDATE limits SET req_ok = req_ok + ?1, req_exceeded = req_exceeded + ?2, req_overrun = req_overrun + ?3
WHERE application_id = ?4 AND limit_id IN ({ids})
"""
ALERT_THRESHOLD, ALERT_MAX = 1, 2
# Claim an alert: only the first update that finds the bit clear (and the crossing real) returns a row.
_CLAIM_ALERT = """
UPDATE limits SET alerted = alerted | ?1
WHERE application_id = ?2 AND limit_id = ?3 AND (alerted & ?1) = 0
    AND (CASE ?1 WHEN 1 THEN cost_total >= max * threshold ELSE cost_total > max END)
RETURNING cost_total, max, threshold, limit_name
"""


class LimitsStore(LimitDefinitionsStore):
    """Limit definitions, plus the spend ingest adds to them and the alerts it raises."""

    # --- ingest --------------------------------------------------------------------------------
    def check_limit_ids(
        self,
        application_id: int,
        limit_ids: list[str],
        now_ms: int,
        seen: dict[str, tuple[str, int | None]] | None = None,
    ) -> tuple[list[str], list[str]]:
        """(ids that are not limits of this application, ids of block limits); applies resets due first.

        ``seen`` (limit id -> (type, next reset)) keeps what earlier events of the same batch found."""
        if not limit_ids:
            return [], []
        seen = {} if seen is None else seen
        missing = [i for i in limit_ids if i not in seen]
        if missing:
            marks = ",".join("?" * len(missing))
            for lid, kind, due in self._conn.execute(
                "SELECT limit_id, limit_type, next_reset_ms FROM limits"
                f" WHERE application_id = ? AND limit_id IN ({marks})",
                (application_id, *missing),
            ):
                seen[lid] = (kind, due)
        found = [(lid, *seen[lid]) for lid in limit_ids if lid in seen]
        due_now = [lid for lid, _, due in found if due is not None and due <= now_ms]
        if due_now:
            self.apply_due_resets(now_ms, application_id, due_now)
            for lid in due_now:
                del seen[lid]  # its next reset moved on: read again by the next event
        known = {lid for lid, _, _ in found}
        return [i for i in limit_ids if i not in known], [lid for lid, kind, _ in found if kind == "block"]

    def account_limits_batch(
        self,
        application_id: int,
        entries: list[tuple[list[str], tuple[float, float, float], bool, str]],
        alert_context: dict[str, Any],
        now_ms: int,
        unchecked: dict[str, bool] | None = None,
    ) -> list[dict[str, str]]:
        """Count requests ``(limit ids, (input, output, total) cost, failed, request id)`` in their limits, in
        order; returns each request's limit states. Two atomic updates per limit, whatever the number of
        requests (one for all the limits a lone request names): the sums first (returning the new total, so
        the total before is known under the row's lock), then the counts by state, each request's state read
        from the running total.

        ``unchecked`` (limit id -> whether it may be a block limit): the limit ids the batch's events named were
        not checked (:meth:`check_limit_ids` costs a round trip on PostgreSQL); the updates check them as they
        count. Unless each is a limit of the application, counted here, allowed to block if it blocks, and has
        no reset due, :class:`CheckFirst` is raised (the updates are the caller's to undo)."""
        by_limit: dict[str, list[int]] = {}
        for k, (ids, _, _, _) in enumerate(entries):
            for lid in ids:
                by_limit.setdefault(lid, []).append(k)
        states: list[dict[str, str]] = [{} for _ in entries]
        # Limits counting the same requests get the same sums: one statement updates them all (a single
        # event naming several limits costs one statement, not one per limit).
        same_requests: dict[tuple[int, ...], list[str]] = {}
        for lid, ks in by_limit.items():
            same_requests.setdefault(tuple(ks), []).append(lid)
        rows: dict[str, tuple[Any, ...]] = {}
        for ks_key, lids in same_requests.items():
            sums = [0.0, 0.0, 0.0]
            failed = 0
            for k in ks_key:
                if entries[k][2]:
                    failed += 1
                else:
                    for j in range(3):
                        sums[j] += entries[k][1][j]
            single = len(ks_key) == 1  # one statement does it all (the common case of single ingest)
            first_id = 6 if single else 7  # the numbered parameter after application_id
            marks = ", ".join(f"?{first_id + i}" for i in range(len(lids)))
            head = (*sums, failed, application_id) if single else (*sums, len(ks_key), failed, application_id)
            for row in self._conn.execute((_ADD_ONE if single else _ADD_BATCH).format(ids=marks), (*head, *lids)):
                lid, kind, due = row[0], row[5], row[6]
                rows[lid] = (ks_key, sums, single, *row[1:5])
                if unchecked is not None and (
                    (kind == "block" and not unchecked.get(lid, False)) or (due is not None and due <= now_ms)
                ):
                    raise CheckFirst
        if unchecked is not None and not rows.keys() >= unchecked.keys():  # unknown, or named only by duplicates
            raise CheckFirst
        same_counts: dict[tuple[int, int, int], list[str]] = {}  # (ok, exceeded, overrun) -> limits given them
        for lid in by_limit:
            found = rows.get(lid)
            if found is None:
                continue  # deleted since checked: nothing to count
            ks, sums, single, new_total, max_, threshold, alerted = found
            running = new_total - sums[2]
            counts = {"ok": 0, "exceeded": 0, "overrun": 0}
            first_past: dict[str, str] = {}  # state -> the first request in it (for the alert)
            for k in ks:
                _, cost, was_failed, request_id = entries[k]
                if was_failed:
                    states[k][lid] = "failed"
                    continue
                running += cost[2]
                state = limit_state(running, max_, threshold)
                states[k][lid] = state
                counts[state] += 1
                first_past.setdefault(state, request_id)
            if not single:
                same_counts.setdefault((counts["ok"], counts["exceeded"], counts["overrun"]), []).append(lid)
            for bit, kind, state in ((ALERT_THRESHOLD, "threshold", "exceeded"), (ALERT_MAX, "max", "overrun")):
                crossed_by = first_past.get(state) or (first_past.get("overrun") if state == "exceeded" else None)
                if crossed_by is not None and not alerted & bit:
                    self._claim_alert(
                        application_id, lid, bit, kind, {**alert_context, "request_id": crossed_by}, now_ms
                    )
        # limits given the same counts (every request "ok" in each, most often) share one statement, which
        # travels with the next one (PostgreSQL): nothing waits for its answer
        for counts_by_state, lids in same_counts.items():
            marks = ", ".join(f"?{5 + i}" for i in range(len(lids)))
            self.execute_later(_COUNT_BATCH.format(ids=marks), (*counts_by_state, application_id, *lids))
        return states

    def _claim_alert(
        self, application_id: int, limit_id: str, bit: int, kind: str, context: dict[str, Any], now_ms: int
    ) -> None:
        row = self._conn.execute(_CLAIM_ALERT, (bit, application_id, limit_id)).fetchone()
        if row is None:
            return
        total, max_, threshold, name = row
        payload = {
            "event": f"limit.{kind}_crossed",
            "limit_id": limit_id,
            "limit_name": name,
            "max": max_,
            "threshold": threshold,
            "crossed_at": max_ * threshold if kind == "threshold" else max_,
            "spend": total,
            "state": limit_state(total, max_, threshold),
            "timestamp_ms": now_ms,
            **context,
        }
        self._conn.execute(
            "INSERT INTO limit_alerts (application_id, limit_id, kind, payload, created_ms, next_attempt_ms)"
            " VALUES (?, ?, ?, ?, ?, 0)",
            (application_id, limit_id, kind, dumps(payload), now_ms),
        )
        if self.alert_listener is not None:
            self.alert_listener()

    # --- alert outbox --------------------------------------------------------------------------
    def due_alerts(self, now_ms: int, count: int = 50) -> list[tuple[int, int, dict[str, Any]]]:
        """Committed, undelivered alerts whose next attempt is due: (id, attempts, payload)."""
        rows = self.read_all(
            "SELECT id, attempts, payload FROM limit_alerts WHERE done_ms IS NULL AND next_attempt_ms <= ?"
            " ORDER BY id LIMIT ?",
            (now_ms, count),
        )
        return [(i, n, orjson.loads(p)) for i, n, p in rows]

    def alert_attempted(self, alert_id: int, *, done: bool, outcome: str, next_attempt_ms: int, now_ms: int) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE limit_alerts SET attempts = attempts + 1, outcome = ?, next_attempt_ms = ?, done_ms = ?"
                " WHERE id = ?",
                (outcome, next_attempt_ms, now_ms if done else None, alert_id),
            )

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert, oldest first (for the CLI and tests)."""
        rows = self.read_all(
            "SELECT id, limit_id, kind, payload, attempts, done_ms, outcome FROM limit_alerts ORDER BY id", ()
        )
        return [
            {"id": i, "limit_id": lid, "kind": k, "payload": orjson.loads(p), "attempts": n, "done_ms": d, "outcome": o}
            for i, lid, k, p, n, d, o in rows
        ]
