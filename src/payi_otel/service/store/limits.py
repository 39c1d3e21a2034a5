"""Limits: definitions, accumulators updated by ingest, resets with history, schedules and alert outbox.

Every change of an accumulator is one SQL ``UPDATE ... SET x = x + ?`` (atomic in SQLite and in
PostgreSQL alike), never a read-modify-write in Python, so totals stay exact however many events
arrive at once. A crossing of the threshold or of max is claimed by a conditional update of the
``alerted`` bits, so it raises exactly one alert per crossing (until the next reset), and the alert
row is written in the same transaction as the spend that caused it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from payi_otel.service import schedules
from payi_otel.service.store.connection import Connection, StoreBase
from payi_otel.service.store.records import StoreError, dumps, merge_properties

REQUEST_STATES = ("ok", "exceeded", "overrun", "blocked", "blocked_external", "failed", "total")
_COLUMNS = (
    "limit_id, limit_name, max, limit_type, threshold, properties, created_ms, updated_ms, cost_input, cost_output,"
    " cost_total, req_ok, req_exceeded, req_overrun, req_blocked, req_blocked_external, req_failed, req_total,"
    " reset_schedule, next_reset_ms"
)
_SELECT = f"SELECT {_COLUMNS} FROM limits WHERE application_id = ?"
_ZERO_TOTALS = (
    "cost_input = 0, cost_output = 0, cost_total = 0, req_ok = 0, req_exceeded = 0, req_overrun = 0, req_blocked = 0,"
    " req_blocked_external = 0, req_failed = 0, req_total = 0, alerted = 0"
)
_ADD_BATCH = """
UPDATE limits SET
    cost_input = cost_input + ?1, cost_output = cost_output + ?2, cost_total = cost_total + ?3,
    req_total = req_total + ?4, req_failed = req_failed + ?5
WHERE application_id = ?6 AND limit_id IN ({ids})
RETURNING limit_id, cost_total, max, threshold, alerted
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
RETURNING limit_id, cost_total, max, threshold, alerted
"""
_COUNT_BATCH = """
UPDATE limits SET req_ok = req_ok + ?1, req_exceeded = req_exceeded + ?2, req_overrun = req_overrun + ?3
WHERE application_id = ?4 AND limit_id = ?5
"""
ALERT_THRESHOLD, ALERT_MAX = 1, 2
# Claim an alert: only the first update that finds the bit clear (and the crossing real) returns a row.
_CLAIM_ALERT = """
UPDATE limits SET alerted = alerted | ?1
WHERE application_id = ?2 AND limit_id = ?3 AND (alerted & ?1) = 0
    AND (CASE ?1 WHEN 1 THEN cost_total >= max * threshold ELSE cost_total > max END)
RETURNING cost_total, max, threshold, limit_name
"""


@dataclass(frozen=True, slots=True)
class LimitRecord:
    limit_id: str
    limit_name: str
    max: float
    limit_type: str
    threshold: float
    properties: dict[str, str]
    created_ms: int
    updated_ms: int
    cost_input: float
    cost_output: float
    cost_total: float
    requests: dict[str, int]
    reset_schedule: str | None
    next_reset_ms: int | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> LimitRecord:
        head, counts, tail = row[:11], row[11:18], row[18:]
        lid, name, mx, kind, threshold, props, created, updated, c_in, c_out, c_total = head
        return cls(
            lid, name, mx, kind, threshold, orjson.loads(props) if props else {}, created, updated,
            c_in, c_out, c_total, dict(zip(REQUEST_STATES, counts, strict=True)), *tail,
        )

    @property
    def overrun(self) -> float:
        return max(0.0, self.cost_total - self.max)

    @property
    def state(self) -> str:
        return limit_state(self.cost_total, self.max, self.threshold)

    def totals(self) -> dict[str, Any]:
        """Pay-i's ``TotalCostData``."""
        return {
            "cost": {
                "input": {"base": self.cost_input},
                "output": {"base": self.cost_output},
                "total": {"base": self.cost_total, "overrun_base": self.overrun},
            },
            "requests": dict(self.requests),
        }


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    limit_id: str
    limit_name: str
    limit_type: str
    max: float
    reset_ms: int
    trigger: str
    totals: dict[str, Any]


def limit_state(total: float, max_: float, threshold: float) -> str:
    """``overrun`` past max, ``exceeded`` at or above max x threshold, else ``ok``."""
    if total > max_:
        return "overrun"
    if total >= max_ * threshold:
        return "exceeded"
    return "ok"


