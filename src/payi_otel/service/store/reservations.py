"""Reservations of worst-case cost against block limits, for calls in flight.

A call that names block limits first reserves its worst-case cost against each of them; the
reservation is settled (the real cost counted by the ingest of the call, the reservation dropped)
or released when the call ends. Admission is one conditional ``UPDATE`` per limit,

    reserved = reserved + amount  WHERE cost_total < max AND cost_total + reserved + amount <= max

which the database evaluates under the row's lock (SQLite: the one writer; PostgreSQL: the row lock,
re-checked on the newest row version), so concurrent calls can never together reserve more than a
limit has left, whichever process or service instance they come through. Nothing is read into
Python and written back. A call that never reports its end (a crashed caller) holds its reservation
until ``expires_ms``; expired reservations are released before any new admission.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from payi_otel.service.store.connection import StoreBase
from payi_otel.service.store.records import StoreError

_ADMIT = """
UPDATE limits SET reserved = reserved + ?1
WHERE application_id = ?2 AND limit_id = ?3 AND cost_total < max AND cost_total + reserved + ?1 <= max
RETURNING limit_id
"""
# Portable "reserved - amount, never below 0" (SQLite's MAX(a, b) is PostgreSQL's GREATEST).
_GIVE_BACK = """
UPDATE limits SET reserved = CASE WHEN reserved > ?1 THEN reserved - ?1 ELSE 0 END
WHERE application_id = ?2 AND limit_id = ?3
"""
_COUNT_BLOCKED = """
UPDATE limits SET req_blocked = req_blocked + ?1, req_blocked_external = req_blocked_external + ?2,
    req_total = req_total + 1
WHERE application_id = ?3 AND limit_id = ?4
"""


class _Refused(Exception):
    """Undoes the admissions already made for a call that one of its limits refuses."""


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome of :meth:`ReservationsStore.reserve`: ``blocked`` lists the limits that refused."""

    reservation_id: str
    amount: float
    held: list[str]  # the block limits the reservation holds
    blocked: list[str]  # the block limits that refused the call
    block_limits: list[str]  # every block limit the call named

    @property
    def admitted(self) -> bool:
        return not self.blocked


class ReservationsStore(StoreBase):
    def reserve(
        self,
        application_id: int,
        reservation_id: str,
        limit_ids: list[str],
        amount: float,
        *,
        now_ms: int,
        expires_ms: int,
    ) -> Admission:
        """Reserve ``amount`` (USD) against every block limit among ``limit_ids``, or against none.

        ``Admission.held`` lists the block limits reserved against (none: nothing to release). A
        limit refuses when its spend is at or over max, or when its spend plus what calls in flight
        reserved plus ``amount`` would pass max. A refused call is counted in the ``blocked``
        requests of the limits that refused and ``blocked_external`` of the others.
        """
        if amount < 0:
            raise StoreError(f"amount must be >= 0, got {amount}", "invalid_field_value")
        with self.transaction() as c:
            self._release_expired(now_ms)
            block_limit_ids = self._block_limits(c, application_id, limit_ids)
            blocked: list[str] = []
            try:
                with self.transaction():
                    for lid in block_limit_ids:
                        if c.execute(_ADMIT, (amount, application_id, lid)).fetchone() is None:
                            blocked.append(lid)
                    if blocked:
                        raise _Refused
                    c.executemany(
                        "INSERT INTO limit_reservations (application_id, reservation_id, limit_id, amount, expires_ms)"
                        " VALUES (?, ?, ?, ?, ?)",
                        [(application_id, reservation_id, lid, amount, expires_ms) for lid in block_limit_ids],
                    )
            except _Refused:
                refused = set(blocked)
                for lid in block_limit_ids:
                    own = lid in refused
                    c.execute(_COUNT_BLOCKED, (int(own), int(not own), application_id, lid))
        return Admission(reservation_id, amount, [] if blocked else block_limit_ids, blocked, block_limit_ids)

    @staticmethod
    def _block_limits(c: Any, application_id: int, limit_ids: list[str]) -> list[str]:
        if not limit_ids:
            return []
        marks = ",".join("?" * len(limit_ids))
        found = {
            r[0]
            for r in c.execute(
                "SELECT limit_id FROM limits WHERE application_id = ? AND limit_type = 'block'"
                f" AND limit_id IN ({marks})",
                (application_id, *limit_ids),
            )
        }
        return [lid for lid in limit_ids if lid in found]

    def release_reservation(self, application_id: int, reservation_id: str) -> list[str]:
        """Give back what a reservation holds (the call ended; its real cost, if any, is counted by
        its ingest in the same transaction). Returns the limit ids it held; [] when unknown or expired."""
        with self.transaction() as c:
            rows = c.execute(
                "DELETE FROM limit_reservations WHERE application_id = ? AND reservation_id = ?"
                " RETURNING limit_id, amount",
                (application_id, reservation_id),
            ).fetchall()
            for lid, amount in rows:
                c.execute(_GIVE_BACK, (amount, application_id, lid))
        return [r[0] for r in rows]

    def _release_expired(self, now_ms: int) -> None:
        c = self._conn
        rows = c.execute(
            "DELETE FROM limit_reservations WHERE expires_ms <= ? RETURNING application_id, limit_id, amount",
            (now_ms,),
        ).fetchall()
        for app_id, lid, amount in rows:
            c.execute(_GIVE_BACK, (amount, app_id, lid))

    def reserved_amount(self, application_id: int, limit_id: str) -> float | None:
        """What calls in flight hold of a limit (None: no such limit)."""
        row = self.read_one(
            "SELECT reserved FROM limits WHERE application_id = ? AND limit_id = ?", (application_id, limit_id)
        )
        return None if row is None else float(row[0])
