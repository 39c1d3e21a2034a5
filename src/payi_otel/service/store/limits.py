"""Limits: definitions, resets with history, and schedules (the spend ingest adds, and the alerts it
raises, are in :mod:`.limit_spend`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from payi_otel.service import schedules
from payi_otel.service.store.connection import StoreBase
from payi_otel.service.store.records import StoreError, dumps, merge_properties
from payi_otel.service.store.statements import Connection

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
            lid,
            name,
            mx,
            kind,
            threshold,
            orjson.loads(props) if props else {},
            created,
            updated,
            c_in,
            c_out,
            c_total,
            dict(zip(REQUEST_STATES, counts, strict=True)),
            *tail,
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


class LimitDefinitionsStore(StoreBase):
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
                    (
                        limit_id,
                        application_id,
                        limit_name,
                        max_,
                        limit_type,
                        threshold,
                        dumps(merged) if merged else None,
                        now_ms,
                        now_ms,
                        reset_schedule,
                        now_ms if reset_schedule else None,
                        next_reset,
                    ),
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
                current.limit_id,
                current.limit_name,
                current.limit_type,
                current.max,
                reset_ms,
                trigger,
                current.totals(),
            )
            c.execute(
                "INSERT INTO limit_history (application_id, limit_id, limit_name, limit_type, max, reset_ms, trigger,"
                " totals) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    application_id,
                    limit_id,
                    record.limit_name,
                    record.limit_type,
                    record.max,
                    reset_ms,
                    trigger,
                    dumps(record.totals),
                ),
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

    def all_limits(self) -> list[tuple[str, LimitRecord]]:
        """(application name, limit) of every application, by application then name (reports, CLI)."""
        rows = self.read_all(
            f"SELECT a.name, {', '.join('l.' + c.strip() for c in _COLUMNS.split(','))} FROM limits l"
            " JOIN applications a ON a.id = l.application_id ORDER BY a.name, l.limit_name",
            (),
        )
        return [(r[0], LimitRecord.from_row(r[1:])) for r in rows]