class LimitsStore(StoreBase):
    alert_listener: Callable[[], None] | None = None  # called when an alert was raised (wakes its deliverer)

    # --- definitions -------------------------------------------------------------------------
    def limit(self, application_id: int, limit_id: str) -> LimitRecord | None:
        row = self.read_one(_SELECT + " AND limit_id = ?", (application_id, limit_id))
        return None if row is None else LimitRecord.from_row(row)

    def create_limit(
        self,
        application_id: int,
        *,
        limit_id: str,
        limit_name: str,
        max_: float,
        limit_type: str,
        threshold: float,
        properties: dict[str, str | None] | None,
        reset_schedule: str | None,
        now_ms: int,
    ) -> LimitRecord:
        merged = merge_properties({}, properties)
        next_reset = schedules.next_reset(reset_schedule, now_ms, now_ms) if reset_schedule else None
        with self.transaction() as c:
            self._check_name_free(c, application_id, limit_name, None)
            try:
                c.execute(
                    "INSERT INTO limits (limit_id, application_id, limit_name, max, limit_type, threshold, properties,"
                    " created_ms, updated_ms, reset_schedule, schedule_anchor_ms, next_reset_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (limit_id, application_id, limit_name, max_, limit_type, threshold,
                     dumps(merged) if merged else None, now_ms, now_ms, reset_schedule,
                     now_ms if reset_schedule else None, next_reset),
                )
            except self.integrity_errors:
                raise StoreError(f"limit_id {limit_id!r} already exists", "duplicate_limit_id") from None
            return self._limit_in(c, application_id, limit_id)

    def _limit_in(self, c: Connection, application_id: int, limit_id: str) -> LimitRecord:
        row = c.execute(_SELECT + " AND limit_id = ?", (application_id, limit_id)).fetchone()
        if row is None:
            raise StoreError(f"no limit with limit_id {limit_id!r} in this application", "limit_not_found")
        return LimitRecord.from_row(row)

    @staticmethod
    def _check_name_free(c: Connection, application_id: int, name: str, limit_id: str | None) -> None:
        row = c.execute(
            "SELECT limit_id FROM limits WHERE application_id = ? AND limit_name = ?", (application_id, name)
        ).fetchone()
        if row is not None and row[0] != limit_id:
            raise StoreError(f"limit_name {name!r} is already used by limit {row[0]!r}", "limit_name_already_exist")

    def list_limits(
        self, application_id: int, *, limit_name: str | None, ascending: bool, after: tuple[int, str] | None, count: int
    ) -> list[LimitRecord]:
        """Up to ``count`` limits ordered by (creation time, id), starting after the key ``after``."""
        sql = [_SELECT]
        params: list[Any] = [application_id]
        if limit_name is not None:
            sql.append("AND limit_name = ?")
            params.append(limit_name)
        if after is not None:
            sql.append("AND (created_ms, limit_id) > (?, ?)" if ascending else "AND (created_ms, limit_id) < (?, ?)")
            params.extend(after)
        direction = "ASC" if ascending else "DESC"
        sql.append(f"ORDER BY created_ms {direction}, limit_id {direction} LIMIT ?")
        params.append(count)
        return [LimitRecord.from_row(r) for r in self.read_all(" ".join(sql), params)]

    def update_limit(
        self,
        application_id: int,
        limit_id: str,
        *,
        limit_name: str | None,
        max_: float | None,
        reset_schedule: str | None,
        clear_schedule: bool,
        now_ms: int,
    ) -> LimitRecord:
        """Change name, max and/or schedule; max never below the current spend. Re-arms passed alerts."""
        with self.transaction() as c:
            current = self._limit_in(c, application_id, limit_id)
            if limit_name is not None:
                self._check_name_free(c, application_id, limit_name, limit_id)
            if max_ is not None and max_ < current.cost_total:
                raise StoreError(
                    f"max {max_} is below the limit's current spend {current.cost_total}", "invalid_max_limit_update"
                )
            sets = ["updated_ms = ?"]
            params: list[Any] = [now_ms]
            if limit_name is not None:
                sets.append("limit_name = ?")
                params.append(limit_name)
            if max_ is not None:
                # An alert counts as raised while the spend is still past its line; lines moved above
                # the spend are crossed anew (and alert again) later.
                sets.append(
                    "max = ?, alerted = CAST(cost_total >= ? * threshold AS INTEGER)"
                    " | (CAST(cost_total > ? AS INTEGER) << 1)"
                )
                params.extend((max_, max_, max_))
            if reset_schedule is not None:
                sets.append("reset_schedule = ?, schedule_anchor_ms = ?, next_reset_ms = ?")
                params.extend((reset_schedule, now_ms, schedules.next_reset(reset_schedule, now_ms, now_ms)))
            elif clear_schedule:
                sets.append("reset_schedule = NULL, schedule_anchor_ms = NULL, next_reset_ms = NULL")
            c.execute(
                f"UPDATE limits SET {', '.join(sets)} WHERE application_id = ? AND limit_id = ?",
                (*params, application_id, limit_id),
            )
            return self._limit_in(c, application_id, limit_id)

    def delete_limit(self, application_id: int, limit_id: str) -> bool:
        with self.transaction() as c:
            deleted = c.execute(
                "DELETE FROM limits WHERE application_id = ? AND limit_id = ?", (application_id, limit_id)
            ).rowcount
            c.execute("DELETE FROM limit_history WHERE application_id = ? AND limit_id = ?", (application_id, limit_id))
        return deleted > 0

    def update_limit_properties(
        self, application_id: int, limit_id: str, properties: dict[str, str | None], now_ms: int
    ) -> LimitRecord:
        with self.transaction() as c:
            current = self._limit_in(c, application_id, limit_id)
            merged = merge_properties(current.properties, properties)
            c.execute(
                "UPDATE limits SET properties = ?, updated_ms = ? WHERE application_id = ? AND limit_id = ?",
                (dumps(merged) if merged else None, now_ms, application_id, limit_id),
            )
            return self._limit_in(c, application_id, limit_id)

    # --- resets --------------------------------------------------------------------------------
    def reset_limit(
        self, application_id: int, limit_id: str, *, reset_ms: int, trigger: str = "manual"
    ) -> HistoryRecord:
        """Zero the limit's totals, keeping them as a history snapshot (returned)."""
        with self.transaction() as c:
            current = self._limit_in(c, application_id, limit_id)
            record = HistoryRecord(
                current.limit_id, current.limit_name, current.limit_type, current.max, reset_ms, trigger,
                current.totals(),
            )
            c.execute(
                "INSERT INTO limit_history (application_id, limit_id, limit_name, limit_type, max, reset_ms, trigger,"
                " totals) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (application_id, limit_id, record.limit_name, record.limit_type, record.max, reset_ms, trigger,
                 dumps(record.totals)),
            )
            c.execute(
                f"UPDATE limits SET {_ZERO_TOTALS} WHERE application_id = ? AND limit_id = ?",
                (application_id, limit_id),
            )
        return record

    def limit_history(self, application_id: int, limit_id: str) -> list[HistoryRecord]:
        """The snapshots kept by resets of a limit, oldest first."""
        rows = self.read_all(
            "SELECT limit_id, limit_name, limit_type, max, reset_ms, trigger, totals FROM limit_history"
            " WHERE application_id = ? AND limit_id = ? ORDER BY reset_ms, id",
            (application_id, limit_id),
        )
        return [HistoryRecord(r[0], r[1], r[2], r[3], r[4], r[5], orjson.loads(r[6])) for r in rows]

    def apply_due_resets(
        self, now_ms: int, application_id: int | None = None, limit_ids: list[str] | None = None
    ) -> int:
        """Apply every scheduled reset due at ``now_ms``; returns how many limits were reset.

        A reset due while the service was stopped is applied at the next start, dated at its boundary;
        several boundaries passed while stopped make one reset (nothing was counted in between).
        """
        sql = "SELECT application_id, limit_id, next_reset_ms, reset_schedule, schedule_anchor_ms FROM limits"
        sql += " WHERE next_reset_ms <= ?"
        params: list[Any] = [now_ms]
        if application_id is not None and limit_ids:
            sql += f" AND application_id = ? AND limit_id IN ({','.join('?' * len(limit_ids))})"
            params += [application_id, *limit_ids]
        with self.transaction() as c:
            due = c.execute(sql, params).fetchall()
            for app_id, lid, boundary, schedule, anchor in due:
                self.reset_limit(app_id, lid, reset_ms=boundary, trigger="schedule")
                c.execute(
                    "UPDATE limits SET next_reset_ms = ? WHERE application_id = ? AND limit_id = ?",
                    (schedules.next_reset(schedule, now_ms, anchor), app_id, lid),
                )
        return len(due)

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
    ) -> list[dict[str, str]]:
        """Count requests ``(limit ids, (input, output, total) cost, failed, request id)`` in their limits, in
        order; returns each request's limit states. Two atomic updates per limit, whatever the number of
        requests (one for all the limits a lone request names): the sums first (returning the new total, so
        the total before is known under the row's lock), then the counts by state, each request's state read
        from the running total."""
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
                rows[row[0]] = (ks_key, sums, single, *row[1:])
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
            if not single:  # travels with the next statement (PostgreSQL): nothing waits for its answer
                self.execute_later(
                    _COUNT_BATCH, (counts["ok"], counts["exceeded"], counts["overrun"], application_id, lid)
                )
            for bit, kind, state in ((ALERT_THRESHOLD, "threshold", "exceeded"), (ALERT_MAX, "max", "overrun")):
                crossed_by = first_past.get(state) or (first_past.get("overrun") if state == "exceeded" else None)
                if crossed_by is not None and not alerted & bit:
                    self._claim_alert(application_id, lid, bit, kind, {**alert_context, "request_id": crossed_by},
                                      now_ms)
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

    def all_limits(self) -> list[tuple[str, LimitRecord]]:
        """(application name, limit) of every application, by application then name (reports, CLI)."""
        rows = self.read_all(
            f"SELECT a.name, {', '.join('l.' + c.strip() for c in _COLUMNS.split(','))} FROM limits l"
            " JOIN applications a ON a.id = l.application_id ORDER BY a.name, l.limit_name",
            (),
        )
        return [(r[0], LimitRecord.from_row(r[1:])) for r in rows]
